"""Docstrings and reST markup as plain text, for the command line's help and listings (a leaf module).

Example:
    >>> plain_text("see :func:`lightning_kd.losses.ban_loss` and ``T = 1``")
    'see ban_loss and T = 1'
"""

from __future__ import annotations

import inspect
import re


def summary_line(obj: object) -> str:
    """The first line of an object's docstring, as plain text (no reST markup).

    Example:
        >>> class Task:
        ...     "One step of the :class:`~lightning_kd.callbacks.Generations` run, ``T = 1``."
        >>> summary_line(Task)
        'One step of the Generations run, T = 1.'
    """
    lines = (inspect.getdoc(obj) or "").splitlines()
    return plain_text(lines[0]) if lines else ""


def plain_text(text: str) -> str:
    """reST markup as plain text: ``:class:`~a.b.Name``` -> ``Name``, double back-quotes dropped."""
    return re.sub(r":\w+:`~?(?:[\w.]*\.)?(\w+)`", r"\1", text).replace("``", "")
