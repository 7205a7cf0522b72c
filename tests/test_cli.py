"""The CLI driven as a user drives it: every shipped config, checkpoints, W&B, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import wandb
import yaml

from lightning_kd import Classifier, VanillaKD
from lightning_kd.cli import KDLightningCLI, main
from tests.conftest import CONFIGS, write_tiny_cifar

# each distillation config names the config that trains its teacher
TEACHER_CONFIG = {
    "digits_kd.yaml": "digits_teacher.yaml",
    "cifar100_resnet32x4_resnet8x4_kd.yaml": "cifar100_resnet32x4_teacher.yaml",
}
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.precision", "32", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(autouse=True)
def _finish_wandb():
    yield
    wandb.finish()


def _prepare(config: Path, root: Path) -> list[str]:
    """Extra args that make a config run on this machine (tiny CIFAR written in the real format)."""
    data = yaml.safe_load(config.read_text())["data"]["class_path"]
    if "CIFAR100" in data:
        write_tiny_cifar(root / "data", 100, train_per_file=16)
        return ["--data.init_args.num_workers", "0", "--data.init_args.batch_size", "8"]
    return []


def _run(config: Path, root: Path, *extra: str) -> None:
    main(["fit", "--config", str(config), *_prepare(config, root), *TINY, *extra])


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_fits(config: Path, in_tmp: Path, skip_cifar_checksums: None) -> None:
    settings = yaml.safe_load(config.read_text())
    if settings["model"]["init_args"].get("teacher_ckpt"):
        teacher_config = CONFIGS / TEACHER_CONFIG[config.name]
        _run(teacher_config, in_tmp)
        assert (in_tmp / settings["model"]["init_args"]["teacher_ckpt"]).is_file()
        wandb.finish()
    _run(config, in_tmp)
    checkpoint_dir = in_tmp / settings["trainer"]["callbacks"][0]["init_args"]["dirpath"]
    assert any(checkpoint_dir.glob("*.ckpt"))


def test_cli_checkpoint_reloads_without_arguments(in_tmp: Path) -> None:
    _run(CONFIGS / "digits_teacher.yaml", in_tmp, "--trainer.logger", "false")
    _run(CONFIGS / "digits_kd.yaml", in_tmp, "--trainer.logger", "false", "--model.init_args.temperature", "3")
    teacher = Classifier.load_from_checkpoint(in_tmp / "checkpoints/digits/teacher.ckpt")
    kd = VanillaKD.load_from_checkpoint(in_tmp / "checkpoints/digits/kd-student.ckpt")
    assert kd.hparams.temperature == 3.0
    # num_classes and input_shape were filled in from the data module and stored in the config
    assert kd.hparams.student["init_args"]["num_classes"] == 10
    assert kd.hparams.student["init_args"]["input_shape"] == [1, 8, 8]
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(kd.teacher.eval()(x), teacher.net.eval()(x))
    state = torch.load(in_tmp / "checkpoints/digits/kd-student.ckpt", weights_only=True)
    torch.testing.assert_close(kd.student.state_dict()["fc.weight"], state["state_dict"]["student.fc.weight"])
    # the other subcommands run from the same config and checkpoint
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    for subcommand in ("validate", "test", "predict"):
        cli = KDLightningCLI(args=[subcommand, "--config", str(CONFIGS / "digits_kd.yaml"), "--ckpt_path",
                                   "checkpoints/digits/kd-student.ckpt", *quiet])
        if subcommand == "test":
            assert cli.trainer.callback_metrics["test/acc"] > 0.1
            assert "test/teacher_acc" in cli.trainer.callback_metrics


def test_print_config(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "digits_kd.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "lightning_kd.VanillaKD"
    assert printed["model"]["init_args"]["alpha"] == 0.9


def test_wandb_run_holds_config_and_summary(in_tmp: Path) -> None:
    _run(CONFIGS / "digits_teacher.yaml", in_tmp)
    wandb.finish()  # in one process a WandbLogger would otherwise continue the open run
    cli = KDLightningCLI(args=["fit", "--config", str(CONFIGS / "digits_kd.yaml"), *TINY])
    run = cli.trainer.logger.experiment
    assert run.offline and Path(run.dir).resolve().is_relative_to(in_tmp / "runs")
    resolved = run.config["config"]
    assert resolved["model"]["class_path"] == "lightning_kd.VanillaKD"
    assert resolved["model"]["init_args"]["student"]["init_args"]["num_classes"] == 10
    assert resolved["trainer"]["max_epochs"] == 1
    summary = dict(run.summary)
    assert summary["summary/student_params"] == 1210
    assert summary["summary/teacher_params"] == sum(p.numel() for p in cli.model.teacher.parameters())
    for key in ("summary/val/acc", "summary/val/teacher_acc", "summary/val/agreement"):
        assert 0 <= summary[key] <= 1
    assert summary["summary/val/acc"] == pytest.approx(float(cli.trainer.callback_metrics["val/acc"]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.init_args.temperature", "0"], "temperature must be > 0"),
        (["--model.init_args.alpha", "2"], "alpha must be in"),
        (["--model.init_args.teacher_ckpt", "missing.ckpt"], "checkpoint not found: missing.ckpt"),
    ],
)
def test_bad_input_through_the_cli_is_named(in_tmp: Path, args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        main(["fit", "--config", str(CONFIGS / "digits_kd.yaml"), "--trainer.logger", "false", *args])


def test_teacher_with_explicit_other_class_count_is_refused_before_training(in_tmp: Path) -> None:
    args = ["--model.init_args.teacher_ckpt", "null", "--model.init_args.teacher",
            "lightning_kd.models.SmallCNN", "--model.init_args.teacher.num_classes", "7", "--trainer.logger", "false"]
    with pytest.raises(ValueError, match=r"teacher network \(SmallCNN\) predicts \(7,\) outputs.*10 classes"):
        main(["fit", "--config", str(CONFIGS / "digits_kd.yaml"), *TINY, *args])
