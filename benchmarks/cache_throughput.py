"""Distillation at the cost of training: the teacher-output cache, the compiled step and device-resident data
against online KD, bare PyTorch loops and torchdistill.

A teacher distils into a student (``--pair``: ResNet32x4 -> ResNet8x4, or WRN-40-2 -> WRN-16-2) on CIFAR-size
images (random pixels in CIFAR-100's on-disk format, so the real data module reads them), at ``--batch-size``,
on ``--device``. Every variant trains two epochs; the second is timed (the first compiles, captures graphs and
fills caches). Two times per epoch: the wall time of the epoch's training loop, data included ("epoch"), and the
seconds inside the training steps alone ("steps": forward, loss, backward, optimizer step). The rows:

  (a) the student on labels alone (``Classifier``);
  (b) online KD (``VanillaKD``: the teacher's forward every step);
  (c) cached KD (``VanillaKD`` with ``TeacherOutputCache``, fp32, filled once before training; on a GPU the cache
      is in the GPU's memory, ``storage: device``, and (c2) gives it in host memory);
  (d) a bare hand-written PyTorch KD loop (no Lightning), the teacher's forward every step;
  (d2) the bare loop of the student on labels alone, eager: the yardstick of the GPU targets (issue 27);
  (e) torchdistill's per-step machinery: the bare loop with its ``ForwardHookManager`` and ``KDLoss``;
  (e2) torchdistill's whole distillation box (``get_distillation_box`` with the same ``KDLoss`` and optimizer, its
       own data loader over the same images, pre-normalised, no augmentation);
  (f) online KD with the fast teacher path (``FastTeacher``, bf16 autocast and channels-last);
  (g) with ``--compile``: (f) with the teacher compiled by inductor;
  (h) with ``--compile``: cached KD with the compiled step (``CompiledStep``: inductor, CUDA graphs on a GPU,
      the fused optimizer, the last partial batch dropped);
  (i) with ``--compile``: (h) with the training split held on the device (``device_resident``).

The bare loops and torchdistill's box get their batches as normalised floats made before the epoch (no decoding,
no augmentation); the package's rows read the CIFAR files and crop and flip on the device. The variants run
interleaved, one fit each per round, for ``--rounds`` rounds; the table gives the median and its ratio to (a) and
to (d2). Writes ``benchmarks/results/cache_throughput_<device>[_batch<B>][_<pair>].json``.

    python benchmarks/cache_throughput.py --images 512 --rounds 3 --threads 2
    python benchmarks/cache_throughput.py --images 10240 --rounds 3 --threads 8 --device cuda --compile
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, Trainer, seed_everything
from seed_records import REPO, StepTimer, interleave, write_record
from torch import Tensor, nn

from lightning_kd import Classifier, VanillaKD
from lightning_kd.callbacks import CompiledStep, FastTeacher, TeacherOutputCache
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


def timing_trainer(device: str, callbacks: list[Any], epochs: int = 1, **settings: Any) -> Trainer:
    """A trainer with nothing but the training steps (no logger, bar, checkpoint or validation), unless ``settings``
    (the ``Trainer``'s arguments) say otherwise."""
    return Trainer(**{"accelerator": device, "devices": 1, "max_epochs": epochs, "logger": False,
                      "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                      "limit_val_batches": 0, "num_sanity_val_steps": 0, "callbacks": callbacks, **settings})


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bare_loop_seconds(student: nn.Module, teacher: nn.Module | None, batches: list[tuple[Tensor, Tensor]],
                      device: str, torchdistill: bool = False, cached: bool = False, epochs: int = 1,
                      wall: list[float] | None = None) -> float:
    """Seconds of the last epoch's training steps in a bare hand-written loop: KD from ``teacher`` (T 4, Hinton's
    ``0.1 CE + 0.9 T^2 KL``; with ``torchdistill``, its hooks and ``KDLoss`` compute it; with ``cached``, the
    teacher's logits of every batch computed before the epoch, untimed, as a cache would hold them), or labels
    alone (``teacher`` ``None``). ``wall`` receives the last epoch's wall time, the batches' copies included."""
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
    stored = None
    if cached and teacher is not None:
        with torch.no_grad():
            stored = [teacher(x.to(device)) for x, _ in batches]
    for _ in range(epochs):
        seconds = 0.0
        _synchronize(device)
        epoch_started = time.perf_counter()
        for step, (x, y) in enumerate(batches):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            _synchronize(device)
            started = time.perf_counter()
            if teacher is None:
                loss = F.cross_entropy(student(x), y)
            else:
                if stored is not None:
                    teacher_logits = stored[step]
                else:
                    with torch.no_grad():
                        teacher_logits = teacher(x)
                logits = student(x)
                if torchdistill:
                    loss = criterion(student_hooks.pop_io_dict(), teacher_hooks.pop_io_dict(), y)
                else:
                    soft = F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(teacher_logits / 4, 1),
                                    reduction="batchmean")
                    loss = 0.1 * F.cross_entropy(logits, y) + 0.9 * 16 * soft
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            _synchronize(device)
            seconds += time.perf_counter() - started
        if wall is not None:
            wall.append(time.perf_counter() - epoch_started)
    return seconds


def torchdistill_box_seconds(student: nn.Module, teacher: nn.Module, batches: list[tuple[Tensor, Tensor]],
                             device: str, batch_size: int, epochs: int = 2) -> float:
    """Wall seconds of the last epoch of torchdistill's own training loop: its distillation box
    (``get_distillation_box``) with ``KDLoss`` (T 4, ``0.1 CE + 0.9 T^2 KL``) and SGD as in the other rows, and its
    data loader (a random sampler, batches collated from single images) over ``batches``' images."""
    import torchvision.datasets  # noqa: F401  # torchdistill's registry reads the module at import
    from torch.utils.data import RandomSampler, TensorDataset
    from torchdistill.core.distillation import get_distillation_box

    images, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    loss = {"key": "KDLoss", "kwargs": {"student_module_path": ".", "student_module_io": "output",
                                        "teacher_module_path": ".", "teacher_module_io": "output",
                                        "temperature": 4.0, "alpha": 0.1, "beta": 0.9}}
    config = {
        "num_epochs": epochs,
        "train_data_loader": {"dataset_id": "train", "sampler": {"class_or_func": RandomSampler, "kwargs": {}},
                              "kwargs": {"batch_size": batch_size, "num_workers": 0, "pin_memory": device == "cuda"}},
        "teacher": {"forward_proc": "forward_batch_only", "sequential": [], "requires_grad": False,
                    "frozen_modules": []},
        "student": {"forward_proc": "forward_batch_only", "adaptations": None, "sequential": [],
                    "requires_grad": True, "frozen_modules": []},
        "optimizer": {"key": "SGD", "kwargs": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}},
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {"criterion": loss, "weight": 1.0}}}},
    }
    box = get_distillation_box(teacher.to(device), student.to(device), {"train": TensorDataset(images, labels)},
                               config, torch.device(device), None, False, 1.0)
    seconds = 0.0
    for epoch in range(epochs):
        box.pre_epoch_process(epoch=epoch)
        _synchronize(device)
        started = time.perf_counter()
        for sample_batch, targets, supp_dict in box.train_data_loader:
            sample_batch = sample_batch.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            box.post_forward_process(box.forward_process(sample_batch, targets, supp_dict))
        _synchronize(device)
        seconds = time.perf_counter() - started
        box.post_epoch_process()
    return seconds


class EpochTimer(Callback):
    """Wall seconds of each training epoch's loop (from its start to its end, data included): ``epoch_seconds``."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._started = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        _synchronize(pl_module.device.type)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        _synchronize(pl_module.device.type)
        self.epoch_seconds.append(time.perf_counter() - self._started)


PAIRS = {"resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4"), "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2")}


class Variants:
    """The networks, data and cache every round reuses (the teacher's weights never change)."""

    def __init__(self, root: Path, device: str, batch_size: int, pair: str) -> None:
        seed_everything(0)
        self.device, self.root, self.batch_size = device, root, batch_size
        self.teacher_name, self.student_name = PAIRS[pair]
        self.data = self.datamodule(resident=False)
        self.teacher = create_model(self.teacher_name, num_classes=100)
        self.cache = TeacherOutputCache(storage="device" if device == "cuda" else "memory")
        self.host_cache = TeacherOutputCache(storage="memory")
        self.compiled_cache = TeacherOutputCache(storage="device")
        self.data.setup("fit")
        self.batches = [(b["input"], b["target"]) for b in self.data.train_dataloader()]
        self.step_seconds: dict[str, list[float]] = {}

    def datamodule(self, resident: bool) -> CIFAR100DataModule:
        return CIFAR100DataModule(root=self.root, batch_size=self.batch_size, num_workers=0, val_fraction=0.05,
                                  augmentation_views=2, augmentation_seed=0, device_resident=resident)

    def lightning(self, name: str) -> float:
        student = create_model(self.student_name, num_classes=100)
        steps, epochs = StepTimer(), EpochTimer()
        callbacks: list[Any] = [steps, epochs]
        data = self.data
        if name == "student":
            task: Any = Classifier(student, lr_scheduler="none")
        else:
            task = VanillaKD(student, self.teacher, lr_scheduler="none")
            callbacks += {"online": [], "cached": [self.cache], "cached_host": [self.host_cache],
                          "fast": [FastTeacher("bf16", channels_last=True)],
                          "compiled": [FastTeacher("bf16", channels_last=True, compile_backend="inductor")],
                          "compiled_step": [self.compiled_cache, CompiledStep()],
                          "compiled_resident": [self.compiled_cache, CompiledStep()]}[name]
            if name == "compiled_resident":
                data = self.datamodule(resident=True)
        timing_trainer(self.device, callbacks, epochs=2).fit(task, datamodule=data)
        self.step_seconds.setdefault(name, []).append(steps.epoch_seconds[-1])
        return epochs.epoch_seconds[-1]

    def bare(self, kd: bool, torchdistill: bool = False) -> float:
        student = create_model(self.student_name, num_classes=100)
        wall: list[float] = []
        seconds = bare_loop_seconds(student, self.teacher if kd else None, self.batches, self.device,
                                    torchdistill=torchdistill, epochs=2, wall=wall)
        self.step_seconds.setdefault(f"bare{kd}{torchdistill}", []).append(seconds)
        return wall[-1]

    def box(self) -> float:
        student = create_model(self.student_name, num_classes=100)
        return torchdistill_box_seconds(student, self.teacher, self.batches, self.device, self.batch_size)


VARIANTS = {
    "(a) student on labels alone": lambda v: v.lightning("student"),
    "(b) online KD": lambda v: v.lightning("online"),
    "(c) cached KD": lambda v: v.lightning("cached"),
    "(d) bare PyTorch KD loop": lambda v: v.bare(kd=True),
    "(d2) bare PyTorch loop, student alone": lambda v: v.bare(kd=False),
    "(e) torchdistill KD (hooks + KDLoss)": lambda v: v.bare(kd=True, torchdistill=True),
    "(e2) torchdistill KD, its distillation box": lambda v: v.box(),
    "(f) online KD, bf16 channels-last teacher": lambda v: v.lightning("fast"),
}
STEP_KEYS = {"(a) student on labels alone": "student", "(b) online KD": "online", "(c) cached KD": "cached",
             "(d) bare PyTorch KD loop": "bareTrueFalse", "(d2) bare PyTorch loop, student alone": "bareFalseFalse",
             "(e) torchdistill KD (hooks + KDLoss)": "bareTrueTrue",
             "(f) online KD, bf16 channels-last teacher": "fast", "(c2) cached KD, cache in host memory": "cached_host",
             "(g) online KD, bf16 channels-last compiled teacher": "compiled",
             "(h) cached KD, compiled step": "compiled_step",
             "(i) cached KD, compiled step, device-resident data": "compiled_resident"}
HOST_CACHE = {"(c2) cached KD, cache in host memory": lambda v: v.lightning("cached_host")}
COMPILED = {"(g) online KD, bf16 channels-last compiled teacher": lambda v: v.lightning("compiled"),
            "(h) cached KD, compiled step": lambda v: v.lightning("compiled_step"),
            "(i) cached KD, compiled step, device-resident data": lambda v: v.lightning("compiled_resident")}


def guarded(name: str, run: Callable[[Variants], float], failures: dict[str, str]) -> Callable[[Variants], float]:
    """``run``, whose failure is recorded in ``failures`` (the row then says so) instead of ending the benchmark."""

    def attempt(variants: Variants) -> float:
        if name in failures:
            return float("nan")
        try:
            return run(variants)
        except Exception as error:  # a row that cannot run on this device is reported, not hidden
            failures[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
            traceback.print_exc()
            return float("nan")

    return attempt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pair", choices=sorted(PAIRS), default="resnet32x4-resnet8x4")
    parser.add_argument("--compile", action="store_true", help="add (g), (h) and (i): the compiled rows")
    parser.add_argument("--skip", nargs="*", default=[], help="leave out the rows whose label starts so, e.g. (e2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    yardsticks = ("(a) student on labels alone", "(d2) bare PyTorch loop, student alone")
    skipped = [name for name in yardsticks if any(name.startswith(skip) for skip in args.skip)]
    if skipped:  # every ratio is to these
        parser.error(f"--skip {' '.join(args.skip)} leaves out {' and '.join(skipped)}, the rows every ratio is to: "
                     "skip by a longer prefix, such as '(d)' or '(e)'")
    torch.set_num_threads(args.threads)
    skip_cifar_checksums()
    started = time.time()
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        write_cifar100(Path(folder), args.images)
        variants = Variants(Path(folder), args.device, args.batch_size, args.pair)
        runs = VARIANTS | (HOST_CACHE if args.device == "cuda" else {}) | (COMPILED if args.compile else {})
        runs = {name: guarded(name, run, failures) for name, run in runs.items()
                if not any(name.startswith(skip) for skip in args.skip)}
        times = interleave(runs, variants, args.rounds)
    times = {name: values for name, values in times.items() if name not in failures}
    # a yardstick that failed leaves its ratios out (None), and the failure is printed below
    base, bare = (statistics.median(times[name]) if name in times else None for name in yardsticks)
    rows = {}
    for name, values in times.items():
        steps = variants.step_seconds.get(STEP_KEYS.get(name, ""), [])[-args.rounds:]
        median = statistics.median(values)
        rows[name] = {"median_epoch_seconds": median, "epoch_seconds": values,
                      "ratio_to_a": median / base if base else None, "ratio_to_d2": median / bare if bare else None,
                      "median_step_seconds": statistics.median(steps) if steps else None}
    cache = {"storage": variants.cache.storage, "fill_seconds": variants.cache.fill_seconds,
             "megabytes": variants.cache.megabytes}
    print(f"\nseconds per epoch ({args.pair}, {args.images} images, batch {args.batch_size}, {args.device}, "
          f"{args.threads} threads), median of {args.rounds} interleaved rounds; the second epoch of each fit")
    print(f"  {'':<52} {'epoch':>7} {'x(a)':>6} {'x(d2)':>6} {'steps':>7}")
    def cell(value: float | None, width: int) -> str:
        return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}}"

    for name, row in rows.items():
        print(f"  {name:<52} {row['median_epoch_seconds']:7.2f} {cell(row['ratio_to_a'], 6)} "
              f"{cell(row['ratio_to_d2'], 6)} {cell(row['median_step_seconds'], 7)}")
    for name, error in failures.items():
        print(f"  {name:<52} FAILED: {error}")
    print(f"  cache ({cache['storage']}): filled in {cache['fill_seconds']:.1f} s, {cache['megabytes']:.1f} MB "
          "(2 views per image)")
    device = "gpu" if args.device == "cuda" else "cpu"
    suffix = ("" if args.batch_size == 64 else f"_batch{args.batch_size}") + (
        "" if args.pair == "resnet32x4-resnet8x4" else f"_{args.pair}")
    write_record(REPO / "benchmarks" / "results" / f"cache_throughput_{device}{suffix}.json",
                 command=f"python benchmarks/cache_throughput.py --images {args.images} --rounds {args.rounds} "
                         f"--threads {args.threads} --batch-size {args.batch_size} --device {args.device} "
                         f"--pair {args.pair}" + (" --compile" if args.compile else "")
                         + (f" --skip {' '.join(shlex.quote(skip) for skip in args.skip)}" if args.skip else ""),
                 metric="wall seconds of the second epoch's training loop, data included (median of interleaved "
                        "rounds), its ratios to (a) and (d2), and the seconds inside its training steps alone",
                 started=started, rows=rows, cache=cache, failures=failures,
                 pair=f"{args.pair}, CIFAR-100-size random images, batch {args.batch_size}")


if __name__ == "__main__":
    main()
