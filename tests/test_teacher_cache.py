"""The teacher-output cache: exact targets on replayed views, never stale, same training as without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from pytorch_lightning import Callback, Trainer, seed_everything

from lightning_kd import BornAgain, DistributionMatchingKD, MultiTeacherKD, VanillaKD
from lightning_kd.callbacks import Generations, TeacherOutputCache
from lightning_kd.callbacks.teacher_cache import topk_logits
from lightning_kd.data import CIFAR10DataModule, DigitsDataModule, ImageFolderDataModule
from lightning_kd.models import MLP, SmallCNN
from tests.conftest import write_tiny_cifar
from tests.helpers import cpu_trainer

# fp32 kernels may round the pre-pass's larger batches differently from a training batch: bit for bit on AMD EPYC
# (AVX2), up to 4e-6 relative on an AVX-512 Xeon; a wrong view or a stale teacher is off by orders of magnitude more
BATCHED_ROUNDING = 1e-5


class TargetProbe(Callback):
    """At every training batch: what the task is served, against the teachers run on that very batch."""

    def __init__(self) -> None:
        self.worst: dict[str, float] = {}
        self.batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not pl_module.teachers:  # Born-Again's generation 0 learns from labels
            return
        served = pl_module.teacher_outputs(batch, pl_module.cached_teacher_layers())
        online = pl_module.teachers.outputs(batch["input"], pl_module.cached_teacher_layers())
        for role, (a, b) in zip(pl_module.teachers, zip(served, online, strict=True), strict=True):
            pairs = [("logits", a.logits, b.logits), *((k, a.features[k], b.features[k]) for k in b.features)]
            for name, x, y in pairs:
                key = f"{role}/{name}"
                error = float(((x - y).abs() / y.abs().clamp(min=1e-3)).max())
                self.worst[key] = max(self.worst.get(key, 0.0), error)
        self.batches += 1


def _cifar(tmp_path: Path, views: int | None = 3) -> CIFAR10DataModule:
    write_tiny_cifar(tmp_path, 10, train_per_file=8)
    return CIFAR10DataModule(root=tmp_path, batch_size=8, num_workers=0, val_fraction=0.25,
                             augmentation_views=views, augmentation_seed=0)


def _kd(seed: int = 0) -> VanillaKD:
    torch.manual_seed(seed)
    return VanillaKD(MLP(input_shape=(3, 32, 32), hidden_sizes=(16,), num_classes=10),
                     SmallCNN(widths=(4, 8), num_classes=10, in_channels=3))


@pytest.fixture(autouse=True)
def _cifar_files(skip_cifar_checksums: None) -> None:
    """Tiny CIFAR files in the real format (their checksums cannot match)."""


# -- the targets ---------------------------------------------------------------------------------------
def test_fp32_targets_are_the_teachers_outputs_on_the_replayed_views(tmp_path: Path) -> None:
    seed_everything(0)
    probe, cache = TargetProbe(), TeacherOutputCache()
    trainer = cpu_trainer(max_epochs=4, callbacks=[cache, probe])
    trainer.fit(_kd(), datamodule=_cifar(tmp_path))
    assert probe.batches == 4 * 4 and cache.fills == 1 and cache.views == 3
    assert probe.worst["teacher/logits"] <= BATCHED_ROUNDING  # although the pre-pass runs larger batches


@pytest.mark.parametrize("storage", ["memory", "device"])
def test_first_use_fill_serves_what_it_computed_and_computes_each_view_once(tmp_path: Path, storage: str) -> None:
    seed_everything(0)
    probe = TargetProbe()
    cache = TeacherOutputCache(fill="first_use", precision="topk", top_k=10, storage=storage)
    cpu_trainer(max_epochs=4, callbacks=[cache, probe]).fit(_kd(), datamodule=_cifar(tmp_path))
    assert bool(cache.filled.all()) and cache.fills == 1
    # epochs 0-2 show views 0-2, each batch computed once; epoch 3 shows view 0 again: served
    assert cache.online_batches == 3 * 4 and probe.batches == 4 * 4
    assert probe.worst["teacher/logits"] < 1e-5  # top-10 of 10 classes: exact


def test_fp16_and_topk_targets_are_within_their_documented_error(tmp_path: Path) -> None:
    seed_everything(0)
    probe = TargetProbe()
    cpu_trainer(max_epochs=2, callbacks=[TeacherOutputCache(precision="fp16"), probe]).fit(
        _kd(), datamodule=_cifar(tmp_path))
    assert 0 < probe.worst["teacher/logits"] <= 2**-11 + 1e-6
    z = torch.randn(6, 10) * 3
    values, indices = z.topk(3)
    rebuilt = topk_logits(values, indices, z.logsumexp(1), 10)
    p, q = z.softmax(1), rebuilt.softmax(1)
    assert torch.allclose(q.gather(1, indices), p.gather(1, indices), atol=1e-6)  # the top k exactly
    rest = 1 - p.gather(1, indices).sum(1, keepdim=True)
    others = torch.ones_like(q).scatter(1, indices, 0).bool()
    assert torch.allclose(q[others].view(6, 7), (rest / 7).expand(6, 7), atol=1e-6)  # the rest spread evenly


def test_a_distribution_matching_teachers_features_are_cached_too(tmp_path: Path) -> None:
    seed_everything(0)
    torch.manual_seed(0)
    task = DistributionMatchingKD(MLP(input_shape=(3, 32, 32), hidden_sizes=(16,), num_classes=10),
                                  SmallCNN(widths=(4, 8), num_classes=10, in_channels=3),
                                  matches=[{"distance": "mmd_linear", "teacher_layer": "body.2", "weight": 1.0}])
    probe = TargetProbe()
    cpu_trainer(max_epochs=2, callbacks=[TeacherOutputCache(storage="disk", dirpath=tmp_path / "cache"), probe]).fit(
        task, datamodule=_cifar(tmp_path))
    assert probe.worst["teacher/body.2"] <= BATCHED_ROUNDING
    assert any((tmp_path / "cache").glob("teacher-feature-body.2.npy"))


class AutocastSpy(torch.nn.Module):
    """A teacher that records, at each forward, the autocast dtype it runs under on the CPU (``None``: off)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.seen = network, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return self.network(x)


@pytest.mark.parametrize(("precision", "fast", "expected"), [
    ("bf16-mixed", None, torch.bfloat16),  # as the teacher runs in a bf16-mixed training step
    ("bf16-mixed", "32", None),  # FastTeacher(precision="32"): fp32 there too
    ("32-true", None, None),
])
def test_the_pre_pass_runs_the_teachers_as_a_training_step_would(tmp_path: Path, precision: str, fast: str | None,
                                                                 expected: torch.dtype | None) -> None:
    from lightning_kd.callbacks import FastTeacher

    torch.manual_seed(0)
    spy = AutocastSpy(SmallCNN(widths=(4, 8), num_classes=10, in_channels=3))
    task = VanillaKD(MLP(input_shape=(3, 32, 32), hidden_sizes=(16,), num_classes=10), spy)
    class FromTheFitsStart(Callback):  # the setup's shape check runs the networks once, outside any step
        def on_fit_start(self, trainer: Trainer, pl_module: VanillaKD) -> None:
            spy.seen.clear()

    callbacks = [FromTheFitsStart(), TeacherOutputCache(), *([FastTeacher(precision=fast)] if fast else [])]
    cpu_trainer(max_epochs=1, precision=precision, limit_val_batches=0, callbacks=callbacks).fit(
        task, datamodule=_cifar(tmp_path))
    fills = spy.seen  # the pre-pass's forwards: every training batch is then served from the cache
    assert fills and set(fills) == {expected}


# -- the same training -----------------------------------------------------------------------------------
def _fit(tmp_path: Path, cache: TeacherOutputCache | None, task_factory=_kd) -> list[torch.Tensor]:
    seed_everything(0)
    task = task_factory()
    callbacks = [cache] if cache is not None else []
    cpu_trainer(max_epochs=3, callbacks=callbacks).fit(task, datamodule=_cifar(tmp_path))
    return [p.detach().clone() for p in task.student.parameters()]


def _largest_difference(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(first, second, strict=True))


def _assert_same_weights(tmp_path: Path, cache: TeacherOutputCache, task_factory=None) -> None:
    """The cached fit's weights are those of the uncached fit, up to the rounding of the targets batched otherwise
    (bit for bit on AMD EPYC; 3e-8 after three epochs on an AVX-512 Xeon), or how far a second uncached fit lands."""
    factory = {} if task_factory is None else {"task_factory": task_factory}
    without, again = _fit(tmp_path, None, **factory), _fit(tmp_path, None, **factory)
    with_cache = _fit(tmp_path, cache, **factory)
    assert _largest_difference(without, with_cache) <= max(_largest_difference(without, again), 1e-6)


@pytest.mark.parametrize("storage", ["memory", "device", "disk"])
def test_training_with_the_cache_gives_the_weights_of_training_without_it(tmp_path: Path, storage: str) -> None:
    _assert_same_weights(tmp_path, TeacherOutputCache(storage=storage, dirpath=tmp_path / "cache"))


def test_several_teachers_are_cached(tmp_path: Path) -> None:
    def factory() -> MultiTeacherKD:
        torch.manual_seed(0)
        return MultiTeacherKD(MLP(input_shape=(3, 32, 32), hidden_sizes=(16,), num_classes=10),
                              [SmallCNN(widths=(4, 8), num_classes=10, in_channels=3),
                               MLP(input_shape=(3, 32, 32), hidden_sizes=(8,), num_classes=10)], weighting="ebkd")

    _assert_same_weights(tmp_path, TeacherOutputCache(), factory)


def test_the_cache_fills_again_after_each_promotion_and_never_serves_a_stale_target(tmp_path: Path) -> None:
    seed_everything(0)
    task = BornAgain(MLP(hidden_sizes=(16,), num_classes=10), loss="ban")
    probe, cache = TargetProbe(), TeacherOutputCache()
    generations = Generations(generations=2, epochs=1, dirpath=tmp_path)
    trainer = cpu_trainer(max_epochs=3, callbacks=[generations, cache, probe])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=64))
    assert cache.fills == 2  # one per teacher: the students of generations 0 and 1
    assert probe.worst["teacher/logits"] <= BATCHED_ROUNDING  # each generation served its own teacher's outputs


# -- refusals ---------------------------------------------------------------------------------------------
def _folder(root: Path, style: str) -> ImageFolderDataModule:
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (40, 30), (i * 20, 40 * (name == "dog"), 0)).save(root / name / f"{i}.png")
    return ImageFolderDataModule(root, image_size=32, transform_style=style, batch_size=8, num_workers=0,
                                 val_fraction=0.2, test_fraction=0.2)


def _folder_kd() -> VanillaKD:
    return VanillaKD(MLP(input_shape=(3, 32, 32), hidden_sizes=(8,), num_classes=2),
                     SmallCNN(widths=(4,), num_classes=2, in_channels=3))


def test_an_augmentation_that_cannot_be_replayed_is_refused_unless_accepted(tmp_path: Path) -> None:
    data = _folder(tmp_path / "images", "imagenet")
    with pytest.raises(ValueError, match="augmented by torchvision's RandomResizedCrop and RandomHorizontalFlip, "
                                         "which cannot be replayed"):
        cpu_trainer(callbacks=[TeacherOutputCache()]).fit(_folder_kd(), datamodule=data)
    cache = TeacherOutputCache(reuse_unaugmented_targets=True)
    cpu_trainer(callbacks=[cache]).fit(_folder_kd(), datamodule=data)
    assert cache.fills == 1 and cache.views == 1


def test_a_new_view_every_epoch_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set the data module's augmentation_views"):
        cpu_trainer(callbacks=[TeacherOutputCache()]).fit(_kd(), datamodule=_cifar(tmp_path, views=None))


def test_a_task_without_teachers_is_refused() -> None:
    from lightning_kd import Classifier

    with pytest.raises(ValueError, match="Classifier has no teacher: use it with a distillation method"):
        cpu_trainer(callbacks=[TeacherOutputCache()]).fit(Classifier(MLP(num_classes=10)),
                                                          datamodule=DigitsDataModule())


# -- DDP ----------------------------------------------------------------------------------------------------
class StudentReport(Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_fit_end(self, trainer, pl_module) -> None:
        sums = [float(p.double().sum()) for p in pl_module.student.parameters()]
        (self.path.parent / f"{self.path.name}-rank{trainer.global_rank}.json").write_text(json.dumps(sums))


def _cached_and_uncached_under_ddp(folder: Path) -> None:
    disk = TeacherOutputCache(storage="disk", dirpath=folder / "shared")  # one set of files, both processes
    for name, extra in (("online", []), ("cached", [TeacherOutputCache()]), ("disk", [disk])):
        seed_everything(0)
        torch.manual_seed(0)
        task = VanillaKD(MLP(hidden_sizes=(16,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10))
        trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=2, callbacks=[*extra, StudentReport(folder / name)])
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.ddp(scenario=_cached_and_uncached_under_ddp)
def test_under_ddp_the_cached_run_equals_the_uncached_one(ddp_run: Path) -> None:
    tmp_path = ddp_run
    runs = {name: [json.loads((tmp_path / f"{name}-rank{r}.json").read_text()) for r in (0, 1)]
            for name in ("online", "cached", "disk")}
    assert runs["cached"][0] == runs["cached"][1] and runs["disk"][0] == runs["disk"][1]  # the ranks agree
    assert runs["online"][0] == runs["cached"][0] == runs["disk"][0]
    assert any((tmp_path / "shared").glob("teacher-logits.npy"))


def test_the_cache_and_the_fast_teacher_work_from_the_command_line(in_tmp: Path) -> None:
    from lightning_kd.cli import main
    from tests.conftest import CONFIGS

    quick = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
             "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    main(["fit", "--config", str(CONFIGS / "mnist5k_teacher.yaml"), *quick])
    main(["fit", "--config", str(CONFIGS / "mnist5k_kd.yaml"), *quick,
          "--trainer.callbacks+=lightning_kd.callbacks.TeacherOutputCache", "--trainer.callbacks.precision", "fp16",
          "--trainer.callbacks+=lightning_kd.callbacks.FastTeacher", "--trainer.callbacks.precision", "bf16"])
    assert (in_tmp / "checkpoints/mnist5k_kd/latest/kd.ckpt").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (run on one: the cache on the device)")
def test_on_a_gpu_the_device_cache_lives_there_and_serves_the_teachers_outputs(tmp_path: Path) -> None:
    seed_everything(0)
    probe, cache = TargetProbe(), TeacherOutputCache(storage="device")
    trainer = Trainer(accelerator="cuda", devices=1, max_epochs=4, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[cache, probe])
    trainer.fit(_kd(), datamodule=_cifar(tmp_path))
    assert cache.entries["teacher"]["logits"].device.type == "cuda" and probe.batches == 4 * 4
    assert probe.worst["teacher/logits"] < 1e-5  # cuDNN may pick other kernels for the pre-pass's larger batches


def test_the_disk_cache_is_the_runs_own_and_a_live_run_keeps_it(tmp_path: Path) -> None:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_kd.callbacks.output_lock import FolderLockedError, acquire, release

    # issue 23: two runs in one folder shared ./teacher_cache, and the second rewrote the first's targets
    checkpoint = ModelCheckpoint(tmp_path / "run_a", "kd")
    cpu_trainer(max_epochs=1, enable_checkpointing=True, default_root_dir=tmp_path,
                callbacks=[checkpoint, TeacherOutputCache(storage="disk")]).fit(_kd(), datamodule=_cifar(tmp_path))
    assert any((tmp_path / "run_a/teacher_cache").glob("teacher-logits.npy"))
    assert not (tmp_path / "teacher_cache").exists()
    held = acquire(tmp_path / "shared")  # another live run writes this folder
    try:
        with pytest.raises(FolderLockedError):
            cpu_trainer(max_epochs=1, callbacks=[TeacherOutputCache(storage="disk", dirpath=tmp_path / "shared")]).fit(
                _kd(), datamodule=_cifar(tmp_path))
    finally:
        release(held)
    assert not any((tmp_path / "shared").glob("*.npy"))
