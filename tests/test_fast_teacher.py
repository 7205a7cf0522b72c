"""The fast teacher path: reduced-precision, channels-last, compiled teachers; fp32 for the losses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pytorch_lightning import seed_everything

from lightning_kd import BornAgain, Classifier
from lightning_kd.callbacks import FastTeacher, Generations
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import hinton_kd_loss
from lightning_kd.models import MLP, SmallCNN
from lightning_kd.teachers import TeacherForward, Teachers
from tests.helpers import cpu_trainer


def _teachers(**settings) -> tuple[Teachers, torch.Tensor]:
    torch.manual_seed(0)
    teachers = Teachers([SmallCNN(widths=(8, 16), num_classes=10)])
    teachers.configure_forward(TeacherForward(**settings))
    return teachers, torch.randn(16, 1, 8, 8)


def test_a_bf16_teachers_kd_loss_is_within_tolerance_of_fp32() -> None:
    reference, x = _teachers()
    fast, _ = _teachers(precision="bf16")
    (exact,), (approximate,) = reference.outputs(x), fast.outputs(x, ["body.2"])
    assert approximate.logits.dtype == torch.float32 and approximate.features["body.2"].dtype == torch.float32
    assert not torch.equal(approximate.logits, exact.logits)  # it did run in bf16
    student, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    loss_exact = hinton_kd_loss(student, exact.logits, y, alpha=0.9, temperature=4.0)["loss"]
    loss_fast = hinton_kd_loss(student, approximate.logits, y, alpha=0.9, temperature=4.0)["loss"]
    assert float(loss_fast) == pytest.approx(float(loss_exact), rel=2e-2)


def test_fp32_teachers_run_in_fp32_under_the_trainers_autocast_and_by_default_they_run_under_it() -> None:
    reference, x = _teachers()
    (exact,) = reference.outputs(x, ["body.2"])  # no autocast anywhere: fp32
    fp32, _ = _teachers(precision="32")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what a bf16-mixed trainer's step runs under
        (under_trainer,), (full,) = reference.outputs(x, ["body.2"]), fp32.outputs(x, ["body.2"])
    assert torch.equal(full.logits, exact.logits) and torch.equal(full.features["body.2"], exact.features["body.2"])
    assert not torch.equal(under_trainer.logits, exact.logits)  # the default ran in the trainer's bf16
    assert torch.allclose(under_trainer.logits, exact.logits, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("fp32", [True, False])
def test_under_bf16_mixed_fp32_teachers_give_the_losses_their_fp32_outputs(fp32: bool) -> None:
    from lightning_kd import VanillaKD

    torch.manual_seed(0)
    task = VanillaKD(MLP(num_classes=10), SmallCNN(widths=(8, 16), num_classes=10))
    served, outputs = [], task.teachers.outputs

    def recording(x: torch.Tensor, layers=()):
        result = outputs(x, layers)
        served.append((x.detach().clone(), result[0].logits))
        return result

    task.teachers.outputs = recording
    callbacks = [FastTeacher(precision="32")] if fp32 else []
    cpu_trainer(callbacks=callbacks, precision="bf16-mixed", limit_train_batches=2, limit_val_batches=0,
                max_epochs=1).fit(task, DigitsDataModule(batch_size=32))
    with torch.no_grad():  # the teacher's forward in fp32, outside any autocast
        exact = [task.teacher(x) for x, _ in served]
    same = [torch.equal(logits, reference) for (_, logits), reference in zip(served, exact, strict=True)]
    assert len(same) >= 2 and (all(same) if fp32 else not any(same))


@pytest.mark.parametrize("settings", [{"channels_last": True}, {"compile_backend": "eager"},
                                      {"channels_last": True, "compile_backend": "eager"}])
def test_channels_last_and_compiled_teachers_give_the_same_outputs(settings: dict) -> None:
    reference, x = _teachers()
    fast, _ = _teachers(**settings)
    (exact,), (same,) = reference.outputs(x), fast.outputs(x)
    assert torch.allclose(same.logits, exact.logits, atol=1e-5)


def _born_again(tmp_path: Path, *callbacks) -> tuple[BornAgain, float]:
    seed_everything(0)
    task = BornAgain(SmallCNN(widths=(8, 16), num_classes=10), loss="ban")
    generations = Generations(generations=2, epochs=2, dirpath=tmp_path)
    trainer = cpu_trainer(max_epochs=6, callbacks=[generations, *callbacks])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=64))
    return task, float(trainer.callback_metrics["val/acc"])


def test_a_fit_with_a_fast_teacher_trains_as_with_an_fp32_one_and_promoted_teachers_run_fast_too(
        tmp_path: Path) -> None:
    fast = FastTeacher(precision="bf16", channels_last=True, allow_emulated=True)  # bf16 on any CPU
    task, accuracy = _born_again(tmp_path / "fast", fast)
    _, reference = _born_again(tmp_path / "fp32")
    assert task.teachers.forward_settings == fast.settings and abs(accuracy - reference) < 0.05
    conv = task.teacher.body[4].weight  # the teacher promoted last (its second convolution), converted on arrival
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_a_task_without_teachers_is_refused() -> None:
    with pytest.raises(ValueError, match="Classifier has none: use it with a distillation method"):
        cpu_trainer(callbacks=[FastTeacher()]).fit(Classifier(MLP(num_classes=10)), datamodule=DigitsDataModule())


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown teacher precision 'fp8'; choose one of 32, bf16, 16"):
        FastTeacher(precision="fp8")


def test_several_teachers_each_run_fast_and_give_fp32() -> None:
    torch.manual_seed(0)
    teachers = Teachers([SmallCNN(widths=(8, 16), num_classes=10), MLP(hidden_sizes=(8,), num_classes=10)])
    reference = [output.logits for output in teachers.outputs(torch.ones(4, 1, 8, 8))]
    teachers.configure_forward(TeacherForward(precision="bf16", channels_last=True))
    outputs = teachers.outputs(torch.ones(4, 1, 8, 8))
    assert [o.logits.dtype for o in outputs] == [torch.float32, torch.float32]
    assert all(torch.allclose(o.logits, r, rtol=0.05, atol=0.05) for o, r in zip(outputs, reference, strict=True))


def test_an_unknown_compile_backend_is_refused_when_declared() -> None:
    from lightning_kd.errors import Refusal

    # issue 23: it failed at the first forward, after the run had started
    with pytest.raises(Refusal, match=r"unknown compile_backend 'nosuchbackend'; torch.compile's backends: .*inductor"):
        FastTeacher(compile_backend="nosuchbackend")


def test_a_precision_the_device_emulates_falls_back_to_fp32_in_one_stated_line(monkeypatch, caplog) -> None:
    import logging

    from lightning_kd import VanillaKD
    from lightning_kd.callbacks import fast_teacher

    def fit(callback: FastTeacher) -> VanillaKD:
        task = VanillaKD(MLP(num_classes=10), SmallCNN(widths=(8,), num_classes=10))
        cpu_trainer(callbacks=[callback], limit_train_batches=1, limit_val_batches=1).fit(task, DigitsDataModule())
        return task

    monkeypatch.setattr(fast_teacher, "native_precisions", lambda device: ("32",))  # a CPU without AVX-512 BF16
    with caplog.at_level(logging.INFO):
        task = fit(FastTeacher(precision="bf16", channels_last=True))
    assert task.teachers.forward_settings == TeacherForward(precision="32", channels_last=True)
    stated = [r.getMessage() for r in caplog.records if "emulation" in r.getMessage()]
    assert stated == ["FastTeacher: this cpu computes bf16 by emulation, slower than fp32, so the teachers run in "
                      "fp32 (allow_emulated: true keeps the precision)"]
    assert fit(FastTeacher(precision="bf16", allow_emulated=True)).teachers.forward_settings.precision == "bf16"
    monkeypatch.setattr(fast_teacher, "native_precisions", lambda device: ("32", "bf16"))  # AVX-512 BF16 or AMX
    assert fit(FastTeacher(precision="bf16")).teachers.forward_settings.precision == "bf16"


@pytest.mark.parametrize(("flags", "native"), [({"avx2", "fma"}, ("32",)), ({"avx512f", "amx_bf16"}, ("32", "bf16")),
                                               ({"avx512_bf16", "avx512_fp16"}, ("32", "bf16", "16"))])
def test_a_cpus_native_precisions_follow_its_flags(monkeypatch, flags: set[str], native: tuple[str, ...]) -> None:
    from lightning_kd import devices

    monkeypatch.setattr(devices, "cpu_flags", lambda: flags)
    assert devices.native_precisions(torch.device("cpu")) == native


@pytest.mark.parametrize(("capability", "native"), [((7, 5), ("32", "16")), ((8, 0), ("32", "bf16", "16")),
                                                    ((9, 0), ("32", "bf16", "16"))])
def test_a_gpus_native_precisions_follow_its_compute_capability(monkeypatch, capability, native) -> None:
    from lightning_kd import devices

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert devices.native_precisions(torch.device("cuda", 0)) == native
