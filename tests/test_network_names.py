"""Networks by the names ``lightning-kd list networks`` prints, on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_kd.cli import KDLightningCLI
from lightning_kd.cli.arguments import resolve_network_names
from lightning_kd.models import CifarResNet, SmallCNN, create_model, list_models, model_config
from tests.conftest import CONFIGS
from tests.helpers import lightning_kd_process

QUICK = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1",
         "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]


@pytest.mark.parametrize("name", list_models())
def test_every_listed_name_stands_for_the_config_that_builds_the_same_network(name: str) -> None:
    from lightning_kd.cli.config import import_object

    config = model_config(name)
    built = import_object(config["class_path"])(**config["init_args"], num_classes=10)
    by_name = create_model(name, num_classes=10)
    assert type(built) is type(by_name)
    assert {k: tuple(v.shape) for k, v in built.state_dict().items()} == {
        k: tuple(v.shape) for k, v in by_name.state_dict().items()}


def test_a_network_by_name_on_the_command_line(in_tmp: Path) -> None:
    # issue 24: the names `lightning-kd list networks` prints were refused
    args = ["--config", str(CONFIGS / "digits_kd.yaml"), "--model.init_args.student", "small_cnn",
            "--model.init_args.teacher", "resnet20", "--model.init_args.teacher_ckpt", "null", *QUICK]
    cli = KDLightningCLI(args=resolve_network_names(args), run=False)  # what `lightning-kd` does before parsing
    assert isinstance(cli.model.student, SmallCNN) and cli.model.student.num_classes == 10
    assert isinstance(cli.model.teacher, CifarResNet)
    assert cli.model.teacher.stem[0].in_channels == 1  # the data's channels, filled in as for a config
    assert cli.model.hparams["student"]["class_path"] == "lightning_kd.models.SmallCNN"  # checkpoints rebuild it
    args = resolve_network_names(["fit", "--model.init_args.student=timm/resnet18", "--model.init_args.loss", "ban"])
    assert args[1] == '--model.init_args.student={"class_path": "lightning_kd.models.TimmNetwork", ' \
                      '"init_args": {"name": "resnet18"}}'
    assert args[2:] == ["--model.init_args.loss", "ban"]  # a value that names no network is left alone


def test_a_wrong_network_name_keeps_its_reason(tmp_path: Path) -> None:
    result = lightning_kd_process(["fit", "--config", "digits_kd", "--model.init_args.student", "resnet2000"], tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert 'Parser key "student"' in last and "resnet2000" in last and "lightning-kd list networks" in last, last
