"""Two-process DDP on CPU (gloo): training runs, ranks agree, the teacher stays out of the sync, generations too."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning import Callback, seed_everything
from torch import nn

from lightning_kd import (
    CRD,
    DIST,
    FSP,
    NST,
    OFD,
    PKT,
    RKD,
    VID,
    ActivationBoundaries,
    AttentionTransfer,
    BornAgain,
    Classifier,
    CorrelationCongruence,
    DecoupledKD,
    DeepMutualLearning,
    FactorTransfer,
    FitNets,
    LogitStandardisedKD,
    MultiStudentKD,
    MultiTeacherKD,
    ReviewKD,
    SimilarityPreserving,
    TeacherFreeKD,
    VanillaKD,
)
from lightning_kd.callbacks import EpochCheckpoints, Generations
from lightning_kd.checkpoints import load_network
from lightning_kd.cli import main
from lightning_kd.data import DigitsDataModule
from lightning_kd.models import MLP, SmallCNN
from tests.conftest import CONFIGS
from tests.helpers import cpu_trainer


class RankReport(Callback):
    """Each rank writes its synced metrics and a fingerprint of both networks."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ddp_ignored: list[str] = []

    def on_train_start(self, trainer, pl_module) -> None:
        wrapper = trainer.strategy.model  # the DistributedDataParallel wrapper while training
        self.ddp_ignored = sorted(getattr(wrapper, "parameters_to_ignore", []))

    def on_fit_end(self, trainer, pl_module) -> None:
        report = {
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()
                        if k.startswith("val/") or k.endswith("/weight")},
            "student": [float(p.double().sum()) for p in pl_module.student.parameters()],
            "projectors": [float(t.double().sum()) for t in getattr(pl_module, "projectors", nn.Identity()).state_dict()
                           .values()],
            "memory": [float(t.double().sum()) for t in (getattr(pl_module, "memory", None) or nn.Identity())
                       .state_dict().values()],
            "teacher": [float(t.double().sum()) for t in pl_module.teacher.state_dict().values()],
            "teacher_training": pl_module.teacher.training,
            "fusion": getattr(pl_module.student, "weights", torch.zeros(0)).tolist(),  # MultiStudentKD's
            "world_size": trainer.world_size,
            "trainable": sorted(n for n, p in pl_module.named_parameters() if p.requires_grad),
            "ddp_ignored": self.ddp_ignored,
        }
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def test_ddp_spawn_two_processes_agree(tmp_path: Path) -> None:
    seed_everything(0)
    teacher = SmallCNN(widths=(8, 16), num_classes=10)
    teacher_before = [float(t.double().sum()) for t in teacher.state_dict().values()]
    task = VanillaKD(MLP(hidden_sizes=(16,), num_classes=10), teacher)
    trainer = cpu_trainer(devices=2, strategy="ddp_spawn", max_epochs=2, callbacks=[RankReport(tmp_path)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world_size"] == 2
    assert rank0["metrics"] == rank1["metrics"]  # torchmetrics synced across ranks
    assert {"val/acc", "val/agreement", "val/teacher/acc"} <= set(rank0["metrics"])
    assert rank0["student"] == rank1["student"]  # gradients all-reduced
    assert rank0["teacher"] == rank1["teacher"] == teacher_before  # teacher untouched
    assert not rank0["teacher_training"] and not rank1["teacher_training"]
    assert rank0["trainable"] and all(name.startswith("student.") for name in rank0["trainable"])
    assert set(rank0["ddp_ignored"]) == {f"teachers.teacher.{k}" for k in teacher.state_dict()}


LOGIT_METHODS = {"dkd": DecoupledKD, "dist": DIST, "logit-standardisation": LogitStandardisedKD}


def _logit_method(folder: Path, name: str) -> None:
    seed_everything(0)
    task = LOGIT_METHODS[name](MLP(hidden_sizes=(16,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10))
    trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=1, limit_train_batches=6, limit_val_batches=2,
                          callbacks=[RankReport(folder)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.ddp(scenario=functools.partial(_logit_method, name=n))) for n in LOGIT_METHODS])
def test_each_logit_method_trains_under_ddp_with_ranks_equal(ddp_run: Path, name: str) -> None:
    rank0, rank1 = (json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world_size"] == 2 and rank0["metrics"] == rank1["metrics"]
    assert rank0["student"] == rank1["student"] and rank0["teacher"] == rank1["teacher"]
    assert all(parameter.startswith("student.") for parameter in rank0["trainable"])
    assert rank0["ddp_ignored"] and all(k.startswith("teachers.") for k in rank0["ddp_ignored"])


# each feature method, and the teacher's widths it runs with (FSP compares equal widths)
FEATURE_METHODS = {
    "fitnets": (FitNets, (12, 24)), "rkd": (RKD, (12, 24)), "crd": (functools.partial(CRD, negatives=64), (12, 24)),
    "at": (AttentionTransfer, (12, 24)), "sp": (SimilarityPreserving, (12, 24)), "nst": (NST, (12, 24)),
    "pkt": (PKT, (12, 24)), "cc": (CorrelationCongruence, (12, 24)), "vid": (VID, (12, 24)),
    "fsp": (functools.partial(FSP, student_layers="stages", teacher_layers="stages"), (8, 16)),
    "reviewkd": (ReviewKD, (12, 24)), "ofd": (OFD, (12, 24)), "ab": (ActivationBoundaries, (12, 24)),
    "ft": (FactorTransfer, (12, 24)),  # built by _factor_transfer (its paraphraser file)
}
WITHOUT_PROJECTORS = {"rkd", "at", "sp", "nst", "pkt", "fsp"}


def _factor_transfer(student: nn.Module, teacher: nn.Module, folder: Path) -> FactorTransfer:
    """FT's transfer phase, from a paraphraser checkpoint that rank 0 writes (untrained: the phase is what runs)."""
    path = folder / "paraphraser.ckpt"
    if torch.distributed.get_rank() == 0:
        first = FactorTransfer(SmallCNN(widths=(8, 16), num_classes=10), teacher, phase="paraphraser")
        first.build_projectors((1, 8, 8))
        torch.save({"hyper_parameters": {"phase": "paraphraser", "teacher_layers": "stages[-1]", "rate": 0.5},
                    "state_dict": first.state_dict()}, path)
    torch.distributed.barrier()
    return FactorTransfer(student, teacher, paraphraser_ckpt=str(path))


def _feature_method(folder: Path, name: str) -> None:
    seed_everything(0)
    method, teacher_widths = FEATURE_METHODS[name]
    if name == "ft":
        method = functools.partial(_factor_transfer, folder=folder)
    task = method(SmallCNN(widths=(8, 16), num_classes=10), SmallCNN(widths=teacher_widths, num_classes=10))
    trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=1, limit_train_batches=6, limit_val_batches=2,
                          callbacks=[RankReport(folder)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.ddp(scenario=functools.partial(_feature_method, name=n)))
    for n in FEATURE_METHODS])
def test_each_feature_method_trains_under_ddp_with_ranks_equal(ddp_run: Path, name: str) -> None:
    """The trained parts of a method (FitNets' regressor with its BatchNorm, CRD's and CC's embeddings, VID's
    regressors and variances, ReviewKD's fusions, OFD's connectors and margins, FT's translator beside its frozen
    paraphraser) are kept equal on both ranks like the student; CRD's memory banks and constants end equal (each
    process applies every process's batch); the relations of RKD, SP, PKT and CC are each process's batch
    statistics, and the ranks still end equal."""
    rank0, rank1 = (json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world_size"] == 2 and rank0["metrics"] == rank1["metrics"]
    assert rank0["student"] == rank1["student"] and rank0["projectors"] == rank1["projectors"]
    assert rank0["memory"] == rank1["memory"] and bool(rank0["memory"]) == (name == "crd")
    assert all(parameter.startswith(("student.", "projectors.")) for parameter in rank0["trainable"])
    assert any(parameter.startswith("projectors.") for parameter in rank0["trainable"]) == (
        name not in WITHOUT_PROJECTORS)


class StudentFingerprint(Callback):
    """Each rank writes the sum of every student parameter, and the losses it logged."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module) -> None:
        report = {"student": [float(p.double().sum()) for p in pl_module.student.parameters()],
                  "logged": sorted(k for k in trainer.callback_metrics if k.startswith("train/"))}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def _teacher_free_kd(folder: Path) -> None:
    seed_everything(0)
    task = TeacherFreeKD(MLP(hidden_sizes=(16,), num_classes=10), alpha=0.5, label_smoothing=0.1,
                         smoothing_convention="others")
    keeper = EpochCheckpoints(epochs=1, dirpath=folder / "kept")
    trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=2, default_root_dir=folder,
                          callbacks=[StudentFingerprint(folder), keeper])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.ddp(scenario=_teacher_free_kd)
def test_teacher_free_kd_and_epoch_checkpoints_under_ddp(ddp_run: Path) -> None:
    tmp_path = ddp_run
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["student"] == rank1["student"]
    assert {"train/ce_loss", "train/reg_loss"} <= set(rank0["logged"])
    kept = torch.load(tmp_path / "kept/after_epoch_1.ckpt", weights_only=True)  # written once, whole
    assert kept[EpochCheckpoints.RECORD_KEY]["epoch"] == 1 and list(tmp_path.glob("kept/*")) == [
        tmp_path / "kept/after_epoch_1.ckpt"]


def _multi_teacher_teachers() -> list[torch.nn.Module]:
    seed_everything(0)
    return [SmallCNN(widths=(8, 16), num_classes=10), MLP(hidden_sizes=(8,), num_classes=10)]


def _multi_teacher_kd(folder: Path, weighting: str) -> None:
    teachers = _multi_teacher_teachers()
    task = MultiTeacherKD(MLP(hidden_sizes=(16,), num_classes=10), teachers, weighting=weighting)
    trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=1, callbacks=[RankReport(folder)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.parametrize("weighting", [
    pytest.param(w, marks=pytest.mark.ddp(scenario=functools.partial(_multi_teacher_kd, weighting=w)))
    for w in ("ca-mkd", "ae-kd")])
def test_multi_teacher_kd_keeps_every_teacher_out_of_ddp_and_ranks_equal(ddp_run: Path, weighting: str) -> None:
    teachers = _multi_teacher_teachers()  # as the scenario built them
    before = [[float(t.double().sum()) for t in teacher.state_dict().values()] for teacher in teachers]
    tmp_path = ddp_run
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world_size"] == 2 and rank0["metrics"] == rank1["metrics"]
    assert {"train/teacher/weight", "train/teacher_2/weight", "val/teachers_ensemble_acc"} <= set(rank0["metrics"])
    assert rank0["student"] == rank1["student"]
    assert rank0["teacher"] == rank1["teacher"] == before[0]
    assert set(rank0["ddp_ignored"]) == {f"teachers.{role}.{key}" for role, teacher in
                                         zip(("teacher", "teacher_2"), teachers, strict=True)
                                         for key in teacher.state_dict()}
    assert all(name.startswith("student.") for name in rank0["trainable"])


def _multi_student_kd(folder: Path) -> None:
    teachers = _multi_teacher_teachers()
    task = MultiStudentKD([MLP(hidden_sizes=(16,), num_classes=10), SmallCNN(widths=(8,), num_classes=10)], teachers,
                          weighting="ebkd", fusion="fitted", mutual_weight=1.0)
    trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=2, limit_train_batches=6,
                          callbacks=[RankReport(folder)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.ddp(scenario=_multi_student_kd)
def test_multi_student_kd_under_ddp_fits_one_fusion_and_keeps_ranks_equal(ddp_run: Path) -> None:
    rank0, rank1 = (json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world_size"] == 2 and rank0["metrics"] == rank1["metrics"]
    assert {"val/student_1/acc", "val/student_2/acc", "val/acc"} <= set(rank0["metrics"])
    assert rank0["student"] == rank1["student"]  # every student's gradients all-reduced
    assert rank0["fusion"] == rank1["fusion"] and rank0["fusion"] != [0.5, 0.5]  # fitted on both ranks' outputs
    assert all(name.startswith("student.members.") for name in rank0["trainable"])


class PeerReport(Callback):
    """Each rank writes every peer's parameter sums and its synced validation metrics."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module) -> None:
        report = {"peers": [[float(p.double().sum()) for p in peer.parameters()] for peer in pl_module.peers],
                  "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def _deep_mutual_learning(folder: Path, scheme: str, batched: bool) -> None:
    seed_everything(0)
    peers = [SmallCNN(widths=(8, 16), num_classes=10),
             SmallCNN(widths=(8, 16), num_classes=10) if batched else MLP(hidden_sizes=(16,), num_classes=10)]
    task = DeepMutualLearning(peers, scheme=scheme, batched=batched)
    trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=2, callbacks=[PeerReport(folder)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))  # no unused-parameter error either way


@pytest.mark.parametrize(("scheme", "batched"), [
    pytest.param(scheme, batched, marks=pytest.mark.ddp(scenario=functools.partial(_deep_mutual_learning, scheme=scheme,
                                                                          batched=batched)))
    for scheme, batched in (("simultaneous", False), ("alternating", False), ("simultaneous", True))])
def test_deep_mutual_learning_under_ddp_trains_and_ranks_agree(ddp_run: Path, scheme: str, batched: bool) -> None:
    tmp_path = ddp_run
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["peers"] == rank1["peers"]  # every peer's gradients averaged over the processes
    assert rank0["metrics"] == rank1["metrics"] and rank0["metrics"]["val/peers_ensemble_acc"] > 0.3  # chance: 0.1


def test_cli_ddp_strategy_in_a_subprocess(tmp_path: Path, monkeypatch) -> None:
    # strategy="ddp" re-executes the command line, so it runs as a user would: a fresh process
    monkeypatch.chdir(tmp_path)
    tiny = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *tiny])
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "lightning_kd", "fit", "--config", str(CONFIGS / "digits_kd.yaml"), *tiny,
         "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    checkpoint = torch.load(tmp_path / "checkpoints/digits_kd/latest/kd-student.ckpt", weights_only=True)
    assert checkpoint["lightning_kd"]["network"] == "student"


def test_cli_born_again_under_ddp_in_a_subprocess(tmp_path: Path) -> None:
    # generations under a real `ddp` launch: promotion, a change of architecture (DDP re-wrap), the
    # generation checkpoints written collectively from inside the callback's hooks
    config = yaml.safe_load((CONFIGS / "digits_wide_to_small.yaml").read_text())
    config["trainer"]["callbacks"][1]["init_args"]["epochs"] = [1, 1]
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "lightning_kd", "fit", "--config", "tiny.yaml", "--trainer.logger", "false",
         "--trainer.enable_progress_bar", "false", "--trainer.limit_train_batches", "4",
         "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    folder = tmp_path / "checkpoints/digits_wide_to_small/latest"
    assert isinstance(load_network(folder / "generation_0.ckpt"), SmallCNN)
    assert isinstance(load_network(folder / "generation_1.ckpt"), MLP)
    table = json.loads((folder / "generations.json").read_text())
    assert [row["generation"] for row in table["generations"]] == [0, 1]
    assert "Born-Again generations" in result.stdout


class GenerationRankReport(Callback):
    """Each rank writes the weights each generation starts from and ends with, and its table of generations."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.starts: dict[int, list[float]] = {}
        self.wrapped: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.generation not in self.starts:
            self.starts[pl_module.generation] = [float(p.double().sum()) for p in pl_module.student.parameters()]
            # the parameters DDP all-reduces: those of the current student
            wrapper = trainer.strategy.model
            self.wrapped[pl_module.generation] = sorted(
                name for name, p in wrapper.module.named_parameters() if p.requires_grad
                and name not in getattr(wrapper, "parameters_to_ignore", ())
                and any(p is q for q in wrapper.parameters())
            )

    def on_train_end(self, trainer, pl_module) -> None:
        schedule = next(c for c in trainer.callbacks if isinstance(c, Generations))
        report = {
            "starts": self.starts,
            "wrapped": self.wrapped,
            "student": [float(p.double().sum()) for p in pl_module.student.parameters()],
            "projectors": [float(t.double().sum()) for t in getattr(pl_module, "projectors", nn.Identity()).state_dict()
                           .values()],
            "memory": [float(t.double().sum()) for t in (getattr(pl_module, "memory", None) or nn.Identity())
                       .state_dict().values()],
            "teacher": [float(t.double().sum()) for t in pl_module.teacher.state_dict().values()],
            "generation": pl_module.generation,
            "records": {g: float(r["val"].double().sum()) for g, r in schedule.records.items()},
            # each inherited layer of the last student, equal to its teacher's (when the task inherits any)
            "inherited": {path: all(torch.equal(a, b) for a, b in zip(
                pl_module.student.get_submodule(path).state_dict().values(),
                pl_module.teacher.get_submodule(path).state_dict().values(), strict=True))
                for path in getattr(pl_module, "inherited_layers", [])},
        }
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def _born_again(folder: Path, architectures: str) -> None:
    seed_everything(0)
    student = SmallCNN(widths=(8, 16), num_classes=10)
    inherit = None
    if architectures == "changing":  # generation 1 on: an MLP, which DDP must wrap anew
        student = [student, MLP(hidden_sizes=(16,), num_classes=10)]
    if architectures == "inheriting":  # generation 1 on: a deeper CNN with generation 0's first layer and head
        student, inherit = [student, SmallCNN(widths=(8, 24, 16), num_classes=10)], ["body.0", "classifier"]
    task = BornAgain(student, loss="ban+l", inherit_layers=inherit)
    trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=None, limit_train_batches=4,
                          callbacks=[Generations(generations=2, epochs=1, dirpath=folder, print_table=False),
                                     GenerationRankReport(folder)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.parametrize("architectures", [
    pytest.param(a, marks=pytest.mark.ddp(scenario=functools.partial(_born_again, architectures=a)))
    for a in ("same", "changing", "inheriting")])
def test_born_again_generations_keep_ranks_identical(ddp_run: Path, architectures: str) -> None:
    tmp_path = ddp_run
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["generation"] == rank1["generation"] == 2
    assert rank0["starts"] == rank1["starts"]  # each generation's initialisation is the same on both ranks
    assert len({tuple(v) for v in rank0["starts"].values()}) == 3  # and differs between generations
    assert rank0["student"] == rank1["student"]  # gradients of every generation's student were all-reduced
    assert rank0["teacher"] == rank1["teacher"]
    assert rank0["records"] == rank1["records"]
    for generation, names in rank0["wrapped"].items():
        assert names and all(name.startswith("student.") for name in names), generation
    if architectures == "changing":
        assert all(".body.1." in n or ".fc." in n for n in rank0["wrapped"]["1"])  # the MLP's parameters
    if architectures == "inheriting":  # generations 1 and 2 all-reduce all but the layers they inherit, kept equal
        assert all(".body.0." not in n and ".fc." not in n for g in ("1", "2") for n in rank0["wrapped"][g])
        assert "student.body.0.weight" in rank0["wrapped"]["0"]
        assert rank0["inherited"] == rank1["inherited"] == {"body.0": True, "fc": True}
    assert (tmp_path / "generation_2.ckpt").is_file()


class SeenIndices(Callback):
    """Each rank writes the training samples it was given and a fingerprint of its network."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.index += batch["index"].tolist()

    def on_fit_end(self, trainer, pl_module) -> None:
        report = {"index": self.index, "samples": len(trainer.datamodule.train_set),
                  "net": [float(p.double().sum()) for p in pl_module.net.parameters()]}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def _resident_digits(folder: Path) -> None:
    seed_everything(int(os.environ["RANK"]))  # each process its own seed: the permutation must still be shared
    task = Classifier(MLP(hidden_sizes=(16,), num_classes=10), lr_scheduler="none")
    trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=1, limit_val_batches=0,
                          callbacks=[SeenIndices(folder)])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32, device_resident=True))


@pytest.mark.ddp(scenario=_resident_digits)
def test_resident_data_are_shared_between_ddp_processes_as_distributed_sampler_shares(ddp_run: Path) -> None:
    rank0, rank1 = (json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["samples"] == 1258 and len(rank0["index"]) == len(rank1["index"]) == 629
    assert set(rank0["index"]).isdisjoint(rank1["index"])  # one permutation, two shares, whatever each seed
    assert set(rank0["index"]) | set(rank1["index"]) == set(range(1258))
    assert rank0["net"] == rank1["net"]


def _compiled_kd(folder: Path, method: str) -> None:
    from lightning_kd.callbacks import CompiledStep, TeacherOutputCache

    for compiled in (False, True):  # the eager run, then the compiled one, on the same data and seeds
        seed_everything(0)
        teacher = SmallCNN(widths=(12, 24), num_classes=10)
        student = SmallCNN(widths=(8, 16), num_classes=10)
        if not compiled and torch.distributed.get_rank() == 0:  # the student before training (the same each run)
            (folder / "initial.json").write_text(json.dumps([float(p.double().sum()) for p in student.parameters()]))
        task = VanillaKD(student, teacher) if method == "kd" else FitNets(student, teacher)
        callbacks: list[Callback] = [RankReport(folder / ("compiled" if compiled else "eager"))]
        if method == "kd":  # the cache in the device's memory: gathered inside the compiled region
            callbacks.append(TeacherOutputCache(storage="device"))
        if compiled:
            callbacks.append(CompiledStep(backend="aot_eager"))
        (folder / ("compiled" if compiled else "eager")).mkdir(exist_ok=True)
        trainer = cpu_trainer(devices=2, strategy="ddp", max_epochs=1, limit_train_batches=6, limit_val_batches=2,
                              callbacks=callbacks)
        data = DigitsDataModule(batch_size=32)
        data.drop_last_train = True  # the eager run steps over the batches the compiled one keeps
        trainer.fit(task, datamodule=data)


@pytest.mark.parametrize("method", [
    pytest.param(m, marks=pytest.mark.ddp(scenario=functools.partial(_compiled_kd, method=m)))
    for m in ("kd", "fitnets")])
def test_the_compiled_step_under_ddp_keeps_ranks_equal_and_trains_as_the_eager_one(ddp_run: Path, method: str) -> None:
    """DDP with CompiledStep (torch's DDP optimizer splits the graph at the gradient buckets; a feature method's
    tapped forward runs eagerly): both ranks end equal, and equal to the eager DDP run up to rounding."""
    reports = {mode: [json.loads((ddp_run / mode / f"rank{r}.json").read_text()) for r in (0, 1)]
               for mode in ("eager", "compiled")}
    compiled, eager = reports["compiled"], reports["eager"]
    assert compiled[0]["world_size"] == 2 and compiled[0]["student"] == compiled[1]["student"]
    assert compiled[0]["student"] == pytest.approx(eager[0]["student"], rel=1e-4, abs=1e-5)
    assert compiled[0]["student"] != pytest.approx(json.loads((ddp_run / "initial.json").read_text()))  # it trained
