"""How runs are told apart: each method's variant, from its arguments (the CLI names W&B runs with it).

A task's :meth:`~lightning_kd.tasks.base.BaseTask.run_variant` builds its own part (``"ban+l"``,
``"T4-alpha0.9"``) and joins the base's (the label smoothing) after it with :func:`join_variants`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_kd.losses.label_smoothing import label_smoothing_from


def join_variants(*parts: str | None) -> str | None:
    """Join the non-empty parts of a run's variant with ``-``; ``None`` when all are empty.

    Example:
        >>> join_variants("T4-alpha0.9", "ls0.1"), join_variants(None, "")
        ('T4-alpha0.9-ls0.1', None)
    """
    return "-".join(part for part in parts if part) or None


def valued_variant(arguments: Mapping[str, Any], defaults: Mapping[str, float], labels: Mapping[str, str]) -> str:
    """The values of a method's main arguments (its defaults where not given), each after its short label.

    Example:
        >>> valued_variant({"beta": 2.0}, {"alpha": 1.0, "beta": 8.0}, {"alpha": "alpha", "beta": "beta"})
        'alpha1-beta2'
    """
    return "-".join(f"{label}{arguments.get(name, defaults[name]):g}" for name, label in labels.items())


def smoothing_variant(arguments: Mapping[str, Any]) -> str | None:
    """The label smoothing's part of a run's variant (``"ls0.1"``), ``None`` without smoothing.

    Example:
        >>> smoothing_variant({"label_smoothing": 0.1}), smoothing_variant({})
        ('ls0.1', None)
    """
    return label_smoothing_from(arguments).tag or None
