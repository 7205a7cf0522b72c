"""Born-Again Networks (BAN+L) on a word-level LSTM language model, the Jane Austen corpus, over several seeds.

Runs ``configs/janeausten_lstm_ban_l.yaml`` through the CLI as a user would (each seed in its own folder, the
corpus from ``--corpus``), with the network and epoch budget given here (2 CPU cores cannot afford the config's
2 x 256 LSTM for 6 epochs per generation), reads the generations table, and writes the validation and test
perplexity of each generation and of each ensemble of generations 1..k, mean and spread over seeds, to
``benchmarks/results/lm_born_again_seeds.json``. Every generation gets the same budget.

    lightning-kd data janeausten --root data/janeausten --source r-cran-janeaustenr_1.0.0-1_all.deb
    python benchmarks/lm_born_again_seeds.py --seeds 0 1 2 --hidden 128 --epochs 2 --corpus data/janeausten
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from seed_records import spread, write_record

from lightning_kd.cli import KDLightningCLI

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "janeausten_lstm_ban_l.yaml"
QUIET = ["--trainer.logger", "false", "--trainer.enable_model_summary", "false"]


def run(seed: int, corpus: Path, hidden: int, epochs: int, generations: int) -> dict[str, Any]:
    """One run; each generation's and each ensemble's validation and test perplexity."""
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        KDLightningCLI(args=[
            "fit", "--config", str(CONFIG), "--seed_everything", str(seed), *QUIET,
            "--data.init_args.root", str(corpus), "--model.init_args.student.init_args.hidden_size", str(hidden),
            "--trainer.callbacks.generations", str(generations), "--trainer.callbacks.epochs", str(epochs)])
        table = json.loads(Path("checkpoints/janeausten_ban_l/generations.json").read_text())
        os.chdir(REPO)
    return {
        "generations": {row["generation"]: {"val": row["val/ppl"], "test": row["test/ppl"]}
                        for row in table["generations"]},
        "ensembles": {row["ensemble/generations"]: {"val": row["ensemble/val/ppl"], "test": row["ensemble/test/ppl"]}
                      for row in table["ensembles"]},
    }


def summarise(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    seeds = sorted(runs)
    first, splits = runs[seeds[0]], ("val", "test")
    return {
        "generation": {g: {split: spread([runs[s]["generations"][g][split] for s in seeds]) for split in splits}
                       for g in sorted(first["generations"])},
        "ensemble": {k: {split: spread([runs[s]["ensembles"][k][split] for s in seeds]) for split in splits}
                     for k in sorted(first["ensembles"])},
        "ban1_beats_teacher_on_test": sum(runs[s]["generations"][1]["test"] < runs[s]["generations"][0]["test"]
                                          for s in seeds),
        "seeds": len(seeds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--corpus", type=Path, default=REPO / "data" / "janeausten")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="per generation")
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "lm_born_again_seeds.json")
    args = parser.parse_args()
    started = time.time()
    corpus = args.corpus.resolve()
    runs = {}
    for seed in args.seeds:
        runs[seed] = run(seed, corpus, args.hidden, args.epochs, args.generations)
        print(f"seed {seed}: {json.dumps(runs[seed])}", flush=True)
    summary = summarise(runs)
    print(f"\nperplexity, mean ± std over seeds {args.seeds} (val / test)")
    for g, stats in summary["generation"].items():
        print(f"  generation {g}    {stats['val']['mean']:7.2f} ± {stats['val']['std']:.2f}   "
              f"{stats['test']['mean']:7.2f} ± {stats['test']['std']:.2f}")
    for k, stats in summary["ensemble"].items():
        print(f"  ensemble 1..{k}   {stats['val']['mean']:7.2f} ± {stats['val']['std']:.2f}   "
              f"{stats['test']['mean']:7.2f} ± {stats['test']['std']:.2f}")
    write_record(
        args.output,
        command=f"python benchmarks/lm_born_again_seeds.py --seeds {' '.join(map(str, args.seeds))} --hidden "
                f"{args.hidden} --epochs {args.epochs} --generations {args.generations} --corpus {args.corpus}",
        metric="validation and test perplexity of each generation's final weights and of the ensembles 1..k "
               "(Jane Austen corpus, recipe janeausten-1)",
        started=started, config="configs/janeausten_lstm_ban_l.yaml", per_seed=runs, summary=summary)


if __name__ == "__main__":
    main()
