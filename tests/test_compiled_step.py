"""The compiled training step (``CompiledStep``) against the eager one, on a CPU with inductor."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._dynamo.utils import counters

from lightning_kd import Classifier, DeepMutualLearning, VanillaKD
from lightning_kd.callbacks import CompiledStep, TeacherOutputCache
from lightning_kd.cli import main
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import NonFiniteLossError, Refusal
from lightning_kd.models import MLP, SmallCNN
from lightning_kd.optim import SGD
from tests.conftest import CONFIGS, write_fashion
from tests.helpers import StepLosses, cpu_trainer


def distil(callbacks: list[Any], teacher: torch.nn.Module, drop_last: bool = False) -> tuple[list[float], Any]:
    torch.manual_seed(1)
    task = VanillaKD(SmallCNN(widths=(4, 8), num_classes=10), teacher, temperature=4.0, lr_scheduler="none")
    losses = StepLosses()
    data = DigitsDataModule(batch_size=50)  # 1,293 training images: a last partial batch of 43
    data.drop_last_train = drop_last
    trainer = cpu_trainer(max_epochs=1, limit_val_batches=0, callbacks=[losses, *callbacks])
    trainer.fit(task, datamodule=data)
    return losses.losses, trainer


def test_the_compiled_step_equals_the_eager_step_over_20_steps() -> None:
    torch.manual_seed(0)
    teacher = SmallCNN(widths=(8, 16), num_classes=10)
    # the cache in the device's memory: its gather is traced into the compiled region
    eager_losses, eager = distil([TeacherOutputCache(storage="device")], teacher, drop_last=True)
    compiled = CompiledStep(backend="inductor")
    counters.clear()
    losses, trainer = distil([TeacherOutputCache(storage="device"), compiled], teacher)
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]  # one graph, the gather in it
    assert compiled.fused and trainer.optimizers[0].param_groups[0]["fused"]
    # the callback dropped the last partial batch (43 images): 25 steps of 50
    assert len(losses) == len(eager_losses) == trainer.global_step == 25
    assert losses[:20] == pytest.approx(eager_losses[:20], rel=1e-4, abs=1e-6)
    assert losses[1] != losses[0]  # it trains
    weights, eager_weights = trainer.lightning_module.student.state_dict(), eager.lightning_module.student.state_dict()
    for name, value in weights.items():
        torch.testing.assert_close(value, eager_weights[name], rtol=1e-4, atol=1e-5, msg=name)
    assert "training_losses" not in trainer.lightning_module.__dict__  # the task is eager again after the fit
    assert trainer.datamodule.drop_last_train is False  # and the data module as it was given


def test_random_numbers_in_a_compiled_step_are_the_eager_steps_unless_told_otherwise() -> None:
    """Dropout in the student: inductor's own generator gives other masks; eager_random (the default) keeps torch's."""
    def fit(callbacks: list[Any]) -> list[float]:
        torch.manual_seed(0)
        task = VanillaKD(MLP(hidden_sizes=(32,), dropout=0.5, num_classes=10), MLP(hidden_sizes=(16,), num_classes=10),
                         lr_scheduler="none")
        losses = StepLosses()
        cpu_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=0, callbacks=[losses, *callbacks]).fit(
            task, datamodule=DigitsDataModule(batch_size=32))
        return losses.losses

    eager = fit([])
    assert fit([CompiledStep()]) == pytest.approx(eager, rel=1e-4, abs=1e-6)
    assert fit([CompiledStep(eager_random=False)]) != pytest.approx(eager, rel=1e-2)


@pytest.mark.parametrize("clip", [None, 0.5])
def test_under_mixed_precision_the_fused_step_trains_as_the_eager_one_with_or_without_clipping(clip) -> None:
    """Mixed precision: the fused kernel is marked to unscale the gradients itself (a 16-mixed scaler hands it the
    scale), unless they are clipped, which reads them unscaled before the step; Lightning refuses to clip for an
    optimizer so marked. (On a CPU Lightning runs 16-mixed as bf16-mixed, without a scaler.)"""
    def fit(callbacks: list[Any]) -> list[float]:
        torch.manual_seed(0)
        task = Classifier(SmallCNN(widths=(8, 16), num_classes=10), lr_scheduler="none")
        losses = StepLosses()
        trainer = cpu_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=0, precision="bf16-mixed",
                              gradient_clip_val=clip, callbacks=[losses, *callbacks])
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
        return losses.losses

    eager = fit([])
    compiled = CompiledStep(backend="aot_eager")
    assert fit([compiled]) == pytest.approx(eager, rel=1e-3) and compiled.fused


def test_a_checkpoint_of_a_compiled_run_keeps_the_optimizer_as_built(tmp_path: Path) -> None:
    """The fused kernel is CompiledStep's: a checkpoint records the optimizer as configured, so an eager resume
    steps unfused, and a compiled resume fuses again."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def fit(epochs: int, callbacks: list[Any], ckpt_path: Path | None = None) -> Any:
        torch.manual_seed(0)
        task = Classifier(SmallCNN(widths=(8, 16), num_classes=10), lr_scheduler="none")
        trainer = cpu_trainer(max_epochs=epochs, limit_train_batches=3, limit_val_batches=1, enable_checkpointing=True,
                              callbacks=[*callbacks, ModelCheckpoint(dirpath=tmp_path / str(epochs), save_last=True)])
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
        return trainer

    compiled = fit(1, [CompiledStep(backend="aot_eager")])
    assert compiled.optimizers[0].param_groups[0]["fused"]  # it stepped fused
    saved = torch.load(tmp_path / "1/last.ckpt", weights_only=False)["optimizer_states"][0]["param_groups"][0]
    assert not saved["fused"] and saved["foreach"] is None  # SGD as built: torch picks its kernel
    assert not fit(2, [], tmp_path / "1/last.ckpt").optimizers[0].param_groups[0]["fused"]
    assert fit(3, [CompiledStep(backend="aot_eager")], tmp_path / "1/last.ckpt").optimizers[0].param_groups[0]["fused"]


def test_the_non_finite_stop_fires_in_a_compiled_step() -> None:
    torch.manual_seed(0)
    task = Classifier(SmallCNN(widths=(8, 16), num_classes=10), optimizer=functools.partial(SGD, lr=1e6))
    trainer = cpu_trainer(max_epochs=1, callbacks=[CompiledStep(backend="aot_eager")])
    with pytest.raises(NonFiniteLossError, match=r"training stopped at step 4 \(epoch 0\): train/loss = nan"):
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))


def test_what_a_compiled_step_cannot_do_is_refused_before_training() -> None:
    dml = DeepMutualLearning([MLP(hidden_sizes=(8,), num_classes=10), MLP(hidden_sizes=(8,), num_classes=10)])
    with pytest.raises(Refusal, match="steps its optimizers itself"):
        cpu_trainer(callbacks=[CompiledStep(backend="aot_eager")]).fit(dml, datamodule=DigitsDataModule())
    with pytest.raises(Refusal, match="CompiledStep mode must be one of default, reduce-overhead"):
        CompiledStep(mode="fast")  # type: ignore[arg-type]
    task = Classifier(MLP(hidden_sizes=(8,), num_classes=10))
    with pytest.raises(Refusal, match="captures CUDA graphs, and this run trains on cpu"):
        cpu_trainer(callbacks=[CompiledStep(mode="reduce-overhead")]).fit(task, datamodule=DigitsDataModule())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (CUDA graphs)")
def test_on_a_gpu_the_graph_captured_step_equals_the_eager_step_and_still_stops_on_nan() -> None:
    def fit(callbacks: list[Any], drop_last: bool) -> tuple[list[float], Any]:
        torch.manual_seed(1)
        task = VanillaKD(SmallCNN(widths=(4, 8), num_classes=10), teacher, temperature=4.0, lr_scheduler="none")
        losses, data = StepLosses(), DigitsDataModule(batch_size=50)
        data.drop_last_train = drop_last
        trainer = cpu_trainer(accelerator="cuda", max_epochs=1, limit_val_batches=0, callbacks=[losses, *callbacks])
        trainer.fit(task, datamodule=data)
        return losses.losses, trainer

    torch.manual_seed(0)
    teacher = SmallCNN(widths=(8, 16), num_classes=10)
    eager_losses, _ = fit([TeacherOutputCache(storage="device")], drop_last=True)
    compiled = CompiledStep()  # reduce-overhead: CUDA graphs
    losses, _ = fit([TeacherOutputCache(storage="device"), compiled], drop_last=False)
    assert compiled.fused and len(losses) == len(eager_losses) == 25
    assert losses[:20] == pytest.approx(eager_losses[:20], rel=1e-3, abs=1e-5)
    task = Classifier(SmallCNN(widths=(8, 16), num_classes=10), optimizer=functools.partial(SGD, lr=1e6))
    # off a CPU the flags wait on the device: read every log_every_n_steps (50), or at the epoch's end (40 steps)
    with pytest.raises(NonFiniteLossError, match=r"a loss was not finite at one of the \d+ steps from step 0"):
        cpu_trainer(accelerator="cuda", callbacks=[CompiledStep()]).fit(task,
                                                                         datamodule=DigitsDataModule(batch_size=32))


def test_the_command_line_runs_a_compiled_step_on_resident_data(in_tmp: Path) -> None:
    write_fashion(in_tmp / "fashion", train=80, test=20)
    main(["fit", "--config", str(CONFIGS / "fashion_mnist_teacher.yaml"), "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1",
          "--data.init_args.root", str(in_tmp / "fashion"), "--data.init_args.batch_size", "16",
          "--data.init_args.train_samples", "70", "--data.init_args.device_resident", "true",
          "--trainer.callbacks+=lightning_kd.callbacks.CompiledStep", "--trainer.callbacks.backend", "aot_eager"])
    written = list((in_tmp / "checkpoints").rglob("*.ckpt"))
    assert written and torch.load(written[0], weights_only=False)["global_step"] == 70 // 16  # partial batch dropped


def test_born_again_generations_train_through_the_compiled_step() -> None:
    from lightning_kd import BornAgain
    from lightning_kd.callbacks import Generations

    torch.manual_seed(0)
    task = BornAgain(SmallCNN(widths=(4, 8), num_classes=10))
    compiled = CompiledStep(backend="aot_eager")
    losses = StepLosses()
    trainer = cpu_trainer(max_epochs=None, limit_train_batches=5, limit_val_batches=1,
                          callbacks=[compiled, Generations(generations=3, epochs=1, print_table=False), losses])
    counters.clear()
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    assert task.generation == 3 and trainer.global_step == 20 and len(losses.losses) == 20
    # a new student is no new graph (the parameters are its inputs): one graph without a teacher, one with, however
    # many generations follow (a graph per generation would reach torch's recompile limit, then run eagerly)
    assert counters["stats"]["unique_graphs"] == 2 and not counters["graph_break"]
    # each generation's fresh optimizer (built at its first epoch's start) steps fused
    assert trainer.optimizers[0].param_groups[0]["fused"] and compiled.fused
