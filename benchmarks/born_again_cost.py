"""Born-Again generations in one fit against one fit per generation: wall time and peak memory.

``configs/digits_ban.yaml`` (SmallCNN [32, 64], the embedded digits) run two ways, each generation
``--epochs`` epochs, through the command line in fresh processes as a user would:

* **one fit**: the ``Generations`` callback trains generation 0 and ``--generations`` born-again
  generations in one ``lightning-kd fit``;
* **one fit per generation**: ``lightning-kd fit`` of generation 0 from labels, then one fit per
  born-again generation, each given the previous generation's checkpoint as ``teacher_ckpt``.

The two ways alternate for ``--rounds`` rounds. Reported: the median total wall time of each way, and
the peak resident memory of its largest process (``ru_maxrss``). Writes
``benchmarks/results/born_again_cost.json``.

    python benchmarks/born_again_cost.py --generations 3 --epochs 5 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from seed_records import REPO, write_record

RUNNER = ("import json, resource, sys\n"
          "from lightning_kd.cli import main\n"
          "main(sys.argv[1:])\n"
          "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
         "false"]


def _run(folder: Path, config: Path, *extra: str) -> tuple[float, int]:
    """Wall seconds and peak memory (KB) of one ``lightning-kd fit`` in a fresh process."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", RUNNER, "fit", "--config", str(config), *QUIET, *extra],
                            cwd=folder, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"},
                            check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    peak = next(int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("MAXRSS_KB"))
    return seconds, peak


def _configs(folder: Path, generations: int, epochs: int) -> tuple[Path, list[Path]]:
    """The one-fit config, and one config per generation for the separate fits."""
    settings = yaml.safe_load((REPO / "configs" / "digits_ban.yaml").read_text())
    settings["trainer"]["callbacks"][1]["init_args"].update(generations=generations, epochs=epochs)
    one_fit = folder / "one_fit.yaml"
    one_fit.write_text(yaml.safe_dump(settings))
    separate = []
    for generation in range(generations + 1):
        single = yaml.safe_load((REPO / "configs" / "digits_ban.yaml").read_text())
        checkpoint = single["trainer"]["callbacks"][0]
        checkpoint["init_args"]["filename"] = f"separate_{generation}"
        single["trainer"]["callbacks"] = [checkpoint]  # no Generations callback: one generation per fit
        single["trainer"]["max_epochs"] = epochs
        if generation > 0:
            # the previous generation's fit is the last finished run of this folder
            previous = f"checkpoints/digits_ban/latest/separate_{generation - 1}.ckpt"
            single["model"]["init_args"]["teacher_ckpt"] = previous
        path = folder / f"generation_{generation}.yaml"
        path.write_text(yaml.safe_dump(single))
        separate.append(path)
    return one_fit, separate


def one_fit(folder: Path, config: Path) -> tuple[float, int]:
    return _run(folder, config)


def fit_per_generation(folder: Path, configs: list[Path]) -> tuple[float, int]:
    total, peak = 0.0, 0
    for config in configs:
        seconds, memory = _run(folder, config)
        total, peak = total + seconds, max(peak, memory)
    return total, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    started = time.time()
    results: dict[str, dict[str, list[float]]] = {"one fit": {"seconds": [], "peak_mb": []},
                                                  "one fit per generation": {"seconds": [], "peak_mb": []}}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        together, separate = _configs(folder, args.generations, args.epochs)
        for round_number in range(args.rounds):
            for way, run in (("one fit", lambda: one_fit(folder, together)),
                             ("one fit per generation", lambda: fit_per_generation(folder, separate))):
                seconds, peak = run()
                results[way]["seconds"].append(seconds)
                results[way]["peak_mb"].append(peak / 1024)
                print(f"round {round_number}: {way}: {seconds:.1f} s, peak {peak / 1024:.0f} MB", flush=True)
    summary = {way: {"median_seconds": statistics.median(r["seconds"]), "peak_mb": max(r["peak_mb"]),
                     "seconds_per_round": r["seconds"], "peak_mb_per_round": r["peak_mb"]}
               for way, r in results.items()}
    print(f"\ngeneration 0 + {args.generations} born-again generations of {args.epochs} epochs, digits, "
          f"median of {args.rounds} alternating rounds")
    for way, row in summary.items():
        print(f"  {way:<25} {row['median_seconds']:6.1f} s   peak {row['peak_mb']:.0f} MB")
    write_record(REPO / "benchmarks" / "results" / "born_again_cost.json",
                 command=f"python benchmarks/born_again_cost.py --generations {args.generations} --epochs "
                         f"{args.epochs} --rounds {args.rounds}",
                 metric="total wall seconds (median of alternating rounds) and the largest process's peak resident "
                        "memory", started=started, summary=json.loads(json.dumps(summary)))


if __name__ == "__main__":
    main()
