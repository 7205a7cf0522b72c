"""The results pages' figures, drawn from the records in ``benchmarks/results/`` each time the docs are built.

A figure is never a stored image that can drift from its table: both read the same JSON record. A page shows one
with ``.. image:: /_generated/plots/<name>.png``; every name in :data:`FIGURES` is drawn, and a record that lacks
what its figure reads fails the build.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a build machine
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from sphinx.application import Sphinx

RECORDS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def record(name: str) -> dict[str, Any]:
    return json.loads((RECORDS / name).read_text())


def by_generation(series: dict[str, dict[str, Any]], scale: float = 1.0) -> tuple[list[int], list[float], list[float]]:
    """Generations in order, with the mean and standard deviation over seeds of each."""
    keys = sorted(series, key=int)
    return [int(k) for k in keys], [scale * series[k]["mean"] for k in keys], [scale * series[k]["std"] for k in keys]


def born_again_generations() -> Figure:
    data = record("born_again_seeds.json")
    losses = [name for name in data["summary"] if isinstance(data["summary"][name], dict)]
    fig, axes = plt.subplots(1, len(losses), figsize=(3.2 * len(losses), 3.6), sharey=True, layout="constrained")
    for ax, loss in zip(axes, losses, strict=True):
        ax.errorbar(*by_generation(data["summary"][loss]["generation"], 100), fmt="o-", capsize=3,
                    label="generation alone")
        ax.errorbar(*by_generation(data["summary"][loss]["ensemble"], 100), fmt="s--", capsize=3,
                    label="ensemble of generations 1..g")
        ax.set_title(loss)
        ax.set_xlabel("generation (0 = teacher)")
        ax.set_xticks(range(4))
    axes[0].set_ylabel("digits test accuracy (%)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize="small")
    fig.suptitle(f"Born-Again on digits, mean ± std over {data['summary'][losses[0]]['seeds']} seeds")
    return fig


def language_model_generations() -> Figure:
    data = record("lm_born_again_seeds.json")
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    generations = {k: v["test"] for k, v in data["summary"]["generation"].items()}
    ensembles = {k: v["test"] for k, v in data["summary"]["ensemble"].items()}
    ax.errorbar(*by_generation(generations), fmt="o-", capsize=3, label="generation alone")
    ax.errorbar(*by_generation(ensembles), fmt="s--", capsize=3, label="ensemble of generations 1..g")
    ax.set_xlabel("generation (0 = teacher)")
    ax.set_ylabel("Austen test perplexity (lower is better)")
    ax.set_xticks(sorted(int(k) for k in generations))
    ax.legend(fontsize="small")
    ax.set_title(f"BAN+L LSTM language models, mean ± std over {data['summary']['seeds']} seeds", fontsize="medium")
    fig.tight_layout()
    return fig


def throughput_ratios() -> Figure:
    panels = [("cache_throughput_cpu.json", "2 CPU cores"), ("cache_throughput_gpu.json", "one H100, batch 64")]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.6), layout="constrained")
    for ax, (name, title) in zip(axes, panels, strict=True):
        rows = record(name)["rows"]
        labels = sorted(rows, reverse=True)  # (a), (b), (c), (c2), ... from the top
        ax.barh(labels, [rows[label]["ratio_to_a"] for label in labels], color="tab:blue")
        ax.axvline(1.0, color="black", linewidth=0.8)
        for y, label in enumerate(labels):
            ax.text(rows[label]["ratio_to_a"], y, f" {rows[label]['ratio_to_a']:.2f}", va="center", fontsize="small")
        ax.set_title(f"{title} ({record(name)['date']})", fontsize="medium")
        ax.set_xlabel("epoch time / the student alone's (a)")
        ax.tick_params(axis="y", labelsize="small")
        ax.set_xlim(0, 1.15 * max(row["ratio_to_a"] for row in rows.values()))
    return fig


FIGURES: dict[str, Callable[[], Figure]] = {
    "born_again_generations": born_again_generations,
    "language_model_generations": language_model_generations,
    "throughput_ratios": throughput_ratios,
}


def draw(app: Sphinx) -> None:
    target = Path(app.srcdir) / "_generated" / "plots"
    target.mkdir(parents=True, exist_ok=True)
    for name, figure in FIGURES.items():
        fig = figure()
        fig.savefig(target / f"{name}.png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", draw)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
