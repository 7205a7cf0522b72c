"""The fast teacher path: frozen teachers run in reduced precision, channels-last and compiled, when asked."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lightning_kd.errors import Refusal
from lightning_kd.teachers import TeacherForward, TeacherPrecision


class FastTeacher(Callback):
    """Run every frozen teacher's forward in ``precision`` autocast, channels-last, and compiled, as asked.

    The student trains as the trainer says (its own ``precision``); only the teachers' forward changes, and
    their logits and features are upcast to fp32 before any loss sees them, so every method keeps working.
    A teacher put in during the fit (a Born-Again promotion) gets the same treatment.

    Args:
        precision: ``"bf16"`` (default), ``"16"`` or ``"32"``.
        channels_last: Teachers' weights and inputs in channels-last memory format (faster convolutions
            on GPUs with tensor cores).
        compile_backend: ``torch.compile`` backend for the teachers' logits-only forward (``"inductor"``);
            ``None`` (default): no compilation.

    Example:
        >>> FastTeacher(precision="bf16", channels_last=True).settings
        TeacherForward(precision='bf16', channels_last=True, compile_backend=None)
    """

    def __init__(self, precision: TeacherPrecision = "bf16", channels_last: bool = False,
                 compile_backend: str | None = None) -> None:
        self.settings = TeacherForward(precision, channels_last, compile_backend)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        teachers = getattr(pl_module, "teachers", None)
        if teachers is None:
            raise Refusal(f"FastTeacher speeds up frozen teachers, but {type(pl_module).__name__} has none: use it "
                             "with a distillation method")
        teachers.configure_forward(self.settings)
