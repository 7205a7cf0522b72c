"""The contract every task of the package keeps, checked on each one, found automatically.

Every task class of the registry (``lightning_kd.tasks.TASKS``) runs through the contract. A
teacher -> student method (a ``DistillationTask`` taking ``student`` and ``teacher``) is built with
digits-sized networks and its defaults; a task that needs other networks gets a builder in ``BUILDERS``.
To check your own task class: ``pytest tests/test_contract.py --task-class mypackage.MyTask``.
"""

from __future__ import annotations

import inspect
import pydoc
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from pytorch_lightning import Callback, seed_everything
from torch import nn

from lightning_kd import (
    FSP,
    BornAgain,
    Classifier,
    DeepMutualLearning,
    DistributionMatchingKD,
    FactorTransfer,
    MultiStudentKD,
    MultiTeacherKD,
    SelfDistillation,
    TeacherFreeKD,
    VanillaKD,
)
from lightning_kd.catalog import task_classes
from lightning_kd.checkpoints import CHECKPOINT_KEY, load_network
from lightning_kd.data import DigitsDataModule
from lightning_kd.models import MLP, MultiExitNetwork, SmallCNN
from lightning_kd.tasks.base import BaseTask
from lightning_kd.tasks.distillation import DistillationTask
from tests.helpers import StepLosses, cpu_trainer


def _factor_transfer() -> dict[str, Any]:
    """FT's transfer phase reads a paraphraser run's checkpoint: one written here, of an untrained paraphraser."""
    first = FactorTransfer(SmallCNN(widths=(8, 16), num_classes=10), SmallCNN(widths=(12, 24), num_classes=10),
                           phase="paraphraser")
    first.build_projectors((1, 8, 8))
    path = Path(tempfile.mkdtemp()) / "paraphraser.ckpt"
    torch.save({"hyper_parameters": {"phase": "paraphraser", "teacher_layers": "stages[-1]", "rate": 0.5},
                "state_dict": first.state_dict()}, path)
    return {"student": SmallCNN(widths=(8, 16), num_classes=10), "teacher": SmallCNN(widths=(12, 24), num_classes=10),
            "paraphraser_ckpt": str(path)}


# Digits-sized networks for each task (fresh ones at every call)
BUILDERS: dict[type[BaseTask], Callable[[], dict[str, Any]]] = {
    Classifier: lambda: {"net": SmallCNN(widths=(8, 16), num_classes=10)},
    VanillaKD: lambda: {"student": MLP(hidden_sizes=(16,), num_classes=10),
                        "teacher": SmallCNN(widths=(8, 16), num_classes=10)},
    BornAgain: lambda: {"student": MLP(hidden_sizes=(16,), num_classes=10),
                        "teacher": SmallCNN(widths=(8, 16), num_classes=10), "loss": "ban+l"},
    DeepMutualLearning: lambda: {"peers": [MLP(hidden_sizes=(16,), num_classes=10),
                                           SmallCNN(widths=(8, 16), num_classes=10)], "scheme": "alternating"},
    DistributionMatchingKD: lambda: {"student": MLP(hidden_sizes=(16,), num_classes=10),
                                     "teacher": SmallCNN(widths=(8, 16), num_classes=10),
                                     "matches": [{"distance": "sliced_wasserstein", "weight": 1.0,
                                                  "class_conditional": "mean"}], "kd_alpha": 0.5},
    MultiTeacherKD: lambda: {"student": MLP(hidden_sizes=(16,), num_classes=10), "weighting": "ae-kd",
                             "teacher": [SmallCNN(widths=(8, 16), num_classes=10),
                                         MLP(hidden_sizes=(8,), num_classes=10)]},
    MultiStudentKD: lambda: {"students": [MLP(hidden_sizes=(16,), num_classes=10),
                                          SmallCNN(widths=(8,), num_classes=10)], "fusion": "fitted",
                             "mutual_weight": 1.0, "teacher": [SmallCNN(widths=(8, 16), num_classes=10),
                                                               MLP(hidden_sizes=(8,), num_classes=10)]},
    SelfDistillation: lambda: {"net": MultiExitNetwork(SmallCNN(widths=(8, 16), num_classes=10), input_shape=(1, 8, 8)),
                               "preset": "journal_code"},
    FSP: lambda: {"student": SmallCNN(widths=(8, 16), num_classes=10),  # equal widths: FSP compares matrices
                  "teacher": SmallCNN(widths=(8, 16), num_classes=10),
                  "student_layers": "stages", "teacher_layers": "stages"},
    FactorTransfer: _factor_transfer,
    TeacherFreeKD: lambda: {"student": MLP(hidden_sizes=(16,), num_classes=10), "mode": "reference",
                            "multiplier": 10.0, "label_smoothing": 0.1, "smoothing_convention": "others"},
}


def builder(task_class: type[BaseTask]) -> Callable[[], dict[str, Any]]:
    """The task's own builder, else the teacher -> student one (digits-sized student and teacher, defaults)."""
    if task_class in BUILDERS:
        return BUILDERS[task_class]
    parameters = inspect.signature(task_class.__init__).parameters
    if issubclass(task_class, DistillationTask) and {"student", "teacher", "student_layers"} <= set(parameters):
        # a method over pairs of layers (its defaults may tap feature maps): two CNNs of other widths
        return lambda: {"student": SmallCNN(widths=(8, 16), num_classes=10),
                        "teacher": SmallCNN(widths=(12, 24), num_classes=10)}
    if issubclass(task_class, DistillationTask) and {"student", "teacher"} <= set(parameters):
        return lambda: {"student": MLP(hidden_sizes=(16,), num_classes=10),
                        "teacher": SmallCNN(widths=(8, 16), num_classes=10)}
    raise AssertionError(f"{task_class.__name__} takes other networks: add a builder for it to BUILDERS")


TASKS = task_classes()


def test_every_task_can_be_built() -> None:
    assert {DistillationTask, BaseTask}.isdisjoint(TASKS)  # abstract bases are not tasks
    for task_class in TASKS:
        builder(task_class)


class ContractWatch(Callback):
    """Checks at every training and validation batch: teachers frozen, in eval, run only via teacher_outputs."""

    def __init__(self) -> None:
        self.train_batches = self.val_batches = self.teacher_calls = 0
        self.inside_teacher_outputs = False
        self.handles: list[Any] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        original = pl_module.teacher_outputs if isinstance(pl_module, DistillationTask) else None
        if original is None:
            return

        def watched(*args: Any, **kwargs: Any) -> Any:
            self.inside_teacher_outputs = True
            try:
                return original(*args, **kwargs)
            finally:
                self.inside_teacher_outputs = False

        pl_module.teacher_outputs = watched
        teachers = pl_module.teacher_networks().values()
        self.handles = [teacher.register_forward_pre_hook(self._teacher_called) for teacher in teachers]

    def on_fit_end(self, trainer, pl_module) -> None:
        for handle in self.handles:
            handle.remove()
        vars(pl_module).pop("teacher_outputs", None)

    def _teacher_called(self, module: nn.Module, inputs: Any) -> None:
        assert self.inside_teacher_outputs, "a teacher ran outside teacher_outputs()"
        assert not torch.is_grad_enabled(), "a teacher ran with gradients enabled"
        self.teacher_calls += 1

    def _check_teachers(self, pl_module: BaseTask) -> None:
        for role, teacher in pl_module.teacher_networks().items():
            assert all(not m.training for m in teacher.modules()), f"{role} left eval mode"
            assert all(not p.requires_grad and p.grad is None for p in teacher.parameters()), f"{role} has grads"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check_teachers(pl_module)
        # every optimizer together (one per peer for mutual learning)
        optimized = [p for optimizer in trainer.optimizers for group in optimizer.param_groups for p in group["params"]]
        teacher_params = {id(p) for t in pl_module.teacher_networks().values() for p in t.parameters()}
        trainable = {id(p) for p in pl_module.parameters() if p.requires_grad}
        assert {id(p) for p in optimized} == trainable, "the optimizer must hold exactly the trainable parameters"
        assert len(optimized) == len(trainable)  # and each once
        assert teacher_params.isdisjoint(trainable)
        # every parameter that trains gets a gradient (a part a preset leaves unused is frozen, e.g. an adapter)
        assert all(p.grad is not None for p in pl_module.network.parameters() if p.requires_grad)
        self.train_batches += 1

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check_teachers(pl_module)
        self.val_batches += 1


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # the package's tasks, and any named with --task-class (a user's own, checked by the same contract)
    if "task_class" in metafunc.fixturenames:
        extra = [pydoc.locate(path) for path in metafunc.config.getoption("task_class") or []]
        missing = [path for path, cls in zip(metafunc.config.getoption("task_class") or [], extra, strict=True)
                   if not inspect.isclass(cls)]
        assert not missing, f"--task-class: cannot import {missing}"
        metafunc.parametrize("task_class", [*TASKS, *extra], ids=lambda c: c.__name__)


def test_task_contract(task_class: type[BaseTask], tmp_path: Path) -> None:
    seed_everything(0)
    build = builder(task_class)
    task = task_class(**build())
    roles = task.networks()
    assert task.handed_on in task.trained_networks() and set(task.trained_networks()) <= set(roles)
    teachers_before = {role: {k: v.clone() for k, v in t.state_dict().items()}
                       for role, t in task.teacher_networks().items()}
    handed_on_before = [p.detach().clone() for p in task.network.parameters()]

    watch = ContractWatch()
    trainer = cpu_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2, callbacks=[watch])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    assert watch.train_batches == 6 and watch.val_batches > 0
    assert watch.teacher_calls > 0 or not task.teacher_networks()
    for role, before in teachers_before.items():  # weights and BatchNorm statistics untouched
        after = task.teacher_networks()[role].state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items()), role
    assert any(not torch.equal(a, b) for a, b in zip(handed_on_before, task.network.parameters(), strict=True))

    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    record = torch.load(path, weights_only=True)[CHECKPOINT_KEY]
    assert set(record["roles"]) == set(roles)
    reloaded = task_class.load_from_checkpoint(path, **build())
    x = torch.randn(4, 1, 8, 8)
    task.eval()
    reloaded.eval()
    torch.testing.assert_close(reloaded(x), task(x))
    for role, network in reloaded.networks().items():
        torch.testing.assert_close(network(x), roles[role].eval()(x), msg=role)
    # the handed-on network loads as a teacher of another task
    handed_on = load_network(path, task_class(**build()).network)
    torch.testing.assert_close(handed_on.eval()(x), task.network(x))
    student = VanillaKD(MLP(hidden_sizes=(8,), num_classes=10), handed_on, teacher_ckpt=None)
    torch.testing.assert_close(student.teacher(x), task.network(x))


def test_every_task_trains_the_same_through_the_compiled_step(task_class: type[BaseTask]) -> None:
    """CompiledStep's graphs (traced by aot_eager: torch's own kernels, so the same numbers) give each task the
    losses of its eager steps, whatever it taps; a task that steps its own optimizers is refused before training."""
    from lightning_kd.callbacks import CompiledStep
    from lightning_kd.errors import Refusal

    def fit(compiled: bool) -> list[float]:
        seed_everything(0)
        task = task_class(**builder(task_class)())
        losses = StepLosses()
        callbacks = [losses, CompiledStep(backend="aot_eager")] if compiled else [losses]
        trainer = cpu_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, callbacks=callbacks)
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
        return losses.losses

    if not task_class(**builder(task_class)()).automatic_optimization:
        with pytest.raises(Refusal, match="steps its optimizers itself"):
            fit(compiled=True)
        return
    eager = fit(compiled=False)
    assert len(eager) == 3 and fit(compiled=True) == pytest.approx(eager, rel=1e-5, abs=1e-6)


def test_compiled_steps_of_two_tasks_in_one_process_tap_their_own_layers() -> None:
    """torch.compile does not guard a module's hooks: a network forward compiled while one task tapped its layers
    ran only those layers' hooks for the next task of the same networks (a KeyError for a layer it tapped besides).
    Tapped forwards run eagerly in a compiled step."""
    from lightning_kd import FitNets
    from lightning_kd.callbacks import CompiledStep

    for layers in ("body.6", "stages"):  # the same networks, then one more layer (body.2, body.6)
        seed_everything(0)
        task = FitNets(SmallCNN(widths=(8, 16), num_classes=10), SmallCNN(widths=(12, 24), num_classes=10),
                       student_layers=layers, teacher_layers=layers)
        losses = StepLosses()
        trainer = cpu_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0,
                              callbacks=[losses, CompiledStep(backend="aot_eager")])
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
        assert len(losses.losses) == 2 and len(task.feature_pairs()) == (2 if layers == "stages" else 1)


class StudentWithAuxiliaryHead(VanillaKD):
    """A task with one more trainable module (an auxiliary head on the student's penultimate features)."""

    def configure_models(self, **models: Any) -> None:
        super().configure_models(**models)
        self.auxiliary_head = nn.Linear(self.student.num_features, 10)

    def training_losses(self, batch):
        losses, logits = super().training_losses(batch)
        from lightning_kd.models import forward_with_taps

        features = forward_with_taps(self.student, batch["input"], "penultimate").features["penultimate"]
        auxiliary = nn.functional.cross_entropy(self.auxiliary_head(features), batch["target"])
        return {**losses, "loss": losses["loss"] + auxiliary, "auxiliary": auxiliary}, logits


def test_a_task_with_an_extra_trainable_head_gets_the_head_updated() -> None:
    seed_everything(0)
    task = StudentWithAuxiliaryHead(MLP(hidden_sizes=(16,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10))
    before = task.auxiliary_head.weight.detach().clone()
    watch = ContractWatch()
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=1, callbacks=[watch])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert {id(p) for p in task.auxiliary_head.parameters()} <= optimized
    assert not torch.equal(task.auxiliary_head.weight, before)
    assert "train/auxiliary_loss" in trainer.callback_metrics
