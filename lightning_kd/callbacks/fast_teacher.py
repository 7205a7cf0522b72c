"""The fast teacher path: frozen teachers run in reduced precision, channels-last and compiled, when asked."""

from __future__ import annotations

import dataclasses

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from lightning_kd.devices import native_precisions
from lightning_kd.errors import Refusal
from lightning_kd.teachers import TeacherForward, TeacherPrecision


class FastTeacher(Callback):
    """Run every frozen teacher's forward in ``precision`` autocast, channels-last, and compiled, as asked.

    The student trains as the trainer says (its own ``precision``); only the teachers' forward changes, and
    their logits and features are upcast to fp32 before any loss sees them, so every method keeps working.
    A teacher put in during the fit (a Born-Again promotion) gets the same treatment.

    A reduced precision gains only where the device computes in it (:mod:`lightning_kd.devices`: GPUs of compute
    capability 8.0 and newer for bf16, 7.0 for fp16; CPUs with AVX-512 BF16 or AMX for bf16). Elsewhere it is
    emulated, slower than fp32 (4.8 times on a 2-core AMD EPYC): the teachers then run in fp32, and one line says so,
    unless ``allow_emulated`` keeps the precision asked for.

    Args:
        precision: ``"bf16"`` (default), ``"16"`` or ``"32"``. ``"32"`` runs the teachers in fp32 with autocast
            off, also under a ``bf16-mixed`` or ``16-mixed`` trainer: their features and logits reach the losses
            in full precision, at fp32's cost (without ``FastTeacher`` they run under the trainer's autocast).
        channels_last: Teachers' weights and inputs in channels-last memory format (faster convolutions
            on GPUs with tensor cores).
        compile_backend: ``torch.compile`` backend for the teachers' logits-only forward (``"inductor"``);
            ``None`` (default): no compilation.
        allow_emulated: Keep ``precision`` on a device that emulates it (to measure the emulation, say).

    Example:
        >>> FastTeacher(precision="bf16", channels_last=True).settings
        TeacherForward(precision='bf16', channels_last=True, compile_backend=None)
    """

    def __init__(self, precision: TeacherPrecision = "bf16", channels_last: bool = False,
                 compile_backend: str | None = None, allow_emulated: bool = False) -> None:
        self.settings = TeacherForward(precision, channels_last, compile_backend)
        self.allow_emulated = allow_emulated
        self.applied: TeacherForward | None = None
        """The settings the teachers run with in this fit (fp32 where the device emulates the precision asked)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        teachers = getattr(pl_module, "teachers", None)
        if teachers is None:
            raise Refusal(f"FastTeacher speeds up frozen teachers, but {type(pl_module).__name__} has none: use it "
                             "with a distillation method")
        settings, device = self.settings, trainer.strategy.root_device
        if settings.precision not in native_precisions(device) and not self.allow_emulated:
            rank_zero_info(f"FastTeacher: this {device.type} computes {settings.precision} by emulation, slower than "
                           "fp32, so the teachers run in fp32 (allow_emulated: true keeps the precision)")
            settings = dataclasses.replace(settings, precision="32")
        self.applied = settings
        teachers.configure_forward(settings)
