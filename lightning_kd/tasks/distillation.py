"""The base of every teacher -> student method: frozen teachers beside a trained student."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.checkpoints import CHECKPOINT_KEY, data_identity, load_network
from lightning_kd.compat import attached_trainer
from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import flatten_positions
from lightning_kd.metrics import (
    EVALUATION_STAGES,
    accuracy,
    ensemble_probabilities,
    teacher_metric_names,
    teachers_ensemble_metric_name,
)
from lightning_kd.models.inheritance import InheritSpec, inherit_layers, layer_pairs
from lightning_kd.models.taps import LayerSpec, NetworkOutput
from lightning_kd.naming import join_variants
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.base import BaseTask
from lightning_kd.teachers import CheckpointSpec, Teachers, TeacherSpec, teacher_role


class DistillationTask(BaseTask):
    """A student learns from one frozen teacher or several.

    Each teacher is given as a network, a checkpoint (one written by this package, or a plain
    state dict), or both; several teachers as lists (``teacher_ckpt`` entries may be ``null`` for a
    teacher given only as a network), of any architectures. They are held in a
    :class:`~lightning_kd.teachers.Teachers` container under the roles ``teacher``, ``teacher_2``, ...
    Every teacher never receives gradients, is in no optimizer, stays in eval mode through fit and
    validation (BatchNorm uses its running statistics), runs under ``torch.no_grad()`` and is left
    out of DDP's gradient sync and buffer broadcast. Class counts and input shapes are checked
    before training.

    Methods get the teachers' outputs from :meth:`teacher_outputs` only, never by calling a teacher:
    that is where a per-sample cache of teacher outputs plugs in.

    Besides the student's metrics it logs, for each teacher, every validation and test epoch,
    its accuracy (``{val,test}/teacher/acc``, ``teacher_2/acc``, ...) and the student's top-1 agreement
    with it (``{val,test}/agreement``, ``agreement/teacher_2``, ...); with several teachers, the
    accuracy of their ensemble (averaged softmax), ``{val,test}/teachers_ensemble_acc``.

    Args:
        student: The network to train.
        teacher: The teacher network, or a list of them; may be omitted for checkpoints written by a CLI run.
        teacher_ckpt: Path of the teacher's weights, or one path (or null) per teacher.
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (a checkpoint of this package, e.g. a first stage's,
            or a plain state dict): two-stage methods (FitNets' hints, then KD) chain runs this way. Read once,
            when the task is built; the task's own checkpoints hold the weights after that.
        inherit_layers: Layers of the (first) teacher copied into the student and frozen there (Born-Again's
            students of another architecture share the teacher's stem and classifier): a name or list of names,
            the same on both networks (a module path, ``"stem"``, ``"classifier"``, ``"stages[i]"``), or
            ``{student layer: teacher layer}``. Copied when the task is built and whenever the teacher is replaced
            (each Born-Again generation inherits from its own teacher); no gradient, in no optimizer, eval mode
            throughout (BatchNorm keeps the teacher's statistics). Layers whose parameter shapes differ are
            refused, naming both. See :mod:`lightning_kd.models.inheritance`.
    """

    teacher_required: ClassVar[bool] = True
    """Whether the task refuses to run without a teacher (Born-Again's generation 0 learns from labels)."""
    max_teachers: ClassVar[int | None] = 1
    """How many teachers the method uses (``None``: any number)."""
    starting_weights: ClassVar[tuple[str, ...]] = ("student_ckpt",)
    """Arguments naming files of trained weights read once when the task is built (the student's; FT's paraphraser):
    a checkpoint holds those weights, records the paths and stores ``None`` for them, so reloading it reads no file."""

    def __init__(
        self,
        student: nn.Module,
        teacher: TeacherSpec = None,
        teacher_ckpt: CheckpointSpec = None,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
        student_ckpt: str | Path | None = None,
        inherit_layers: InheritSpec = None,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, student=student, teacher=teacher, teacher_ckpt=teacher_ckpt,
                         student_ckpt=student_ckpt, inherit_layers=inherit_layers)

    def configure_models(  # type: ignore[override]
        self, student: nn.Module | None, teacher: TeacherSpec, teacher_ckpt: CheckpointSpec,
        student_ckpt: str | Path | None = None, inherit_layers: InheritSpec = None,
    ) -> None:
        if student is None:
            raise Refusal(f"{type(self).__name__} needs a student network (`student`)")
        self.student = load_network(student_ckpt, student) if student_ckpt is not None else student
        self.teachers = Teachers.load(teacher, teacher_ckpt)
        self.teacher_version = 0
        """Counts the teacher replacements (:meth:`set_teacher`): a teacher-output cache filled for an older
        version fills again before it serves."""
        self._teacher_cache: Any = None
        if self.teacher_required and not self.teachers:
            raise Refusal(
                f"{type(self).__name__} needs a teacher: give `teacher` (a network), `teacher_ckpt`, or both"
            )
        if self.max_teachers is not None and len(self.teachers) > self.max_teachers:
            raise Refusal(
                f"{type(self).__name__} learns from {self.max_teachers} teacher, got {len(self.teachers)}; "
                "several teachers need a multi-teacher method"
            )
        self.inherit_spec = inherit_layers
        self.inherited_layers: list[str] = []
        """The student's module paths holding the teacher's layers, frozen (``inherit_layers``)."""
        self.inherit_teacher_layers()

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        # a run whose students inherit layers is told apart from the same run without: "...-inherit-stem-classifier"
        inherited = [student for student, _ in layer_pairs(arguments.get("inherit_layers"))]
        return join_variants(super().run_variant(arguments), "-".join(["inherit", *inherited]) if inherited else None)

    def inherit_teacher_layers(self) -> None:
        """Copy ``inherit_layers`` from the (first) teacher into the student and freeze them; nothing while there is
        no teacher (Born-Again's generation 0). Called when the task is built and after a teacher is replaced."""
        if self.inherit_spec is None or self.teacher is None:
            self.inherited_layers = []
            return
        self.inherited_layers = inherit_layers(self.student, self.teacher, self.inherit_spec)

    def frozen_modules(self) -> list[nn.Module]:
        inherited = [m for path in self.inherited_layers for m in self.student.get_submodule(path).modules()]
        return super().frozen_modules() + inherited

    def trained_networks(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    def teacher_networks(self) -> dict[str, nn.Module]:
        return dict(self.teachers.items())

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # a teacher's checkpoint names the data it learned: another data module or input size is refused
        self.teachers.check_trained_on(data_identity(getattr(attached_trainer(self), "datamodule", None)))

    @property
    def teacher(self) -> nn.Module | None:
        """The (first) teacher, or ``None`` before there is one."""
        return self.teachers["teacher"] if "teacher" in self.teachers else None

    def set_teacher(self, network: nn.Module, role: str = "teacher") -> None:
        """Put ``network`` in as the teacher of ``role``, frozen (Born-Again promotes its students this way)."""
        self.teachers[role] = network
        self.teacher_version += 1

    def use_teacher_cache(self, cache: Any) -> None:
        """Serve training batches' teacher outputs from ``cache`` (a
        :class:`~lightning_kd.callbacks.TeacherOutputCache`, which calls this), or stop with ``None``."""
        self._teacher_cache = cache

    def cached_teacher_layers(self) -> LayerSpec:
        """The teacher layers a teacher-output cache must hold for this method (none: logits only)."""
        return ()

    def teacher_outputs(self, batch: Batch, layers: LayerSpec | Mapping[str, LayerSpec] = ()) -> list[NetworkOutput]:
        """The teachers' outputs for ``batch``, one :class:`~lightning_kd.models.taps.NetworkOutput` per teacher.

        Logits, and the tapped ``layers`` (for every teacher, or by role), computed under
        ``torch.no_grad()`` and detached: constants for the loss that can still be saved for the
        student's backward. Every method gets teacher outputs here and only here, so that a cache
        keyed by ``batch["index"]`` can stand in for the teachers' forward: with a
        :class:`~lightning_kd.callbacks.TeacherOutputCache`, training batches are served from it.

        Raises:
            RuntimeError: The task has no teacher yet.
        """
        if not self.teachers:
            raise RuntimeError(f"{type(self).__name__} has no teacher yet")
        cache = self._teacher_cache
        if cache is not None and cache.serves(attached_trainer(self), batch):
            return cache.outputs(self, batch, layers)
        return self.teachers.outputs(batch["input"], layers)

    # -- evaluation -------------------------------------------------------------------------------
    def configure_metrics(self, num_classes: int) -> None:
        super().configure_metrics(num_classes)
        # one set per teacher role; a task without a teacher yet (Born-Again generation 0) has room for one
        roles = [teacher_role(i) for i in range(max(len(self.teachers), 1))]
        self.teacher_metrics = nn.ModuleDict({
            stage: nn.ModuleDict({
                role: nn.ModuleDict({"acc": accuracy(num_classes), "agreement": accuracy(num_classes)})
                for role in roles
            })
            for stage in EVALUATION_STAGES
        })
        if len(self.teachers) > 1:
            self.teachers_ensemble_metrics = nn.ModuleDict(
                {stage: accuracy(num_classes) for stage in EVALUATION_STAGES})

    def evaluation_step(self, batch: Batch, stage: str) -> Tensor:
        logits = super().evaluation_step(batch, stage)
        self.log_teacher_metrics(batch, logits, stage)
        return logits

    def log_teacher_metrics(self, batch: Batch, logits: Tensor, stage: str) -> None:
        """Log each teacher's accuracy, the handed-on network's agreement with it (``logits``) and, with several
        teachers, their ensemble's accuracy."""
        if not self.teachers:
            return
        student_logits, targets = flatten_positions(logits, batch["target"])  # per token for sequences
        batch_size = len(targets)
        outputs = self.teacher_outputs(batch)
        teacher_logits = [flatten_positions(output.logits, batch["target"])[0] for output in outputs]
        for role, teacher in zip(self.teachers, teacher_logits, strict=True):
            metrics = self.teacher_metrics[stage][role]
            acc_name, agreement_name = teacher_metric_names(stage, role)
            metrics["acc"](teacher, targets)
            metrics["agreement"](student_logits, teacher.argmax(dim=1))
            self.log(acc_name, metrics["acc"], batch_size=batch_size)
            self.log(agreement_name, metrics["agreement"], batch_size=batch_size)
        ensemble = getattr(self, "teachers_ensemble_metrics", None)
        if ensemble is not None and len(teacher_logits) > 1:
            ensemble[stage](ensemble_probabilities([t.softmax(dim=1) for t in teacher_logits]), targets)
            self.log(teachers_ensemble_metric_name(stage), ensemble[stage], batch_size=batch_size)

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # The checkpoint holds the teachers' weights: reloading it must not read teacher_ckpt again (a path
        # relative to where training ran). Record how to build the teachers instead, where known.
        hparams = checkpoint.get("hyper_parameters")
        record = checkpoint[CHECKPOINT_KEY]
        # what the run was given, for resume, kept by every checkpoint of the run (a resumed one too)
        record.update(getattr(self, "_given_checkpoints", {}))
        for key in self.starting_weights:  # the weights these files gave are in this checkpoint now
            if hparams and hparams.get(key) is not None:
                record[key] = hparams[key]
                hparams[key] = None
        if not hparams or hparams.get("teacher_ckpt") is None:
            return
        record["teacher_ckpt"] = hparams["teacher_ckpt"]
        hparams["teacher_ckpt"] = None
        configs = self.given_teacher_configs()
        if configs and all(config is not None for config in configs):
            hparams["teacher"] = configs if isinstance(hparams.get("teacher"), list) or len(configs) > 1 else configs[0]

    def given_teacher_configs(self) -> list[dict | None]:
        """How to build each teacher the task was given (from its config or its checkpoint), where known."""
        given = self.hparams.get("teacher")
        items = given if isinstance(given, list) else [given] * len(self.teachers.configs)
        return [
            dict(item) if isinstance(item, dict) and "class_path" in item else recorded
            for item, recorded in zip(items, self.teachers.configs, strict=False)
        ]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # format 1 (lightning-kd 0.1) kept the one teacher under "teacher."; now teachers.<role>.
        record = checkpoint.get(CHECKPOINT_KEY, {})
        given = ("teacher_ckpt", *self.starting_weights)
        self._given_checkpoints = {key: record[key] for key in given if key in record}
        if record.get("format_version") == 1 and "state_dict" in checkpoint:
            checkpoint["state_dict"] = {
                (f"teachers.{key}" if key.startswith("teacher.") else key): value
                for key, value in checkpoint["state_dict"].items()
            }
