"""The ``lightning-kd`` command line: the entry point, the LightningCLI, and what they add to a config."""

from lightning_kd.cli.app import DESCRIPTION, KDArgumentParser, KDLightningCLI, console, listing, main
from lightning_kd.cli.arguments import append_later_callbacks, resolve_config_names

__all__ = [
    "DESCRIPTION",
    "KDArgumentParser",
    "KDLightningCLI",
    "append_later_callbacks",
    "console",
    "listing",
    "main",
    "resolve_config_names",
]
