"""Several students fused (MultiStudentKD): the loss against the formula, the fitted fusion against a brute-force
search, the fused network against a hand computation from the checkpoint, per-student inputs, resume, refusals."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from pytorch_lightning import Callback, seed_everything
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_kd import MultiStudentKD
from lightning_kd.checkpoints import load_network
from lightning_kd.cli import main
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import Refusal
from lightning_kd.losses import fit_fusion_weights, mutual_kl
from lightning_kd.models import MLP, SmallCNN, SoftmaxEnsemble
from tests.helpers import KillAtEpoch, cpu_trainer


def _students() -> list[torch.nn.Module]:
    return [MLP(hidden_sizes=(16,), num_classes=10), SmallCNN(widths=(8,), num_classes=10),
            MLP(hidden_sizes=(8,), num_classes=10)]


def _teachers() -> list[torch.nn.Module]:
    return [SmallCNN(widths=(8, 16), num_classes=10), MLP(hidden_sizes=(32,), num_classes=10)]


def _naive_kl(p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - log_q)).sum(1).mean()


def test_the_loss_is_each_students_multi_teacher_kd_plus_the_mutual_term() -> None:
    torch.manual_seed(0)
    task = MultiStudentKD(_students(), _teachers(), alpha=0.7, temperature=3.0, mutual_weight=0.5).double()
    batch = {"input": torch.randn(6, 1, 8, 8, dtype=torch.float64), "target": torch.randint(0, 10, (6,)),
             "index": torch.arange(6)}
    losses, fused = task.training_losses(batch)
    # the formula, written out: equal fixed weights, KD against the teachers' averaged softened target (the
    # teachers' outputs reach every loss in fp32, whatever precision they ran in)
    with torch.no_grad():
        teacher_logits = torch.stack([t(batch["input"]).float() for t in task.teachers.values()])
    teacher_probabilities = teacher_logits.div(3.0).softmax(-1).double()
    target = teacher_probabilities.mean(0)
    logits = [student(batch["input"]) for student in task.students]
    expected = {}
    for m, z in enumerate(logits):
        kd = 9.0 * _naive_kl(target, (z / 3.0).log_softmax(1))
        expected[f"student_{m + 1}"] = 0.3 * F.cross_entropy(z, batch["target"]) + 0.7 * kd
    mutual = sum(_naive_kl(zl.detach().softmax(1), zm.log_softmax(1)) / 2
                 for (m, zm), (l_index, zl) in itertools.product(enumerate(logits), repeat=2) if m != l_index)
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losses["mutual"], mutual, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losses["loss"], sum(expected.values()) + 0.5 * mutual, rtol=1e-12, atol=1e-12)
    # gradients: every student's, none into a teacher; the fused logits are the weighted mixture's log
    reference = sum(expected.values()) + 0.5 * mutual
    losses["loss"].backward()
    mine = [p.grad.clone() for p in task.students.parameters()]
    task.zero_grad()
    reference.backward()
    for a, b in zip(mine, [p.grad for p in task.students.parameters()], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in task.teachers.parameters())
    torch.testing.assert_close(fused.exp(), torch.stack([z.softmax(1) for z in logits]).mean(0).detach())


def test_the_mutual_term_detaches_each_target() -> None:
    a, b = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    mutual_kl([a, b.detach()]).backward()  # b a constant: only KL(p_b || p_a) moves a
    expected = torch.autograd.grad(_naive_kl(b.detach().softmax(1), a.log_softmax(1)), a)[0]
    torch.testing.assert_close(a.grad, expected)


def test_fitted_fusion_weights_are_the_likelihoods_maximum_over_the_simplex() -> None:
    torch.manual_seed(0)
    targets = torch.randint(0, 4, (200,))
    good = F.one_hot(targets, 4).double() * 0.6 + 0.1
    probabilities = torch.stack([good, torch.rand(200, 4).double().softmax(1), (good + 0.3).div(1 + 4 * 0.3)])
    fitted = fit_fusion_weights(probabilities, targets)

    def nll(w: torch.Tensor) -> float:
        mixture = torch.einsum("m,mnc->nc", w, probabilities)
        return float(-mixture.gather(1, targets[:, None]).log().mean())

    grid = [torch.tensor([a, b, 1 - a - b], dtype=torch.float64) for a in torch.arange(0, 1.001, 0.01).tolist()
            for b in torch.arange(0, 1.001 - a, 0.01).tolist()]
    assert nll(fitted) <= min(nll(w) for w in grid) + 1e-9
    assert float(fitted.sum()) == pytest.approx(1.0) and bool((fitted >= 0).all())


class ValidationOutputs(Callback):
    """The students' probabilities on the whole validation split, recomputed after the fit."""

    def on_fit_end(self, trainer, pl_module) -> None:
        loader = trainer.datamodule.val_dataloader()
        with torch.no_grad():
            batches = [(torch.stack([s(b["input"]).softmax(1) for s in pl_module.students]), b["target"])
                       for b in loader]
        self.probabilities = torch.cat([p for p, _ in batches], dim=1)
        self.targets = torch.cat([t for _, t in batches])


def test_fitted_fusion_is_fitted_on_the_validation_split_after_training_and_kept_in_the_fused_network() -> None:
    seed_everything(0)
    task = MultiStudentKD(_students()[:2], _teachers(), fusion="fitted")
    outputs = ValidationOutputs()
    cpu_trainer(max_epochs=2, limit_train_batches=6, callbacks=[outputs]).fit(task, DigitsDataModule(batch_size=64))
    expected = fit_fusion_weights(outputs.probabilities, outputs.targets)
    torch.testing.assert_close(task.student.weights.double(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(task.student.weights, torch.tensor([0.5, 0.5]))
    assert "weights" in task.student.state_dict()
    fitted = task.student.weights.clone()
    alone = task.student_networks()["student_2"]  # a plain copy of one student, to use or save alone
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(alone(x), task.students[1].eval()(x))
    assert alone is not task.students[1]
    assert task.summary_columns() == {"student": {f"student_{m + 1} weight": float(w) for m, w in enumerate(fitted)}}
    cpu_trainer().validate(task, DigitsDataModule(batch_size=64))  # scoring a trained model refits nothing
    assert torch.equal(task.student.weights, fitted)


def test_the_fused_network_loads_alone_from_a_cli_checkpoint_and_is_the_students_weighted_average(
        in_tmp: Path) -> None:
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 2, "limit_train_batches": 4, "logger": False, "enable_progress_bar": False,
                    "callbacks": [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": "checkpoints/fused", "filename": "fused"}}]},
        "model": {"class_path": "lightning_kd.MultiStudentKD", "init_args": {
            "students": [{"class_path": "lightning_kd.models.MLP", "init_args": {"hidden_sizes": [16]}},
                         {"class_path": "lightning_kd.models.SmallCNN", "init_args": {"widths": [8]}}],
            "teacher": [{"class_path": "lightning_kd.models.SmallCNN", "init_args": {"widths": [8, 16]}},
                        {"class_path": "lightning_kd.models.MLP", "init_args": {"hidden_sizes": [32]}}],
            "fusion": "fitted", "weighting": "ebkd"}},
        "data": {"class_path": "lightning_kd.data.DigitsDataModule", "init_args": {"batch_size": 64}},
    }
    (in_tmp / "fused.yaml").write_text(yaml.safe_dump(config))
    main(["fit", "--config", "fused.yaml"])
    path = in_tmp / "checkpoints/fused/latest/fused.ckpt"
    fused = load_network(path).eval()  # one plain network, built from the checkpoint alone
    assert isinstance(fused, SoftmaxEnsemble)
    # by hand: each student rebuilt from its weights in the checkpoint, and the fusion weights stored there
    state = torch.load(path, weights_only=False)["state_dict"]
    students = [MLP(input_shape=(1, 8, 8), hidden_sizes=(16,), num_classes=10),
                SmallCNN(widths=(8,), num_classes=10, in_channels=1)]
    for m, student in enumerate(students):
        prefix = f"student.members.{m}."
        student.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
        student.eval()
    weights = state["student.weights"]
    assert not torch.allclose(weights, torch.tensor([0.5, 0.5]))  # fitted, and stored
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        by_hand = sum(w * s(x).softmax(1) for w, s in zip(weights, students, strict=True))
        torch.testing.assert_close(fused(x).softmax(1), by_hand, rtol=1e-5, atol=1e-6)


class ViewsDigits(DigitsDataModule):
    """Digits with a second view of each image: mirrored left to right."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return {**batch, "mirrored": batch["input"].flip(-1)}


class InputProbe(Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        handle = pl_module.students[1].register_forward_pre_hook(
            lambda module, inputs: self.seen.append((inputs[0].detach(), batch["mirrored"])))
        self._handle = handle

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._handle.remove()


def test_each_student_reads_its_own_input_key() -> None:
    seed_everything(0)
    probe = InputProbe()
    task = MultiStudentKD(_students()[:2], _teachers(), input_keys=["input", "mirrored"])
    cpu_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, callbacks=[probe]).fit(
        task, ViewsDigits(batch_size=32))
    assert probe.seen and all(torch.equal(seen, mirrored) for seen, mirrored in probe.seen)
    with pytest.raises(Refusal, match="no 'sideways'"):
        cpu_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1).fit(
            MultiStudentKD(_students()[:2], _teachers(), input_keys=["input", "sideways"]), ViewsDigits(batch_size=32))


def _fit(folder: Path, callbacks: tuple = (), ckpt_path: str | None = None) -> MultiStudentKD:
    seed_everything(0)
    task = MultiStudentKD(_students()[:2], _teachers(), fusion="fitted", mutual_weight=1.0, weighting="ca-mkd")
    cpu_trainer(max_epochs=3, limit_train_batches=4, enable_checkpointing=True, deterministic=True,
                callbacks=[ModelCheckpoint(folder, save_last=True), *callbacks]).fit(
        task, DigitsDataModule(batch_size=64), ckpt_path=ckpt_path)
    return task


def test_a_killed_run_resumes_to_the_same_students_and_fusion(tmp_path: Path) -> None:
    uninterrupted = _fit(tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated kill"):
        _fit(tmp_path / "b", (KillAtEpoch(2),))
    resumed = _fit(tmp_path / "b", ckpt_path=str(tmp_path / "b/last.ckpt"))
    for a, b in zip(uninterrupted.student.state_dict().values(), resumed.student.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"students": [MLP(num_classes=10)]}, "at least 2 networks"),
    ({"fusion": "fitted", "fusion_weights": [1.0, 1.0]}, "fusion_weights are for fusion 'fixed'"),
    ({"fusion_weights": [1.0, -1.0]}, "fusion weights must be finite, >= 0 and not all 0"),
    ({"fusion_weights": [1.0]}, "fusion weights has 1 entries for 2 members; give one per member"),
    ({"input_keys": ["input"]}, "names 1 inputs for 2 students"),
    ({"mutual_weight": -1.0}, "mutual_weight"),
])
def test_bad_settings_are_refused_in_one_line(arguments: dict, message: str) -> None:
    settings = {"students": _students()[:2], "teacher": _teachers(), **arguments}
    with pytest.raises((Refusal, ValueError), match=message):
        MultiStudentKD(**settings)
