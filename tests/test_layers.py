"""The package's architecture: layers without cycles (import-linter's contracts in pyproject.toml), and
every module importable on its own."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import lightning_kd
from tests.conftest import REPO

# Run in a fresh interpreter that has loaded the third-party libraries (the slow part) but no module of
# lightning_kd; each module is then imported in a forked child of its own, so one that works only after
# another module of the package was imported (a hidden cycle or order dependency) fails here.
IMPORT_EACH_ALONE = r"""
import importlib, os, sys, traceback
import numpy, ot, torch, torchvision, torchmetrics, jsonargparse, rich, yaml  # noqa
import pytorch_lightning.cli  # noqa
assert not any(name.startswith("lightning_kd") for name in sys.modules)

def start(name):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            os._exit(1)
        os._exit(0)
    os.close(write)
    return name, pid, read

def finish(name, pid, read):
    with os.fdopen(read, "rb") as pipe:
        output = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return f"{name}:\n{output}" if status else None

failures, running = [], []
for name in sys.argv[1:]:  # two children at a time: one per core
    running.append(start(name))
    if len(running) == 2:
        failures.append(finish(*running.pop(0)))
failures += [finish(*child) for child in running]
failures = [failure for failure in failures if failure]
print("\n".join(failures) or f"{len(sys.argv) - 1} modules imported alone")
sys.exit(1 if failures else 0)
"""


def package_modules() -> list[str]:
    root = Path(lightning_kd.__file__).parent
    return ["lightning_kd", *sorted(info.name for info in pkgutil.walk_packages([str(root)], "lightning_kd."))]


def test_every_module_imports_alone() -> None:
    modules = package_modules()
    assert "lightning_kd.tasks.base" in modules and "lightning_kd.cli.app" in modules
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH_ALONE, *modules], capture_output=True, text=True,
                            timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_layers_have_no_cycles_and_no_upward_imports() -> None:
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                             "lint_imports_command()"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "2 kept, 0 broken" in result.stdout
