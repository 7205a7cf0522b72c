"""The ``lightning-kd`` command line: the entry point, the LightningCLI, and what they add to a config.

Names are loaded on first use, so that the entry point (:mod:`lightning_kd.cli.entry`) answers ``--version`` and
``list`` without importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "DESCRIPTION": "lightning_kd.cli.app",
    "KDArgumentParser": "lightning_kd.cli.app",
    "KDLightningCLI": "lightning_kd.cli.app",
    "main": "lightning_kd.cli.app",
    "append_later_callbacks": "lightning_kd.cli.arguments",
    "resolve_config_names": "lightning_kd.cli.arguments",
    "console": "lightning_kd.cli.entry",
    "listing": "lightning_kd.cli.listing",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'lightning_kd.cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
