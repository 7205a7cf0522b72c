"""The CIFAR-100 benchmark pairs' configs: every method on every pair, written from the ResNet32x4 -> ResNet8x4 ones."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser
from pytorch_lightning import LightningDataModule

from lightning_kd.tasks.base import BaseTask
from tests.conftest import CONFIGS, REPO
from tests.test_cli import WEIGHTS_READ

spec = importlib.util.spec_from_file_location("pair_configs", REPO / "tools" / "pair_configs.py")
pair_configs = importlib.util.module_from_spec(spec)
sys.modules["pair_configs"] = pair_configs  # dataclasses look their module up by name
spec.loader.exec_module(pair_configs)


def test_the_shipped_pair_configs_are_what_the_script_writes(capsys) -> None:
    assert pair_configs.main(["--check"]) == 0, capsys.readouterr().out


def test_every_method_of_the_template_pair_ships_on_every_pair_but_the_papers_not_applicable() -> None:
    methods = {path.stem.removeprefix("cifar100_resnet32x4_resnet8x4_") for path in pair_configs.templates()}
    assert {"kd", "dkd", "crd", "reviewkd", "ofd", "fitnets_hints", "fitnets_kd", "ft_paraphraser", "ft"} <= methods
    for pair in pair_configs.PAIRS:
        shipped = {path.stem.removeprefix(f"cifar100_{pair.name}_") for path in CONFIGS.glob(f"cifar100_{pair.name}_*")}
        assert shipped == methods - set(pair.without), pair.name
    # FSP compares the widths of consecutive stages: ShuffleNetV2's are not ResNet32x4's (RepDistiller's N/A)
    assert not list(CONFIGS.glob("cifar100_resnet32x4_shufflenetv2_fsp*"))


def _settings(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def test_a_pair_config_differs_from_its_template_only_where_the_benchmarks_differ() -> None:
    template = _settings("cifar100_resnet32x4_resnet8x4_dkd.yaml")
    pair = _settings("cifar100_resnet56_resnet20_dkd.yaml")
    assert pair["model"]["init_args"]["student"] == {"class_path": "lightning_kd.models.CifarResNet",
                                                     "init_args": {"depth": 20, "widths": [16, 16, 32, 64]}}
    assert pair["model"]["init_args"]["teacher_ckpt"] == "checkpoints/cifar100_resnet56_teacher/latest/resnet56.ckpt"
    assert pair["model"]["init_args"]["nckd_weight"] == 2.0 and template["model"]["init_args"]["nckd_weight"] == 8.0
    for key in ("student", "teacher", "teacher_ckpt", "nckd_weight"):  # nothing else of the model changed
        del pair["model"]["init_args"][key], template["model"]["init_args"][key]
    assert pair["model"] == template["model"] and pair["data"] == template["data"]
    assert pair["trainer"]["callbacks"][0]["init_args"]["dirpath"] == "checkpoints/cifar100_resnet56_resnet20_dkd"
    # ShuffleNet students train at lr 0.01 in every stage; FT's paraphraser follows RepDistiller's rule per student
    shufflenet = [_settings(p.name) for p in CONFIGS.glob("cifar100_resnet32x4_shufflenetv2_*.yaml")]
    assert {s["model"]["init_args"]["optimizer"]["init_args"]["lr"] for s in shufflenet} == {0.01}
    assert _settings("cifar100_vgg13_vgg8_ft_paraphraser.yaml")["model"]["init_args"]["optimizer"]["init_args"][
        "lr"] == 0.05
    assert _settings("cifar100_resnet32x4_shufflenetv2_reviewkd.yaml")["model"]["init_args"]["review_weight"] == 8.0


def test_a_second_stage_reads_its_own_pairs_first_stage() -> None:
    for pair in pair_configs.PAIRS:
        settings = _settings(f"cifar100_{pair.name}_fitnets_kd.yaml")["model"]["init_args"]
        assert settings["student_ckpt"].startswith(f"checkpoints/cifar100_{pair.name}_fitnets_hints/latest/")
        stage_one = _settings(f"cifar100_{pair.name}_fitnets_hints.yaml")["trainer"]["callbacks"][0]["init_args"]
        assert settings["student_ckpt"].endswith(f"/{stage_one['filename']}.ckpt")


def test_a_template_the_script_cannot_read_is_refused_with_its_name(tmp_path: Path, monkeypatch) -> None:
    broken = tmp_path / "cifar100_resnet32x4_resnet8x4_new.yaml"
    broken.write_text("# CIFAR-100 new, a method\nseed_everything: 0\nmodel:\n  student: other\n")
    monkeypatch.setattr(pair_configs, "CONFIGS", tmp_path)
    try:
        pair_configs.expected()
    except SystemExit as refusal:
        assert "cifar100_resnet32x4_resnet8x4_new.yaml" in str(refusal) and "tools/pair_configs.py" in str(refusal)
    else:
        raise AssertionError("a template without the template pair's student was accepted")


def test_each_pairs_networks_are_those_of_its_teacher_config_and_its_fitted_kd_config() -> None:
    # the KD config of every pair runs end to end in test_every_shipped_config_fits, on the teacher its config writes
    for pair in pair_configs.PAIRS:
        kd = _settings(f"cifar100_{pair.name}_kd.yaml")["model"]["init_args"]
        assert kd["teacher"] == _settings(f"cifar100_{pair.teacher}_teacher.yaml")["model"]["init_args"]["net"]
        for path in CONFIGS.glob(f"cifar100_{pair.name}_*.yaml"):
            settings = _settings(path.name)["model"]["init_args"]
            assert settings.get("student", settings.get("net")) == kd["student"], path.name
            assert settings.get("teacher", kd["teacher"]) == kd["teacher"], path.name


@pytest.fixture(scope="module")
def parser() -> ArgumentParser:
    """The model and data parts of the CLI's parser: what ``lightning-kd fit --config`` checks a file against."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(BaseTask, "model", required=True)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    return parser


@pytest.mark.parametrize("pair", [pair.name for pair in pair_configs.PAIRS])
def test_every_written_config_parses_and_its_method_finds_its_layers(pair: str, parser: ArgumentParser) -> None:
    """Each file's classes and arguments as the CLI reads them, and its task built with the file's layers on the
    pair's networks (the weights it reads are another run's: left out here; their paths are checked above)."""
    for path in sorted(CONFIGS.glob(f"cifar100_{pair}_*.yaml")):
        settings = _settings(path.name)
        for key in WEIGHTS_READ:
            if key in settings["model"]["init_args"]:
                settings["model"]["init_args"][key] = None
        task = parser.instantiate(parser.parse_object({"model": settings["model"], "data": settings["data"]})).model
        if hasattr(task, "build_projectors"):
            task.build_projectors((3, 32, 32))  # taps resolved on these networks, shapes matched


def test_a_misspelt_argument_in_a_config_is_refused_by_that_parser(parser: ArgumentParser) -> None:
    settings = _settings("cifar100_vgg13_vgg8_crd.yaml")
    settings["model"]["init_args"]["crd_wieght"] = 1.0
    with pytest.raises(Exception, match="crd_wieght"):
        parser.parse_object({"model": settings["model"], "data": settings["data"]})
