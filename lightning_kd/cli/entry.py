"""The ``lightning-kd`` command's entry point: what needs no training library is answered without importing one.

Importing Lightning takes about 6 s on 2 CPU cores (its import chain brings torchmetrics, torchvision and
scipy), so ``--version`` and ``list configs`` answer at once, ``list networks`` imports torch only, and every
other command is handed to the LightningCLI (:mod:`lightning_kd.cli.app`).
"""

from __future__ import annotations

import sys

from lightning_kd import __version__
from lightning_kd.cli.listing import listing


def quick_answer(argv: list[str]) -> str | None:
    """What ``lightning-kd <argv>`` prints when it needs no trainer (``--version``, ``list ...``), else ``None``.

    Example:
        >>> quick_answer(["--version"]) == f"lightning-kd {__version__}"
        True
        >>> quick_answer(["fit", "--config", "digits_ban"]) is None
        True
    """
    if argv == ["--version"]:
        return f"lightning-kd {__version__}"
    if argv[:1] == ["list"] and len(argv) <= 2:
        return listing(argv[1] if len(argv) == 2 else "all")
    return None


def console() -> None:
    """The ``lightning-kd`` command (see :func:`lightning_kd.cli.app.console` for everything but the quick answers)."""
    answer = quick_answer(sys.argv[1:])
    if answer is not None:
        print(answer)
        return
    from lightning_kd.cli.app import console as run

    run()
