"""Born-Again across architectures on MNIST-5k, over seeds: students that inherit their teacher's stem and
classifier, frozen (the paper's Table 5 protocol), against the same sequence without inheriting.

Runs ``configs/mnist5k_ban_inherit.yaml`` through the CLI as a user would (each run in its own folder): a small
DenseNet-BC trained from labels, then two generations of a pre-activation ResNet that follows its dense blocks, with
``inherit_layers: [stem, classifier]`` and with ``inherit_layers: null``; the same budget for every row (15 epochs a
generation, 1,000 training images). Reads each run's table of generations (the last epoch of each generation,
tested on the 3,000-image test split). Writes ``benchmarks/results/born_again_inherit_seeds.json``.

    python benchmarks/born_again_inherit_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

import json
from pathlib import Path

from seed_records import fit, run_seeds

VARIANTS = {"inheriting stem and classifier": [], "without inheriting": ["--model.init_args.inherit_layers", "null"]}


def run_seed(seed: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for variant, extra in VARIANTS.items():
        fit("mnist5k_ban_inherit", seed, *extra)
        table = json.loads(Path("checkpoints/mnist5k_ban_inherit/latest/generations.json").read_text())
        for row in table["generations"]:
            name = "generation 0 (DenseNet, labels)" if row["generation"] == 0 else \
                f"generation {row['generation']}, {variant}"
            results[name] = {"test/acc": row["test/acc"]}
        for row in table["ensembles"]:
            results[f"ensemble 1..{row['ensemble/generations']}, {variant}"] = {"test/acc": row["ensemble/test/acc"]}
        print(f"seed {seed} | {variant}: {results}", flush=True)
    return results


if __name__ == "__main__":
    run_seeds("born_again_inherit_seeds", run_seed)
