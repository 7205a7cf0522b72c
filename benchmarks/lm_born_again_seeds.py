"""Born-Again Networks (BAN+L) on a word-level LSTM language model, the Jane Austen corpus, over several seeds.

Runs ``configs/janeausten_lstm_ban_l.yaml`` through the CLI as a user would (each seed in its own folder, the
corpus from ``--corpus``), with the network and epoch budget given here (2 CPU cores cannot afford the config's
2 x 256 LSTM for 6 epochs per generation), reads the generations table, and writes the validation and test
perplexity of each generation and of each ensemble of generations 1..k, mean and spread over seeds, to
``benchmarks/results/lm_born_again_seeds.json``. Every generation gets the same budget.

    lightning-kd data janeausten --root data/janeausten --source r-cran-janeaustenr_1.0.0-1_all.deb
    python benchmarks/lm_born_again_seeds.py --seeds 0 1 2 --hidden 128 --epochs 2 --corpus data/janeausten

On a GPU, the seeds run side by side (``--jobs 3``; a small LSTM leaves most of the device idle):

    python benchmarks/lm_born_again_seeds.py --jobs 3 --hidden 650 --dropout 0.5 --epochs 10 --generations 2 \
        --accelerator gpu --corpus data/janeausten
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from seed_records import spread, write_record

from lightning_kd.cli import KDLightningCLI

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "janeausten_lstm_ban_l.yaml"
QUIET = ["--trainer.logger", "false", "--trainer.enable_model_summary", "false"]


def run(seed: int, corpus: Path, hidden: int, epochs: int, generations: int, extra: list[str]) -> dict[str, Any]:
    """One run; each generation's and each ensemble's validation and test perplexity."""
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        KDLightningCLI(args=[
            "fit", "--config", str(CONFIG), "--seed_everything", str(seed), *QUIET,
            "--data.init_args.root", str(corpus), "--model.init_args.student.init_args.hidden_size", str(hidden),
            "--trainer.callbacks.generations", str(generations), "--trainer.callbacks.epochs", str(epochs), *extra])
        table = json.loads(Path("checkpoints/janeausten_lstm_ban_l/latest/generations.json").read_text())
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
    parser.add_argument("--dropout", type=float, default=None, help="the config's (0.3) unless given")
    parser.add_argument("--lr", type=float, default=None, help="the config's (20) unless given")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run side by side, each in its own process")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "lm_born_again_seeds.json")
    args, overrides = parser.parse_known_args()  # the rest goes to the CLI, e.g. --trainer.limit_train_batches 5
    started = time.time()
    corpus = args.corpus.resolve()
    extra = ["--trainer.accelerator", args.accelerator, *overrides]
    if args.dropout is not None:
        extra += ["--model.init_args.student.init_args.dropout", str(args.dropout)]
    if args.lr is not None:
        extra += ["--model.init_args.optimizer.init_args.lr", str(args.lr)]
    # spawned workers: a forked process cannot start CUDA
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {seed: pool.submit(run, seed, corpus, args.hidden, args.epochs, args.generations, extra)
                   for seed in args.seeds}
        runs = {seed: future.result() for seed, future in futures.items()}
    for seed, result in runs.items():
        print(f"seed {seed}: {json.dumps(result)}", flush=True)
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
        command="python " + " ".join(["benchmarks/lm_born_again_seeds.py", *sys.argv[1:]]),
        metric="validation and test perplexity of each generation's final weights and of the ensembles 1..k "
               "(Jane Austen corpus, recipe janeausten-1)",
        started=started, config="configs/janeausten_lstm_ban_l.yaml", per_seed=runs, summary=summary)


if __name__ == "__main__":
    main()
