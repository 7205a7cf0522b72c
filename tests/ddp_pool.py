"""Two-process DDP scenarios that share one pair of processes, for the whole test session.

Each ``ddp_spawn`` fit starts two fresh interpreters that import torch and Lightning (about 8 s on 2 cores, most
of a small test's time). Here the tests that only need "two processes, gloo, Lightning's DDP" mark their scenario
(``@pytest.mark.ddp(scenario=...)``) and ask the ``ddp_run`` fixture for its folder: the first request runs every
marked scenario of the session, in order, in one spawn of two workers that stay up. Each worker sets the
variables a launcher (torchrun, SLURM) would, so Lightning's ``strategy="ddp"`` joins the process group the
workers already hold instead of launching processes of its own, once per fit.

A scenario is a module-level function ``scenario(folder: Path) -> None`` run on both ranks (``trainer.global_rank``
tells them apart), writing what the test asserts into ``folder``. A scenario that raises on either rank stops the
workers (the other rank's next collective fails within the group's timeout); its test, and the tests of the
scenarios after it, fail with the traceback. Tests of refusals that raise by design keep ``ddp_spawn``, as does
one test of Lightning's own spawn launcher (``tests/test_ddp.py``).
"""

from __future__ import annotations

import functools
import os
import socket
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed
import torch.multiprocessing

Scenario = Callable[[Path], None]
WORLD_SIZE = 2


def scenario_name(scenario: Scenario) -> str:
    """``module.function``, with a ``functools.partial``'s keywords: ``module.function[key=value,...]``."""
    if isinstance(scenario, functools.partial):
        keywords = ",".join(f"{key}={value}" for key, value in sorted(scenario.keywords.items()))
        return f"{scenario_name(scenario.func)}[{keywords}]"
    return f"{scenario.__module__}.{scenario.__qualname__}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, scenarios: list[Scenario], root: Path, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD_SIZE), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0", WANDB_MODE="offline")
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=120))
    for scenario in scenarios:
        folder = root / scenario_name(scenario)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            scenario(folder)
        except BaseException:
            (folder / f"error-rank{rank}.txt").write_text(traceback.format_exc())
            os._exit(1)  # the other rank's next collective fails: the pool stops here
        (folder / f"done-rank{rank}").touch()
    torch.distributed.destroy_process_group()


def run_scenarios(scenarios: list[Scenario], root: Path) -> None:
    """Run ``scenarios`` in order on two worker processes, each in ``root/<scenario name>``."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        torch.multiprocessing.start_processes(_worker, args=(scenarios, root, _free_port()), nprocs=WORLD_SIZE,
                                              start_method="spawn")
    except torch.multiprocessing.ProcessRaisedException:
        pass  # each scenario's own record says what failed
    except torch.multiprocessing.ProcessExitedException:
        pass


def scenario_folder(scenario: Scenario, root: Path) -> Path:
    """The folder ``scenario`` wrote into; raises with its traceback unless both ranks finished it."""
    folder = root / scenario_name(scenario)
    errors = sorted(folder.glob("error-rank*.txt")) if folder.is_dir() else []
    if errors:
        raise AssertionError(f"DDP scenario {scenario_name(scenario)} failed:\n" +
                             "\n".join(error.read_text() for error in errors))
    if not all((folder / f"done-rank{rank}").exists() for rank in range(WORLD_SIZE)):
        raise AssertionError(f"DDP scenario {scenario_name(scenario)} did not run to its end: an earlier scenario "
                             "of the session's pool failed (see that test)")
    return folder
