"""Distillation at the cost of training: the teacher-output cache against online KD, a bare loop and torchdistill.

ResNet32x4 teaches ResNet8x4 on CIFAR-size images (random pixels in CIFAR-100's on-disk format, so the
real data module reads them), batch 64, on this machine's CPU threads (``--threads``). Per epoch, the
seconds spent in training steps (forward, loss, backward, optimizer step; data loading and validation
excluded) of:

  (a) the student on labels alone (``Classifier``);
  (b) online KD (``VanillaKD``: the teacher's forward every step);
  (c) cached KD (``VanillaKD`` with ``TeacherOutputCache``, fp32, filled once before training; on a GPU
      the cache is in the GPU's memory, ``storage: device``, and (c2) gives it in host memory);
  (d) a bare hand-written PyTorch KD loop (no Lightning);
  (e) torchdistill's KD: the bare loop with torchdistill's ``ForwardHookManager`` collecting both models'
      outputs and its ``KDLoss`` (what its distillation box runs each step; ``pip install -e .[benchmark]``);
  (f) online KD with the fast teacher path (``FastTeacher``, bf16 autocast and channels-last);
  (g) with ``--compile``: (f) with the teacher compiled by inductor.

The variants run interleaved, one epoch each per round, for ``--rounds`` rounds; the table gives the
median epoch time and its ratio to (a). The cache's fill time and size are reported beside. Writes
``benchmarks/results/cache_throughput_<device>.json``.

    python benchmarks/cache_throughput.py --images 512 --rounds 3 --threads 2
    python benchmarks/cache_throughput.py --images 10240 --rounds 3 --threads 8 --device cuda --compile
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning import Trainer, seed_everything
from seed_records import REPO, StepTimer, interleave, write_record
from torch import Tensor, nn

from lightning_kd import Classifier, VanillaKD
from lightning_kd.callbacks import FastTeacher, TeacherOutputCache
from lightning_kd.data import CIFAR100DataModule
from lightning_kd.models import create_model


def write_cifar100(root: Path, images: int) -> None:
    """Random CIFAR-100 in torchvision's on-disk format (its checksums will not match: skipped below)."""
    import pickle

    rng = np.random.default_rng(0)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", images), ("test", 64)):
        entry = {"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
                 "fine_labels": rng.integers(0, 100, size=count).tolist()}
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, handle)


def skip_cifar_checksums() -> None:
    """Let torchvision read the random files (their checksums cannot match)."""
    import torchvision

    torchvision.datasets.CIFAR10._check_integrity = lambda self: True
    torchvision.datasets.cifar.check_integrity = lambda path, md5=None: True


def timing_trainer(device: str, callbacks: list[Any]) -> Trainer:
    """A one-epoch trainer with nothing but the training steps (no logger, bar, checkpoint or validation)."""
    return Trainer(accelerator=device, devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                   num_sanity_val_steps=0, callbacks=callbacks)


def bare_loop_seconds(student: nn.Module, teacher: nn.Module | None, batches: list[tuple[Tensor, Tensor]],
                      device: str, torchdistill: bool = False) -> float:
    """Seconds of one epoch's training steps in a bare hand-written loop: KD from ``teacher`` (T 4, Hinton's
    ``0.1 CE + 0.9 T^2 KL``; with ``torchdistill``, its hooks and ``KDLoss`` compute it), or labels alone
    (``teacher`` ``None``)."""
    student = student.to(device).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    if teacher is not None:
        teacher = teacher.to(device).eval()
    if torchdistill:
        from torchdistill.core.forward_hook import ForwardHookManager
        from torchdistill.losses.mid_level import KDLoss

        student_hooks, teacher_hooks = ForwardHookManager(device), ForwardHookManager(device)
        student_hooks.add_hook(student, "fc", requires_input=False, requires_output=True)
        teacher_hooks.add_hook(teacher, "fc", requires_input=False, requires_output=True)
        criterion = KDLoss("fc", "output", "fc", "output", temperature=4.0, alpha=0.1, beta=0.9)
    seconds = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        if teacher is None:
            loss = F.cross_entropy(student(x), y)
        else:
            with torch.no_grad():
                teacher_logits = teacher(x)
            logits = student(x)
            if torchdistill:
                loss = criterion(student_hooks.pop_io_dict(), teacher_hooks.pop_io_dict(), y)
            else:
                soft = F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(teacher_logits / 4, 1), reduction="batchmean")
                loss = 0.1 * F.cross_entropy(logits, y) + 0.9 * 16 * soft
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - started
    return seconds


class Variants:
    """The networks, data and cache every round reuses (the teacher's weights never change)."""

    def __init__(self, root: Path, device: str, batch_size: int) -> None:
        seed_everything(0)
        self.device = device
        self.data = CIFAR100DataModule(root=root, batch_size=batch_size, num_workers=0, val_fraction=0.05,
                                       augmentation_views=2, augmentation_seed=0)
        self.teacher = create_model("resnet32x4", num_classes=100)
        self.cache = TeacherOutputCache(storage="device" if device == "cuda" else "memory")
        self.host_cache = TeacherOutputCache(storage="memory")
        self.data.setup("fit")
        self.batches = [(b["input"], b["target"]) for b in self.data.train_dataloader()]

    def lightning(self, name: str) -> float:
        student = create_model("resnet8x4", num_classes=100)
        timer = StepTimer()
        callbacks: list[Any] = [timer]
        if name == "student":
            task: Any = Classifier(student, lr_scheduler="none")
        else:
            task = VanillaKD(student, self.teacher, lr_scheduler="none")
            callbacks += {"online": [], "cached": [self.cache],
                          "cached_host": [self.host_cache], "fast": [FastTeacher("bf16", channels_last=True)],
                          "compiled": [FastTeacher("bf16", channels_last=True, compile_backend="inductor")]}[name]
        timing_trainer(self.device, callbacks).fit(task, datamodule=self.data)
        return timer.epoch_seconds[0]

    def bare(self, torchdistill: bool) -> float:
        student = create_model("resnet8x4", num_classes=100)
        return bare_loop_seconds(student, self.teacher, self.batches, self.device, torchdistill=torchdistill)

VARIANTS = {
    "(a) student on labels alone": lambda v: v.lightning("student"),
    "(b) online KD": lambda v: v.lightning("online"),
    "(c) cached KD": lambda v: v.lightning("cached"),
    "(d) bare PyTorch KD loop": lambda v: v.bare(torchdistill=False),
    "(e) torchdistill KD (hooks + KDLoss)": lambda v: v.bare(torchdistill=True),
    "(f) online KD, bf16 channels-last teacher": lambda v: v.lightning("fast"),
}
HOST_CACHE = {"(c2) cached KD, cache in host memory": lambda v: v.lightning("cached_host")}
COMPILED = {"(g) online KD, bf16 channels-last compiled teacher": lambda v: v.lightning("compiled")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="add (g): the fast path with a compiled teacher")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skip_cifar_checksums()
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        write_cifar100(Path(folder), args.images)
        variants = Variants(Path(folder), args.device, args.batch_size)
        runs = VARIANTS | (HOST_CACHE if args.device == "cuda" else {}) | (COMPILED if args.compile else {})
        times = interleave(runs, variants, args.rounds)
    base = statistics.median(times["(a) student on labels alone"])
    rows = {name: {"median_seconds": statistics.median(values), "ratio_to_a": statistics.median(values) / base,
                   "seconds": values} for name, values in times.items()}
    cache = {"storage": variants.cache.storage, "fill_seconds": variants.cache.fill_seconds,
             "megabytes": variants.cache.megabytes}
    print(f"\nseconds per epoch of training steps ({args.images} images, batch {args.batch_size}, {args.device}, "
          f"{args.threads} threads), median of {args.rounds} interleaved rounds")
    for name, row in rows.items():
        print(f"  {name:<52} {row['median_seconds']:7.2f}   x{row['ratio_to_a']:.2f}")
    print(f"  cache ({cache['storage']}): filled in {cache['fill_seconds']:.1f} s, {cache['megabytes']:.1f} MB "
          "(2 views per image)")
    device = "gpu" if args.device == "cuda" else "cpu"
    suffix = "" if args.batch_size == 64 else f"_batch{args.batch_size}"
    write_record(REPO / "benchmarks" / "results" / f"cache_throughput_{device}{suffix}.json",
                 command=f"python benchmarks/cache_throughput.py --images {args.images} --rounds {args.rounds} "
                         f"--threads {args.threads} --batch-size {args.batch_size} --device {args.device}"
                         + (" --compile" if args.compile else ""),
                 metric="seconds per epoch spent in training steps (median of interleaved rounds) and ratio to (a)",
                 started=started, rows=rows, cache=cache,
                 pair=f"ResNet32x4 -> ResNet8x4, CIFAR-100-size random images, batch {args.batch_size}")


if __name__ == "__main__":
    main()
