"""The framework's cost per training step: Lightning tasks against bare PyTorch loops, on a network that computes
almost nothing (one linear layer on CIFAR-size images), so what is left is Python and bookkeeping.

On a GPU a small network's step is made of this: its kernels take less time than the host takes to launch
them, so every millisecond measured here is a millisecond of the GPU step (see ``cache_throughput.py``'s GPU
rows). Milliseconds per step (median over interleaved rounds) of:

  Lightning's floor (a module whose step is its loss alone, optimised automatically and by hand), student alone
  (``Classifier``; also without its training log and without its non-finite checks, to take the step apart; with
  Lightning's own callback dispatch instead of the one lightning-kd installs, which skips the hooks that do nothing;
  and with eight callbacks, as many as the command line's fit has, under both dispatches),
  online KD (``VanillaKD``), cached KD (``TeacherOutputCache``), and the bare loops: student alone, KD with the
  teacher's forward, and KD from teacher logits computed before the epoch (what a cache serves).

The bare loops come two ways. Fed from a list of batches made before the epoch, their steps run back to back;
fed by the data module's loader, each batch is read and cropped and flipped between the timed steps, as the
Lightning rows' batches are (their timer runs from ``on_train_batch_start`` to ``on_train_batch_end``, after the
transfer and the augmentation). Reading and augmenting a batch evicts the step's working set from the CPU's
caches, so the fed loop's step is slower (by about 0.2 ms here) and is the like-for-like yardstick.

Each Lightning row is also given against the bare loop that does its work, round by round: ``over_bare_ms``
against the back-to-back loop, ``over_fed_bare_ms`` against the fed one.

Writes ``benchmarks/results/step_overhead.json``.

    python benchmarks/step_overhead.py --batches 200 --rounds 7 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from cache_throughput import bare_loop_seconds, skip_cifar_checksums, timing_trainer, write_cifar100
from pytorch_lightning import Callback, LightningModule, seed_everything
from pytorch_lightning.callbacks import ModelCheckpoint
from seed_records import REPO, StepTimer, interleave, write_record
from torch import Tensor, nn

from lightning_kd import Classifier, VanillaKD, compat
from lightning_kd.callbacks import TeacherOutputCache
from lightning_kd.data import CIFAR100DataModule


def linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 100))


class Minimal(LightningModule):
    """Lightning's own floor: a module whose step is its loss alone (no checks, no log), optimised as the tasks are."""

    def __init__(self) -> None:
        super().__init__()
        self.net = linear()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return F.cross_entropy(self.net(batch["input"]), batch["target"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


class ManualMinimal(Minimal):
    """Lightning's floor with manual optimization (the step zeroes, backpropagates and steps itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        optimizer = self.optimizers()
        loss = F.cross_entropy(self.net(batch["input"]), batch["target"])
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss


class StudentWithoutLog(Classifier):
    """The student alone without its training log (``train/loss`` and ``train/acc``): what the log costs."""

    def log_training(self, batch: Any, losses: dict[str, Tensor], logits: Tensor) -> None:
        pass


class StudentWithoutCheck(Classifier):
    """The student alone without its non-finite checks: what they cost."""

    def check_training_step(self, losses: dict[str, Tensor], weights: bool = True) -> None:
        pass


class Runs:
    def __init__(self, root: Path, batches: int) -> None:
        seed_everything(0)
        self.data = CIFAR100DataModule(root=root, batch_size=64, num_workers=0, val_fraction=0.01,
                                       augmentation_views=2, augmentation_seed=0)
        self.data.setup("fit")
        self.teacher, self.cache = linear(), TeacherOutputCache()
        self.batches = [(b["input"], b["target"]) for b in self.data.train_dataloader()]

    def lightning(self, name: str) -> float:
        timer = StepTimer()
        callbacks: list[Any] = [timer]
        if name.startswith("student with callbacks"):  # as many as the command line's fit has
            callbacks += [ModelCheckpoint(dirpath=tempfile.mkdtemp(), save_last=True)] + [Callback() for _ in range(6)]
        # Lightning's floor is Lightning as it ships: its own dispatch
        lightnings = name.endswith("Lightning's dispatch") or name in {"minimal", "manual"}
        if name == "minimal":
            task: Any = Minimal()
        elif name == "manual":
            task = ManualMinimal()
        elif name.startswith("student"):
            kind = {"student without log": StudentWithoutLog, "student without check": StudentWithoutCheck}
            task = kind.get(name, Classifier)(linear(), lr_scheduler="none")
        else:
            task = VanillaKD(linear(), self.teacher, lr_scheduler="none")
        if callbacks[1:]:  # with checkpoints (into a folder of their own)
            trainer = timing_trainer("cpu", callbacks, enable_checkpointing=True, default_root_dir=tempfile.mkdtemp())
        else:
            trainer = timing_trainer("cpu", [*callbacks, self.cache] if name == "cached" else callbacks)
        if lightnings:
            compat.restore_lightning_callback_dispatch()
        try:
            trainer.fit(task, datamodule=self.data)
        finally:
            compat.skip_callback_no_ops()
        return timer.epoch_seconds[0] / trainer.num_training_batches * 1000

    def bare(self, kd: bool, cached: bool = False) -> float:
        seconds = bare_loop_seconds(linear(), self.teacher if kd else None, self.batches, "cpu", cached=cached)
        return seconds / len(self.batches) * 1000

    def bare_fed(self, cached: bool) -> float:
        """A bare loop fed as the Lightning rows are: each batch read from the data module's loader and cropped and
        flipped (view 0) between the timed steps; with ``cached``, the teacher's logits of every sample computed
        before the epoch (untimed) and gathered by sample index inside the step, as the cache serves them."""
        student = linear().train()
        optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        table = None
        if cached:
            table = torch.empty(len(self.data.train_set), 100)
            with torch.no_grad():
                for batch in self.data.train_dataloader():
                    table[batch["index"]] = self.teacher(self.data.augment(batch["input"], batch["index"], 0))
        seconds, steps = 0.0, 0
        for batch in self.data.train_dataloader():
            x, y, index = self.data.augment(batch["input"], batch["index"], 0), batch["target"], batch["index"]
            started = time.perf_counter()
            logits = student(x)
            if table is None:
                loss = F.cross_entropy(logits, y)
            else:
                soft = F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(table[index] / 4, 1), reduction="batchmean")
                loss = 0.1 * F.cross_entropy(logits, y) + 0.9 * 16 * soft
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds += time.perf_counter() - started
            steps += 1
        return seconds / steps * 1000


VARIANTS = {
    "Lightning: minimal module": lambda r: r.lightning("minimal"),
    "Lightning: minimal module, manual optimization": lambda r: r.lightning("manual"),
    "Lightning: student alone": lambda r: r.lightning("student"),
    "Lightning: student alone, no training log": lambda r: r.lightning("student without log"),
    "Lightning: student alone, no finite checks": lambda r: r.lightning("student without check"),
    "Lightning: student alone, Lightning's dispatch": lambda r: r.lightning("student, Lightning's dispatch"),
    "Lightning: student alone, eight callbacks": lambda r: r.lightning("student with callbacks"),
    "Lightning: student alone, eight callbacks, Lightning's dispatch":
        lambda r: r.lightning("student with callbacks, Lightning's dispatch"),
    "Lightning: online KD": lambda r: r.lightning("online"),
    "Lightning: cached KD": lambda r: r.lightning("cached"),
    "bare loop: student alone": lambda r: r.bare(kd=False),
    "bare loop: online KD": lambda r: r.bare(kd=True),
    "bare loop: cached KD": lambda r: r.bare(kd=True, cached=True),
    "bare loop fed by the loader: student alone": lambda r: r.bare_fed(cached=False),
    "bare loop fed by the loader: cached KD": lambda r: r.bare_fed(cached=True),
}


PAIRS = {"Lightning: minimal module": "bare loop: student alone",
         "Lightning: minimal module, manual optimization": "bare loop: student alone",
         "Lightning: student alone": "bare loop: student alone",
         "Lightning: student alone, no training log": "bare loop: student alone",
         "Lightning: student alone, no finite checks": "bare loop: student alone",
         "Lightning: student alone, Lightning's dispatch": "bare loop: student alone",
         "Lightning: student alone, eight callbacks": "bare loop: student alone",
         "Lightning: student alone, eight callbacks, Lightning's dispatch": "bare loop: student alone",
         "Lightning: online KD": "bare loop: online KD", "Lightning: cached KD": "bare loop: cached KD"}
"""Each Lightning row and the bare loop doing the same work, batches made before the epoch (run back to back)."""
FED_PAIRS = {"Lightning: minimal module": "bare loop fed by the loader: student alone",
             "Lightning: student alone": "bare loop fed by the loader: student alone",
             "Lightning: cached KD": "bare loop fed by the loader: cached KD"}
"""The same against the bare loop fed as the Lightning rows are (loader and augmentation between the steps)."""


def over(times: dict[str, list[float]], pairs: dict[str, str]) -> dict[str, float]:
    """Each Lightning row minus its bare loop, round by round (both ran in that round), median over the rounds."""
    return {name: statistics.median(a - b for a, b in zip(times[name], times[bare], strict=True))
            for name, bare in pairs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1, help="runs of --rounds rounds each, one after another")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skip_cifar_checksums()
    started = time.time()
    runs = []
    for run in range(args.runs):
        print(f"run {run + 1} of {args.runs}", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            write_cifar100(Path(folder), 64 * args.batches)
            times = interleave(VARIANTS, Runs(Path(folder), args.batches), args.rounds)
        runs.append({"rows": {name: {"median_ms": statistics.median(values), "ms": values}
                              for name, values in times.items()},
                     "over_bare_ms": over(times, PAIRS), "over_fed_bare_ms": over(times, FED_PAIRS)})
    # over the runs: the median of their medians
    rows = {name: statistics.median(run["rows"][name]["median_ms"] for run in runs) for name in VARIANTS}
    over_bare = {name: statistics.median(run["over_bare_ms"][name] for run in runs) for name in PAIRS}
    over_fed = {name: statistics.median(run["over_fed_bare_ms"][name] for run in runs) for name in FED_PAIRS}
    print(f"\nmilliseconds per training step (one linear layer, batch 64, CPU, {args.threads} thread(s)), "
          f"median of {args.runs} run(s) of {args.rounds} interleaved rounds")
    for name, median in rows.items():
        extra = f"   {over_bare[name]:+.2f} over its bare loop" if name in over_bare else ""
        extra += f", {over_fed[name]:+.2f} over it fed by the loader" if name in over_fed else ""
        print(f"  {name:<48} {median:6.2f}{extra}")
    write_record(REPO / "benchmarks" / "results" / "step_overhead.json",
                 command=f"python benchmarks/step_overhead.py --batches {args.batches} --rounds {args.rounds} "
                         f"--runs {args.runs} --threads {args.threads}",
                 metric="milliseconds per training step; per run, each row's median over its interleaved rounds, "
                        "over_bare_ms: each Lightning row minus the bare loop doing the same work in the same round, "
                        "median over the rounds (batches made before the epoch and run back to back), "
                        "over_fed_bare_ms: the same against the bare loop fed by the data module's loader (batches "
                        "read and augmented between the timed steps, as the Lightning rows' are); median_ms, "
                        "over_bare_ms and over_fed_bare_ms at the top: the medians over the runs",
                 started=started, median_ms=rows, over_bare_ms=over_bare, over_fed_bare_ms=over_fed, runs=runs)


if __name__ == "__main__":
    main()
