"""A per-sample cache of the frozen teachers' outputs, so that distillation costs what training costs.

A frozen teacher's answer for a given input never changes, yet online distillation computes it again
every epoch. :class:`TeacherOutputCache` computes it once per sample and view, in a pre-pass before
training (eval mode, large batches, no gradient; or, with ``fill: first_use``, online the first time each
sample and view comes up in training), keeps it in host memory, in the accelerator's memory or in
memory-mapped files on disk, and serves it to every method through
:meth:`~lightning_kd.tasks.DistillationTask.teacher_outputs`, by ``batch["index"]`` and ``batch["view"]``: no
method changes.

It never serves a stale target:

* With random augmentation a target is valid only for the same augmented view. The data modules'
  augmentation is replayable (:mod:`lightning_kd.data.augmentation`): view ``v`` of sample ``i`` is the
  same image whenever asked for, and epoch ``e`` shows view ``e % augmentation_views``. The cache holds
  every view of every sample. A data module whose training transforms cannot be replayed (named by its
  ``opaque_augmentation``) is refused, unless ``reuse_unaugmented_targets: true`` accepts targets computed
  on un-augmented images (said in the log and recorded as ``cache/unaugmented_targets``).
* Only training batches are served (validation and test number their samples in their own splits), and
  a teacher replaced during the fit (a Born-Again promotion) makes the cache fill again before it serves.

The pre-pass runs the teachers in the trainer's precision, as a training step would (under ``bf16-mixed``, in its
autocast; with :class:`~lightning_kd.callbacks.FastTeacher`, in the precision that sets), so that a cached run is
served the targets an uncached one computes.

Precision (``precision``), with its error:

* ``"fp32"``: the teachers' outputs exactly.
* ``"fp16"``: logits and features in half precision: relative error at most ``2**-11`` (about 5e-4).
* ``"topk"``: the ``top_k`` largest logits exactly, and the log-sum-exp of all: the softmax at ``T = 1`` is
  exact on the top ``k`` classes, and the remaining mass is spread evenly over the others (at other
  temperatures the top-``k`` ratios stay exact; the tail is flattened). Features are kept in fp32.

Token streams (language models, :class:`~lightning_kd.data.TextDataModule`) are cached per position: an
entry is one window of one stream (``batch["index"]``), holding the teacher's output at each of its
``bptt`` steps. The pre-pass runs the teachers through the training batches in training's order, carrying
their state across windows as online distillation does, so a served target is the one the teacher would
have given at that step. ``precision: topk`` keeps the ``top_k`` logits of every token and the log-sum-exp
(the remaining mass); a full-vocabulary cache (``fp32``/``fp16``) of a 10k vocabulary needs 40 kB per token,
about 29 GB for Penn Treebank.

A cache larger than ``max_megabytes`` is refused before it is allocated, with the estimate and what would
fit. Under DDP every process fills a share of the batches (of token streams: its own streams) and the
shares are combined (in memory: summed over the processes; on disk: written to the same files, which must
be on storage the processes share). The fill time and the cache's size are printed and logged
(``cache/fill_seconds``, ``cache/megabytes``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_kd.callbacks.epoch_checkpoints import checkpoint_folder
from lightning_kd.callbacks.output_lock import acquire, release
from lightning_kd.data.base import Batch, IndexedDataset
from lightning_kd.errors import Refusal
from lightning_kd.losses.validation import check_choice
from lightning_kd.models.language import begin_stream
from lightning_kd.models.taps import LayerSpec, NetworkOutput, layer_list
from lightning_kd.protocols import TeacherServed
from lightning_kd.reporting import log_metrics

CachePrecision = Literal["fp32", "fp16", "topk"]
CACHE_PRECISIONS: tuple[str, ...] = get_args(CachePrecision)
CacheStorage = Literal["memory", "device", "disk"]
CACHE_STORAGES: tuple[str, ...] = get_args(CacheStorage)
CacheFill = Literal["prepass", "first_use"]
CACHE_FILLS: tuple[str, ...] = get_args(CacheFill)


class TeacherOutputCache(Callback):
    """Serve the frozen teachers' outputs from a per-sample (and per-view) cache filled before training.

    Args:
        precision: ``"fp32"`` (default), ``"fp16"`` or ``"topk"`` (see the module for each one's error).
        top_k: Logits kept per sample with ``precision: topk``.
        storage: ``"memory"`` (default: host memory), ``"device"`` (the training device's memory: on a GPU,
            serving a batch is a gather there, with no copy from the host and no synchronisation; use it
            when the cache fits beside training) or ``"disk"`` (memory-mapped ``.npy`` files in ``dirpath``).
        dirpath: Folder of the ``"disk"`` files (default: ``teacher_cache`` inside the run's checkpoint folder,
            which is the run's own). The folder is locked for the fit: a second live run that names it is refused.
        fill: ``"prepass"`` (default): every sample and view before training; ``"first_use"``: each training
            batch's outputs are computed online the first time its samples and view come up, and stored
            (no pre-pass; under DDP each process keeps what it computed).
        batch_size: Batch size of the pre-pass.
        reuse_unaugmented_targets: Accept a training pipeline whose augmentation cannot be replayed, with
            targets computed on the un-augmented training images (an approximation, said in the log).
        max_megabytes: Refuse, before allocating it, a cache larger than this (``None``: no limit).
    """

    def __init__(self, precision: CachePrecision = "fp32", top_k: int = 10, storage: CacheStorage = "memory",
                 dirpath: str | Path | None = None, fill: CacheFill = "prepass", batch_size: int = 512,
                 reuse_unaugmented_targets: bool = False, max_megabytes: float | None = 4096.0) -> None:
        check_choice("cache precision", precision, CACHE_PRECISIONS)
        check_choice("cache storage", storage, CACHE_STORAGES)
        check_choice("cache fill", fill, CACHE_FILLS)
        if fill == "first_use" and reuse_unaugmented_targets:
            raise Refusal("fill: first_use stores the teacher's outputs on the augmented training batches, which "
                             "cannot be replayed here; use fill: prepass to reuse un-augmented targets")
        if top_k < 1:
            raise Refusal(f"top_k must be >= 1, got {top_k}")
        if batch_size < 1:
            raise Refusal(f"batch_size must be >= 1, got {batch_size}")
        if max_megabytes is not None and not max_megabytes > 0:
            raise Refusal(f"max_megabytes must be > 0 (or null for no limit), got {max_megabytes}")
        self.max_megabytes = max_megabytes
        self.precision, self.top_k, self.storage, self.fill_mode = precision, top_k, storage, fill
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.batch_size = batch_size
        self.reuse_unaugmented_targets = reuse_unaugmented_targets
        self.entries: dict[str, dict[str, Tensor]] = {}
        self.filled = torch.zeros(0, 1, dtype=torch.bool)
        """Which (sample, view) entries hold the current teachers' outputs."""
        self.samples = 0
        self.views = 1
        self.steps: int | None = None
        """Steps per entry of a token stream (its ``bptt``); ``None`` for per-sample data."""
        self.layers: list[str] = []
        self.teacher_count = 0
        self.filled_version: int | None = None
        self.online_batches = 0
        """Training batches whose outputs were computed online (``fill: first_use``) rather than served."""
        self.complete = False
        """Whether every entry is filled (after a pre-pass): serving then checks nothing per batch."""
        self.fills = 0
        """How many times the cache was (re)started for a teacher: once per teacher of the fit."""
        self.fill_seconds = 0.0
        """How long the latest fill took."""
        self.megabytes = 0.0
        """The cache's size."""
        self._trainer: pl.Trainer | None = None
        self._device = torch.device("cpu")
        self._folder: Path | None = None
        self._lock: Path | None = None

    @property
    def _storage_device(self) -> torch.device:
        return self._device if self.storage == "device" else torch.device("cpu")

    # -- the fit ----------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(pl_module, TeacherServed):
            raise Refusal(f"TeacherOutputCache serves teacher outputs, but {type(pl_module).__name__} has no "
                             "teacher: use it with a distillation method")
        if self.storage == "disk":
            self._lock_folder(trainer)
        datamodule = trainer.datamodule
        if _token_windows(datamodule) is not None:  # token streams: no augmentation to replay
            self._trainer = trainer
            pl_module.use_teacher_cache(self)
            return
        if datamodule is None or not hasattr(datamodule, "train_set"):
            raise Refusal("TeacherOutputCache needs a lightning_kd data module (its training set and augmentation, or "
                          "its token streams)")
        opaque = getattr(datamodule, "opaque_augmentation", None)
        if opaque and not self.reuse_unaugmented_targets:
            raise Refusal(
                f"the training data is augmented by {opaque}, which cannot be replayed, so a cached teacher target "
                "would not match the augmented image the student sees; use a replayable augmentation (e.g. "
                "transform_style: small), or set reuse_unaugmented_targets: true to accept targets of the "
                "un-augmented images")
        if getattr(datamodule, "augmentation", None) is not None and datamodule.augmentation_views is None:
            raise Refusal(
                "the training data shows a new augmented view of each sample every epoch, so no cached target would "
                "ever be used twice; set the data module's augmentation_views (e.g. --data.init_args."
                "augmentation_views 8) to cycle through that many views of each sample")
        augmentation = getattr(datamodule, "augmentation", None)
        if augmentation is not None and trainer.world_size > 1:
            # every process must replay the views the cache holds: the first process's seed for all
            augmentation.seed = trainer.strategy.broadcast(augmentation.seed, src=0)
        self._trainer = trainer
        pl_module.use_teacher_cache(self)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and hasattr(pl_module, "use_teacher_cache"):
            pl_module.use_teacher_cache(None)
        self._unlock()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._unlock()

    def _lock_folder(self, trainer: pl.Trainer) -> None:
        """The disk files' folder, this run's alone: inside its checkpoint folder unless named, and locked."""
        self._folder = self.dirpath or checkpoint_folder(trainer) / "teacher_cache"
        if trainer.is_global_zero and self._lock is None:
            self._lock = acquire(self._folder, "the teacher cache's folder")

    def _unlock(self) -> None:
        if self._lock is not None:
            release(self._lock)
            self._lock = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.teachers and self.filled_version != pl_module.teacher_version:
            self.fill(trainer, pl_module)

    # -- serving ----------------------------------------------------------------------------------
    def serves(self, trainer: pl.Trainer | None, batch: Batch) -> bool:
        """Whether ``batch`` is a training batch (of samples by index) of the fit this cache was set up for."""
        return trainer is not None and trainer is self._trainer and trainer.training and "index" in batch

    def outputs(self, pl_module: Any, batch: Batch, layers: LayerSpec | Mapping[str, LayerSpec]) -> list[NetworkOutput]:
        """The teachers' outputs for a training batch, from the cache (filled again first if a teacher changed)."""
        if self.filled_version != pl_module.teacher_version:
            assert self._trainer is not None
            self.fill(self._trainer, pl_module)
        index = batch["index"].long()
        view = batch["view"].long() if "view" in batch else torch.zeros_like(index)
        if self.storage != "device":  # host storage: gather on the host (a device-side check would synchronise)
            index, view = index.cpu(), view.cpu()
            if int(view.max()) >= self.views:
                raise RuntimeError(f"batch view {int(view.max())} is not cached (the cache holds {self.views} views)")
        if not self.complete and not bool(self.filled[index.cpu(), view.cpu()].all()):
            # fill: first_use, the first time these samples and view come up
            outputs = pl_module.teachers.outputs(batch["input"], self.layers)
            for role, output in zip(pl_module.teachers, outputs, strict=True):
                self._store(self._trainer, role, output, index, view)
            self.filled[index.cpu(), view.cpu()] = True
            self.complete = bool(self.filled.all())  # every view seen: serve without checking from now on
            self.online_batches += 1
        device = batch["input"].device
        results = []
        for role in pl_module.teachers:
            wanted = layers.get(role, ()) if isinstance(layers, Mapping) else layers
            wanted = layer_list(wanted)
            missing = [layer for layer in wanted if layer not in self.layers]
            if missing:
                raise Refusal(f"the teacher cache holds the layers {self.layers}, not {missing}: the task's "
                                 "cached_teacher_layers() must name every layer its teacher_outputs asks for")
            entry = self.entries[role]
            logits = self._decode_logits(entry, index, view)
            features = {layer: self._gather(entry[f"feature:{layer}"], index, view).float() for layer in wanted}
            if self.steps is not None:  # a token window: the batch's steps (the last window may be shorter)
                steps = batch["target"].shape[1]
                logits, features = logits[:, :steps], {k: v[:, :steps] for k, v in features.items()}
            logits = logits.to(device, non_blocking=True)
            features = {k: v.to(device, non_blocking=True) for k, v in features.items()}
            results.append(NetworkOutput(logits, features))
        return results

    def _gather(self, stored: Tensor, index: Tensor, view: Tensor) -> Tensor:
        """``stored[index, view]``: on the host as one ``index_select`` over the rows ``sample * views + view`` (the
        views were checked; a two-tensor index cost half as much again per step, the gather waiting on memory)."""
        if self.storage == "device":  # the views unread (a read would synchronise): an index past them fails there
            return stored[index, view]
        return stored.flatten(0, 1).index_select(0, index * self.views + view)

    def _decode_logits(self, entry: dict[str, Tensor], index: Tensor, view: Tensor) -> Tensor:
        if self.precision != "topk":
            return self._gather(entry["logits"], index, view).float()
        values, indices = self._gather(entry["values"], index, view), self._gather(entry["indices"], index, view)
        return topk_logits(values, indices.long(), self._gather(entry["logsumexp"], index, view),
                           entry["num_classes"].item())

    # -- filling ----------------------------------------------------------------------------------
    def fill(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Compute every teacher's outputs for every training sample and view (this process's share, then combined)."""
        started = time.perf_counter()
        datamodule = trainer.datamodule
        windows = _token_windows(datamodule)
        opaque = getattr(datamodule, "opaque_augmentation", None)
        augmented = getattr(datamodule, "augmentation", None) is not None and not opaque
        self.views = datamodule.augmentation_views if augmented else 1
        self.layers = layer_list(pl_module.cached_teacher_layers())
        self.teacher_count = len(pl_module.teachers)
        dataset = datamodule.train_set if windows is None else None
        self.samples, self.steps = (len(dataset), None) if windows is None else windows  # type: ignore[arg-type]
        self.entries = {}
        self.filled = torch.zeros(self.samples, self.views, dtype=torch.bool)
        self.complete = False
        self.filled_version = pl_module.teacher_version
        self._device = next(pl_module.student.parameters()).device
        self.fills += 1
        if self.fill_mode == "first_use":
            return
        if windows is not None:
            self._fill_windows(trainer, pl_module, datamodule)
        else:
            self._fill_samples(trainer, pl_module, datamodule, dataset, opaque, augmented)
        self._combine(trainer)
        self.filled[:] = True
        self.complete = True
        seconds = self.fill_seconds = time.perf_counter() - started
        megabytes = self.megabytes = sum(t.numel() * t.element_size() for e in self.entries.values()
                                         for t in e.values()) / 2**20
        what = "samples" if windows is None else f"windows of {self.steps} tokens"
        rank_zero_info(f"teacher cache: {self.samples:,} {what} x {self.views} view(s) x {len(self.entries)} "
                       f"teacher(s), {self.precision}, {self.storage}: {megabytes:,.1f} MB filled in {seconds:.1f} s")
        log_metrics(trainer, {"cache/fill_seconds": seconds, "cache/megabytes": megabytes,
                              "cache/unaugmented_targets": float(bool(opaque))})

    def _fill_windows(self, trainer: pl.Trainer, pl_module: Any, datamodule: Any) -> None:
        """This process's token streams, in training's order, the teachers' state carried from window to window."""
        device = next(pl_module.student.parameters()).device
        begin_stream(pl_module.teachers, "cache")
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for batch in datamodule.train_dataloader():
                outputs = self._teacher_outputs(trainer, pl_module, batch["input"].to(device))
                for role, output in zip(pl_module.teachers, outputs, strict=True):
                    self._store(trainer, role, output, batch["index"], 0)
        begin_stream(pl_module.teachers, "train", fresh=False)  # online use (if any) goes on where it was

    def _fill_samples(self, trainer: pl.Trainer, pl_module: Any, datamodule: Any, dataset: Any, opaque: Any,
                      augmented: bool) -> None:
        """Every training sample and view (this process's share of the batches)."""
        if opaque:  # reuse_unaugmented_targets: the training images through the evaluation transform
            dataset = IndexedDataset(dataset.dataset, dataset.indices, datamodule.eval_transform)
            rank_zero_info(f"teacher cache: targets from the un-augmented training images (the training data is "
                           f"augmented by {opaque}, which cannot be replayed)")
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=datamodule.num_workers)
        device = next(pl_module.student.parameters()).device
        rank, world = trainer.global_rank, trainer.world_size
        # the random state is left as it was (a loader draws a seed from it): training goes on as without a cache
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for number, batch in enumerate(loader):
                if number % world != rank:  # each process fills its share of the batches
                    continue
                index = batch["index"]
                inputs = batch["input"].to(device)
                for view in range(self.views):
                    x = datamodule.augment(inputs, index.to(device), view) if augmented else inputs
                    outputs = self._teacher_outputs(trainer, pl_module, x)
                    for role, output in zip(pl_module.teachers, outputs, strict=True):
                        self._store(trainer, role, output, index, view)

    def _teacher_outputs(self, trainer: pl.Trainer, pl_module: Any, x: Tensor) -> list[NetworkOutput]:
        """The teachers' outputs for the pre-pass, in the trainer's precision (its autocast under bf16-mixed), as the
        teachers run in a training step: the cache serves what they would have given there (FastTeacher's precision,
        if any, applies inside). Only the forward: the views are made as training makes them."""
        with trainer.precision_plugin.forward_context():
            return pl_module.teachers.outputs(x, self.layers)

    def _store(self, trainer: Any, role: str, output: NetworkOutput, index: Tensor, view: int | Tensor) -> None:
        if role not in self.entries:
            self.entries[role] = self._allocate(trainer, role, self.samples, output)
        entry = self.entries[role]
        logits = output.logits.float().to(self._storage_device)
        index = index.to(self._storage_device)
        # a token window fills its batch's steps (the last window of a split may be shorter than bptt)
        at = (index, view) if self.steps is None else (index, view, slice(0, logits.shape[1]))
        if self.precision == "topk":
            k = min(self.top_k, logits.shape[-1])
            values, indices = logits.topk(k, dim=-1)
            entry["values"][at] = values
            entry["indices"][at] = indices.to(entry["indices"].dtype)
            entry["logsumexp"][at] = logits.logsumexp(dim=-1)
        else:
            entry["logits"][at] = logits.to(entry["logits"].dtype)
        for layer in self.layers:
            store = entry[f"feature:{layer}"]
            store[at] = output.features[layer].to(store.device, store.dtype)

    def _allocate(self, trainer: pl.Trainer, role: str, samples: int, output: NetworkOutput) -> dict[str, Tensor]:
        classes = output.logits.shape[-1]
        steps = () if self.steps is None else (self.steps,)  # a token window: one output per step
        shapes = self._shapes(samples, steps, classes, output)
        megabytes = self.teacher_count * sum(
            math.prod(shape) * torch.empty((), dtype=dtype).element_size() for shape, dtype in shapes.values()) / 2**20
        if self.max_megabytes is not None and megabytes > self.max_megabytes:
            raise Refusal(self._too_large(megabytes, samples, steps, classes, output))
        entry = {name: self._tensor(trainer, role, name, shape, dtype) for name, (shape, dtype) in shapes.items()}
        entry["num_classes"] = torch.tensor(classes)  # metadata, on the host
        return entry

    def _shapes(self, samples: int, steps: tuple[int, ...], classes: int,
                output: NetworkOutput) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """The cache's tensors for one teacher: name -> (shape, dtype)."""
        half = torch.float16 if self.precision == "fp16" else torch.float32
        lead = (samples, self.views, *steps)
        shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        if self.precision == "topk":
            k = min(self.top_k, classes)
            shapes |= {"values": ((*lead, k), torch.float32), "indices": ((*lead, k), torch.int32),
                       "logsumexp": (lead, torch.float32)}
        else:
            shapes["logits"] = ((*lead, classes), half)
        for layer in self.layers:
            feature = output.features[layer]
            shapes[f"feature:{layer}"] = ((*lead, *feature.shape[1 + len(steps):]), half)
        return shapes

    def _too_large(self, megabytes: float, samples: int, steps: tuple[int, ...], classes: int,
                   output: NetworkOutput) -> str:
        what = f"{samples:,} samples x {self.views} view(s)" if not steps else f"{samples * steps[0]:,} token positions"
        message = (f"the teacher cache would take {megabytes:,.0f} MB ({what} x {self.teacher_count} "
                   f"teacher(s), {self.precision}, {classes:,} classes), over max_megabytes {self.max_megabytes:,.0f}")
        if self.precision != "topk":
            saved, self.precision = self.precision, "topk"
            topk = self.teacher_count * sum(math.prod(shape) * torch.empty((), dtype=dtype).element_size()
                                                    for shape, dtype in self._shapes(samples, steps, classes,
                                                                                     output).values()) / 2**20
            self.precision = saved
            message += f"; precision: topk (top_k {self.top_k}) would take {topk:,.0f} MB"
        return message + "; or raise max_megabytes (storage: disk keeps it out of memory)"

    def _tensor(self, trainer: pl.Trainer, role: str, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        if self.storage != "disk":
            return torch.zeros(shape, dtype=dtype, device=self._storage_device)
        folder = self._folder or self.dirpath or checkpoint_folder(trainer) / "teacher_cache"
        path = folder / f"{role}-{name.replace(':', '-').replace('/', '_')}.npy"
        numpy_dtype = torch.empty((), dtype=dtype).numpy().dtype
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            np.lib.format.open_memmap(path, mode="w+", dtype=numpy_dtype, shape=shape).flush()
        trainer.strategy.barrier()
        return torch.from_numpy(np.lib.format.open_memmap(path, mode="r+"))

    def _combine(self, trainer: pl.Trainer) -> None:
        """Give every process every share: sum the zero-filled memory shares; flush the shared files."""
        if trainer.world_size == 1:
            return
        for entry in self.entries.values():
            for name, tensor in entry.items():
                if name == "num_classes":
                    continue
                if self.storage == "disk":
                    getattr(tensor.numpy(), "flush", lambda: None)()
                    continue
                # on the process's device: NCCL reduces no host tensors; the other processes' shares are zeros here
                wide = tensor.to(trainer.strategy.root_device, torch.float64 if tensor.is_floating_point()
                                 else torch.int64)
                dist.all_reduce(wide, op=dist.ReduceOp.SUM)
                tensor.copy_(wide.to(tensor.dtype))
        trainer.strategy.barrier()


def _token_windows(datamodule: Any) -> tuple[int, int] | None:
    """``(windows, steps)`` of a token-stream data module's training batches; ``None`` for per-sample data."""
    windows = getattr(datamodule, "training_windows", None)
    return windows() if callable(windows) else None


def topk_logits(values: Tensor, indices: Tensor, logsumexp: Tensor, num_classes: int) -> Tensor:
    """Logits rebuilt from the top ``k`` and the log-sum-exp of all: the softmax is exact on the top ``k``, the
    remaining mass spread evenly over the other classes.

    Example:
        >>> z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
        >>> values, indices = z.topk(2)
        >>> rebuilt = topk_logits(values, indices, z.logsumexp(1), 4)
        >>> torch.allclose(rebuilt.softmax(1)[0, :2], z.softmax(1)[0, :2])
        True
    """
    k = values.shape[-1]
    kept = torch.exp(values - logsumexp.unsqueeze(-1)).sum(dim=-1)
    rest = (1 - kept).clamp(min=torch.finfo(values.dtype).tiny) / max(num_classes - k, 1)
    logits = (rest.log() + logsumexp).unsqueeze(-1).expand(*values.shape[:-1], num_classes).clone()
    return logits.scatter(-1, indices, values)

