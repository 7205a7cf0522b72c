"""The framework's cost per training step: Lightning tasks against bare PyTorch loops, on a network that computes
almost nothing (one linear layer on CIFAR-size images), so what is left is Python and bookkeeping.

On a GPU a small network's step is made of this: its kernels take less time than the host takes to launch
them, so every millisecond measured here is a millisecond of the GPU step (see ``cache_throughput.py``'s GPU
rows). Milliseconds per step (median over interleaved rounds) of:

  student alone (``Classifier``), online KD (``VanillaKD``), cached KD (``TeacherOutputCache``),
  and the bare loops: student alone, and KD with the teacher's forward.

Writes ``benchmarks/results/step_overhead.json``.

    python benchmarks/step_overhead.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from cache_throughput import bare_loop_seconds, skip_cifar_checksums, timing_trainer, write_cifar100
from pytorch_lightning import seed_everything
from seed_records import REPO, StepTimer, interleave, write_record
from torch import nn

from lightning_kd import Classifier, VanillaKD
from lightning_kd.callbacks import TeacherOutputCache
from lightning_kd.data import CIFAR100DataModule


def linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 100))


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
        task: Any = Classifier(linear(), lr_scheduler="none") if name == "student" else VanillaKD(
            linear(), self.teacher, lr_scheduler="none")
        trainer = timing_trainer("cpu", [timer, self.cache] if name == "cached" else [timer])
        trainer.fit(task, datamodule=self.data)
        return timer.epoch_seconds[0] / trainer.num_training_batches * 1000

    def bare(self, kd: bool, cached: bool = False) -> float:
        seconds = bare_loop_seconds(linear(), self.teacher if kd else None, self.batches, "cpu", cached=cached)
        return seconds / len(self.batches) * 1000

VARIANTS = {
    "Lightning: student alone": lambda r: r.lightning("student"),
    "Lightning: online KD": lambda r: r.lightning("online"),
    "Lightning: cached KD": lambda r: r.lightning("cached"),
    "bare loop: student alone": lambda r: r.bare(kd=False),
    "bare loop: online KD": lambda r: r.bare(kd=True),
    "bare loop: cached KD": lambda r: r.bare(kd=True, cached=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skip_cifar_checksums()
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        write_cifar100(Path(folder), 64 * args.batches)
        runs = Runs(Path(folder), args.batches)
        times = interleave(VARIANTS, runs, args.rounds)
    rows = {name: {"median_ms": statistics.median(values), "ms": values} for name, values in times.items()}
    print(f"\nmilliseconds per training step (one linear layer, batch 64, CPU, {args.threads} thread(s)), "
          f"median of {args.rounds} interleaved rounds")
    for name, row in rows.items():
        print(f"  {name:<28} {row['median_ms']:6.2f}")
    write_record(REPO / "benchmarks" / "results" / "step_overhead.json",
                 command=f"python benchmarks/step_overhead.py --batches {args.batches} --rounds {args.rounds} "
                         f"--threads {args.threads}",
                 metric="milliseconds per training step (median of interleaved rounds)", started=started, rows=rows)


if __name__ == "__main__":
    main()
