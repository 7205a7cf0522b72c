"""What the seed benchmarks share: mean and spread over seeds, and the JSON record of a run."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one seed) and the values themselves."""
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def write_record(output: Path, command: str, metric: str, started: float, **results: Any) -> None:
    """Write a benchmark's results with the command, the date and the machine that produced them."""
    record = {
        "command": command,
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}, "
                   f"torch {torch.__version__}",
        "metric": metric,
        "seconds": round(time.time() - started, 1),
        **results,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {output}")
