"""The README's main job (Born-Again Networks on digits) over several seeds, for each Born-Again loss.

Runs ``configs/digits_ban.yaml`` through the CLI exactly as a user would (each run in its own folder,
``--model.init_args.loss`` set per loss), reads the table of generations the ``Generations`` callback
writes, prints mean and spread per generation and per ensemble, and writes
``benchmarks/results/born_again_seeds.json``.

    python benchmarks/born_again_seeds.py --seeds 0 1 2 --losses ban ban+l cwtm dkpp
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
CONFIG = REPO / "configs" / "digits_ban.yaml"
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]


def run(seed: int, loss: str) -> dict[str, Any]:
    """One run of the main job; the test accuracy of each generation (its last epoch) and of each ensemble."""
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        KDLightningCLI(args=["fit", "--config", str(CONFIG), "--seed_everything", str(seed),
                             "--model.init_args.loss", loss, *QUIET])
        table = json.loads(Path("checkpoints/digits_ban/latest/generations.json").read_text())
        os.chdir(REPO)
    return {
        "generations": {row["generation"]: row["test/acc"] for row in table["generations"]},
        "ensembles": {row["ensemble/generations"]: row["ensemble/test/acc"] for row in table["ensembles"]},
    }


def summarise(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    seeds = sorted(runs)
    generations = sorted(runs[seeds[0]]["generations"])
    sizes = sorted(runs[seeds[0]]["ensembles"])
    teacher = {s: runs[s]["generations"][0] for s in seeds}
    return {
        "generation": {g: spread([runs[s]["generations"][g] for s in seeds]) for g in generations},
        "ensemble": {k: spread([runs[s]["ensembles"][k] for s in seeds]) for k in sizes},
        "ban1_matches_or_beats_teacher": sum(runs[s]["generations"][1] >= teacher[s] for s in seeds),
        "largest_ensemble_beats_every_member": sum(
            runs[s]["ensembles"][sizes[-1]] > max(runs[s]["generations"][g] for g in range(1, sizes[-1] + 1))
            for s in seeds
        ),
        "seeds": len(seeds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--losses", nargs="+", default=["ban", "ban+l", "cwtm", "dkpp"])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "born_again_seeds.json")
    args = parser.parse_args()
    started = time.time()
    per_loss = {loss: {seed: run(seed, loss) for seed in args.seeds} for loss in args.losses}
    summary = {loss: summarise(runs) for loss, runs in per_loss.items()}
    for loss, result in summary.items():
        print(f"\n{loss}: test accuracy (%), mean ± std over seeds {args.seeds}")
        for g, stats in result["generation"].items():
            print(f"  generation {g}        {100 * stats['mean']:6.2f} ± {100 * stats['std']:.2f}")
        for k, stats in result["ensemble"].items():
            print(f"  ensemble 1..{k}       {100 * stats['mean']:6.2f} ± {100 * stats['std']:.2f}")
        print(f"  BAN-1 >= teacher in {result['ban1_matches_or_beats_teacher']}/{result['seeds']} seeds; "
              f"ensemble 1..{max(result['ensemble'])} > every member in "
              f"{result['largest_ensemble_beats_every_member']}/{result['seeds']}")
    write_record(
        args.output,
        command="python benchmarks/born_again_seeds.py --seeds " + " ".join(map(str, args.seeds))
                + " --losses " + " ".join(args.losses),
        metric="test top-1 accuracy of each generation's final weights (digits test split, 359 images)",
        started=started,
        config="configs/digits_ban.yaml",
        per_seed=per_loss,
        summary=summary,
    )


if __name__ == "__main__":
    main()
