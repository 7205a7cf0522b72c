"""The CLI driven as a user drives it: every shipped config, checkpoints, W&B, errors."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import wandb
import yaml

from lightning_kd import BornAgain, Classifier, VanillaKD
from lightning_kd.catalog import written_from
from lightning_kd.checkpoints import load_network
from lightning_kd.cli import KDLightningCLI, main
from lightning_kd.models import MLP, SmallCNN
from tests.conftest import (
    CONFIGS,
    made_once,
    skip_cifar_checksums_in,
    write_fashion,
    write_tiny_cifar,
    write_tiny_corpus,
)
from tests.helpers import only_run, run_each_until_sigkilled


def _written_checkpoints(settings: dict) -> set[str]:
    """The checkpoint files a config writes: its ModelCheckpoint's ``dirpath/latest/filename.ckpt``, and the files of an
    EpochCheckpoints callback (in its own ``dirpath``, else the ModelCheckpoint's)."""
    callbacks = settings["trainer"].get("callbacks", [])
    written, folder = set(), None
    for callback in callbacks:
        if callback["class_path"].endswith("ModelCheckpoint") and "filename" in callback.get("init_args", {}):
            folder = f"{callback['init_args']['dirpath']}/latest"  # the run's folder, once it has finished
            written.add(f"{folder}/{callback['init_args']['filename']}.ckpt")
    for callback in callbacks:
        if callback["class_path"].endswith("EpochCheckpoints"):
            arguments = callback["init_args"]
            epochs = arguments["epochs"] if isinstance(arguments["epochs"], list) else [arguments["epochs"]]
            name = arguments.get("filename", "after_epoch_{epoch}")
            written |= {f"{arguments.get('dirpath', folder)}/{name.format(epoch=epoch)}.ckpt" for epoch in epochs}
    return written


WEIGHTS_READ = ("teacher_ckpt", "student_ckpt", "net_ckpt", "paraphraser_ckpt")
"""The model arguments naming another run's checkpoint: a teacher's, or a first stage's (FitNets, FSP, FT)."""


def weights_read(settings: dict) -> list[tuple[str, Path]]:
    """Each checkpoint a config reads (its teachers', its first stage's), with the shipped config that writes it."""
    writers = {path: config for config in sorted(CONFIGS.glob("*.yaml"))
               for path in _written_checkpoints(yaml.safe_load(config.read_text()))}
    read = []
    for key in WEIGHTS_READ:
        given = settings["model"]["init_args"].get(key) or []
        for path in given if isinstance(given, list) else [given]:
            assert path in writers, f"no shipped config writes the {key} {path}"
            read.append((path, writers[path]))
    return read


def teacher_configs(settings: dict) -> list[Path]:
    """The shipped configs that write the checkpoints a config's ``teacher_ckpt`` names, in its order."""
    wanted = settings["model"]["init_args"].get("teacher_ckpt") or []
    writers = {path: config for config in sorted(CONFIGS.glob("*.yaml"))
               for path in _written_checkpoints(yaml.safe_load(config.read_text()))}
    missing = [path for path in (wanted if isinstance(wanted, list) else [wanted]) if path not in writers]
    assert not missing, f"no shipped config writes the teacher checkpoint {missing}"
    return [writers[path] for path in (wanted if isinstance(wanted, list) else [wanted])]


# full-size networks take seconds per step here: the configs run with small ones (the full-size DenseNet-112-33
# of the Born-Again configs is built and run once in test_the_full_size_born_again_densenet_runs_a_forward)
SMALL_NETWORK = {
    name: ["--model.init_args.student.init_args.depth", "10", "--model.init_args.student.init_args.growth_rate", "4"]
    for name in ("cifar100_densenet112_ban.yaml", "cifar100_densenet112_ban_l.yaml", "cifar100_densenet112_cwtm.yaml",
                 "cifar100_densenet112_dkpp.yaml")
} | {  # cifar100_resnet18_baseline.yaml runs the full-size ResNet-18
    name: [f"--model.init_args.{role}.init_args.widths", "[8, 8, 16, 16, 32]"]
    for name, role in (("cifar100_resnet18_lsr.yaml", "net"), ("cifar100_resnet18_tfkd_reg.yaml", "student"),
                       ("cifar100_resnet18_tfkd_reg_reference.yaml", "student"),
                       ("cifar100_resnet18_tfkd_self.yaml", "student"), ("cifar100_resnet18_byot.yaml",
                                                                        "net.init_args.backbone"),
                       ("cifar100_resnet34_teacher.yaml", "net"), ("cifar100_resnet34_resnet18_kd2m.yaml", "student"))
}
# configs whose networks are shrunk in the file itself (list entries cannot be set from the command line)
SMALL_IN_FILE = {"WideResNet": {"depth": 10, "widen_factor": 1}, "DenseNet": {"depth": 10, "growth_rate": 4},
                 "DenseFollowerResNet": {"densenet_depth": 10, "densenet_growth_rate": 4}}


def _shrink_generations(settings: dict) -> None:
    """Each generation's network of a Born-Again list at a tiny size (a follower still follows its DenseNet)."""
    for network in settings["model"]["init_args"]["student"]:
        network["init_args"].update(SMALL_IN_FILE[network["class_path"].rsplit(".", 1)[-1]])


SHRUNK_IN_FILE = {
    "cifar100_dml_wrn28_10_resnet32.yaml": lambda settings: settings["model"]["init_args"]["peers"][0][
        "init_args"].update(depth=10, widen_factor=1),
} | {name: _shrink_generations for name in (
    "cifar100_wrn_28_1_densenet_90_60_ban.yaml", "cifar100_wrn_28_10_densenet_90_60_ban.yaml",
    "cifar100_densenet_90_60_preresnet_14_0_5_ban.yaml", "cifar100_densenet_90_60_wrn_4_0_5_ban.yaml")}
TINY_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.precision", "32",
                "--trainer.enable_progress_bar", "false"]
TINY = ["--trainer.max_epochs", "1", *TINY_BATCHES]


@pytest.fixture(autouse=True)
def _finish_wandb():
    yield
    wandb.finish()


def _generations(settings: dict) -> dict | None:
    """The Generations callback's settings in a config, if it has one."""
    for callback in settings["trainer"].get("callbacks", []):
        if callback["class_path"] == "lightning_kd.callbacks.Generations":
            return callback["init_args"]
    return None


def _kept_epochs(settings: dict) -> list[int]:
    """The epochs an EpochCheckpoints callback of the config keeps (none without one)."""
    return [epoch for callback in settings["trainer"].get("callbacks", [])
            if callback["class_path"] == "lightning_kd.callbacks.EpochCheckpoints"
            for epoch in callback["init_args"]["epochs"]]


def _prepare(config: Path, root: Path) -> tuple[Path, list[str]]:
    """The config and extra args that make it run here: tiny CIFAR in the real format, one epoch per generation
    (or as many as an EpochCheckpoints callback keeps)."""
    settings = yaml.safe_load(config.read_text())
    generations = _generations(settings)
    tiny = [*TINY_BATCHES, "--trainer.max_epochs", str(max([1, *_kept_epochs(settings)]))]
    args = [*(tiny if generations is None else TINY_BATCHES), *SMALL_NETWORK.get(config.name, [])]
    if generations is not None:  # the callback owns the epoch budget: shrink it there, not via max_epochs
        generations["epochs"] = 1
    if config.name in SHRUNK_IN_FILE:
        SHRUNK_IN_FILE[config.name](settings)
    compiled = [callback for callback in settings["trainer"].get("callbacks", [])
                if callback["class_path"] == "lightning_kd.callbacks.CompiledStep"]
    for callback in compiled:  # traced and run, not code-generated: inductor's C++ build would take a minute here
        callback.setdefault("init_args", {})["backend"] = "aot_eager"
    if generations is not None or config.name in SHRUNK_IN_FILE or compiled:
        config = root / f"tiny-{config.name}"
        config.write_text(yaml.safe_dump(settings))
    if settings["data"]["class_path"].endswith(("TextDataModule", "JaneAustenDataModule")):  # a tiny corpus, tiny LSTMs
        data_args = settings["data"].get("init_args") or {}
        write_tiny_corpus(root / data_args.get("root", "data/janeausten"), layout=data_args.get("layout", "ptb"))
        _shrink_language_models(settings)
        config = root / f"tiny-{config.name}"
        config.write_text(yaml.safe_dump(settings))
        args += ["--data.init_args.batch_size", "4", "--data.init_args.eval_batch_size", "2",
                 "--data.init_args.bptt", "6"]
    if "FashionMNIST" in settings["data"]["class_path"]:  # tiny IDX files in the real format, not the apt package
        write_fashion(root / "fashion-mnist", train=80, test=20)
        args += ["--data.init_args.root", str(root / "fashion-mnist"), "--data.init_args.train_samples", "40",
                 "--data.init_args.batch_size", "8"]
    if "CIFAR100" in settings["data"]["class_path"]:
        write_tiny_cifar(root / "data", 100, train_per_file=16)
        args += ["--data.init_args.num_workers", "0", "--data.init_args.batch_size", "8"]
    return config, args


def _shrink_language_models(settings: Any) -> None:
    """Every LSTM language model of a config at 2 x 16 units, every character-aware one small (in place)."""
    if isinstance(settings, dict):
        if str(settings.get("class_path", "")).endswith("LSTMLanguageModel"):
            settings.setdefault("init_args", {})["hidden_size"] = 16
        if str(settings.get("class_path", "")).endswith("CharCNNLSTM"):
            settings.setdefault("init_args", {})["preset"] = "small"
        for value in settings.values():
            _shrink_language_models(value)
    elif isinstance(settings, list):
        for value in settings:
            _shrink_language_models(value)


@pytest.fixture(scope="session")
def teacher_runs(tmp_path_factory: pytest.TempPathFactory):
    """Run a teacher config once per session (in a folder of its own); later calls return that folder."""
    folders: dict[str, Path] = {}

    def run(config: Path) -> Path:
        if config.name not in folders:
            folder = tmp_path_factory.mktemp(f"teacher-{config.stem}")
            copy_weights_read(yaml.safe_load(config.read_text()), folder, run)  # a first stage's teacher
            with pytest.MonkeyPatch.context() as monkeypatch:
                monkeypatch.chdir(folder)  # configs write relative paths
                skip_cifar_checksums_in(monkeypatch)
                _run(config, folder)
                wandb.finish()
            folders[config.name] = folder
        return folders[config.name]

    return run


def copy_weights_read(settings: dict, folder: Path, runs: Callable[[Path], Path]) -> None:
    """Put the checkpoints a config reads where it reads them in ``folder``, from one run of each writer config."""
    for path, writer in weights_read(settings):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        share_file(runs(writer) / path, folder / path)


def share_file(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` as a hard link: the runs only read it, and a copy of each teacher's checkpoint
    for every run that reads it filled the CI machine's disk (tens of checkpoints of 50-100 MB)."""
    os.link(source, target)


def _run(config: Path, root: Path, *extra: str) -> None:
    config, args = _prepare(config, root)
    main(["fit", "--config", str(config), *args, *extra])


def _fitted(config: Path) -> bool:
    """Whether the config is run end to end below: all but those tools/pair_configs.py writes from a fitted one (each
    the same method on another benchmark pair, checked in tests/test_pair_configs.py), except each pair's KD."""
    return written_from(config.read_text()) in (None, "cifar100_resnet32x4_resnet8x4_kd")


@pytest.mark.parametrize("config", [c for c in sorted(CONFIGS.glob("*.yaml")) if _fitted(c)], ids=lambda p: p.name)
def test_every_shipped_config_fits(config: Path, in_tmp: Path, skip_cifar_checksums: None, teacher_runs,
                                   recwarn: pytest.WarningsRecorder) -> None:
    settings = yaml.safe_load(config.read_text())
    # the teachers' and a first stage's files, from one run of each writer config for the whole session
    copy_weights_read(settings, in_tmp, teacher_runs)
    _run(config, in_tmp)
    runs = in_tmp / settings["trainer"]["callbacks"][0]["init_args"]["dirpath"]
    checkpoint_dir = runs / "latest"  # the run's own folder, linked once the run finished
    assert checkpoint_dir.is_symlink()
    assert sorted(p.name for p in runs.iterdir()) == sorted(["latest", checkpoint_dir.readlink().name])
    assert any(checkpoint_dir.glob("*.ckpt")) and (checkpoint_dir / "config.yaml").is_file()
    generations = _generations(settings)
    if generations is not None:  # every generation kept, and the table written
        for generation in range(generations["generations"] + 1):
            assert (checkpoint_dir / f"generation_{generation}.ckpt").is_file()
        table = json.loads((checkpoint_dir / "generations.json").read_text())
        assert len(table["generations"]) == generations["generations"] + 1
    for epoch in _kept_epochs(settings):  # what EpochCheckpoints promised
        assert any(checkpoint_dir.glob(f"*{epoch}.ckpt"))
    # the text data's known-length stream batches are no cause for Lightning's IterableDataset warning
    assert not [w for w in recwarn if "IterableDataset" in str(w.message)]


@pytest.mark.parametrize("method", ["AttentionTransfer", "CRD"])
def test_a_pair_config_runs_another_method_by_class_path(method: str, in_tmp: Path, skip_cifar_checksums: None,
                                                         teacher_runs) -> None:
    """--model.class_path runs another method from a pair's KD config, on that pair and schedule, the method's own
    arguments at their (benchmark) defaults and KD's left behind."""
    config = CONFIGS / "cifar100_vgg13_vgg8_kd.yaml"
    settings = yaml.safe_load(config.read_text())
    path = settings["model"]["init_args"]["teacher_ckpt"]
    (in_tmp / path).parent.mkdir(parents=True, exist_ok=True)
    share_file(teacher_runs(teacher_configs(settings)[0]) / path, in_tmp / path)
    _run(config, in_tmp, "--model.class_path", f"lightning_kd.{method}")
    run = (in_tmp / "checkpoints/cifar100_vgg13_vgg8_kd/latest").resolve()
    assert run.name.startswith(method.lower())
    hparams = torch.load(run / "kd-vgg8.ckpt", weights_only=False)["hyper_parameters"]
    assert "alpha" not in hparams and hparams["student"]["class_path"].endswith("CifarVGG")


def test_born_again_config_runs_from_the_readme_and_hands_on_generations(in_tmp: Path) -> None:
    _run(CONFIGS / "digits_wide_to_small.yaml", in_tmp, "--trainer.logger", "false")
    folder = in_tmp / "checkpoints/digits_wide_to_small/latest"
    # each generation's checkpoint rebuilds its own architecture, with no network given
    assert isinstance(load_network(folder / "generation_0.ckpt"), SmallCNN)
    assert isinstance(load_network(folder / "generation_1.ckpt"), MLP)
    resumed = BornAgain.load_from_checkpoint(folder / "last.ckpt")
    assert resumed.generation == 1
    assert isinstance(resumed.student, MLP) and isinstance(resumed.teacher, SmallCNN)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(resumed.teacher.eval()(x), load_network(folder / "generation_0.ckpt").eval()(x))


def test_cli_checkpoint_reloads_without_arguments(in_tmp: Path) -> None:
    _run(CONFIGS / "digits_teacher.yaml", in_tmp, "--trainer.logger", "false")
    _run(CONFIGS / "digits_kd.yaml", in_tmp, "--trainer.logger", "false", "--model.init_args.temperature", "3")
    teacher = Classifier.load_from_checkpoint(in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt")
    kd = VanillaKD.load_from_checkpoint(in_tmp / "checkpoints/digits_kd/latest/kd-student.ckpt")
    assert kd.hparams.temperature == 3.0
    # num_classes and input_shape were filled in from the data module and stored in the config
    assert kd.hparams.student["init_args"]["num_classes"] == 10
    assert kd.hparams.student["init_args"]["input_shape"] == [1, 8, 8]
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(kd.teacher.eval()(x), teacher.net.eval()(x))
    state = torch.load(in_tmp / "checkpoints/digits_kd/latest/kd-student.ckpt", weights_only=True)
    torch.testing.assert_close(kd.student.state_dict()["fc.weight"], state["state_dict"]["student.fc.weight"])
    # the other subcommands run from the same config and checkpoint
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    for subcommand in ("validate", "test", "predict"):
        cli = KDLightningCLI(args=[subcommand, "--config", str(CONFIGS / "digits_kd.yaml"), "--ckpt_path",
                                   "checkpoints/digits_kd/latest/kd-student.ckpt", *quiet])
        if subcommand == "test":
            assert cli.trainer.callback_metrics["test/acc"] > 0.1
            assert "test/teacher/acc" in cli.trainer.callback_metrics


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
    for key in ("summary/val/acc", "summary/val/teacher/acc", "summary/val/agreement"):
        assert 0 <= summary[key] <= 1
    assert summary["summary/val/acc"] == pytest.approx(float(cli.trainer.callback_metrics["val/acc"]))
    assert summary["summary/val/networks"]["_type"] == "table-file"  # one row per network, logged at the end


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.init_args.temperature", "0"], "temperature must be finite and > 0"),
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


def test_cli_refuses_to_train_when_network_configs_were_not_saved(in_tmp: Path, monkeypatch) -> None:
    # a Lightning that stopped handing the parsed config to save_hyperparameters would make checkpoints that
    # cannot rebuild their networks: the CLI says so before training rather than writing them
    import lightning_kd.tasks.base

    monkeypatch.setattr(lightning_kd.tasks.base, "hyperparameters_given_by_cli", lambda: False)
    with pytest.raises(RuntimeError, match="did not save the config of `net`"):
        main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *TINY, "--trainer.logger", "false"])


def test_timm_network_from_a_config_gets_the_datas_shape(in_tmp: Path) -> None:
    args = ["--model.init_args.net", "lightning_kd.models.TimmNetwork", "--model.init_args.net.name", "resnet10t",
            "--trainer.logger", "false"]
    cli = KDLightningCLI(args=["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *TINY, *args])
    assert cli.model.hparams.net["init_args"]["num_classes"] == 10
    assert cli.model.hparams.net["init_args"]["in_channels"] == 1
    reloaded = Classifier.load_from_checkpoint(in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(reloaded.eval()(x), cli.model.eval()(x))
    assert isinstance(load_network(in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt").body, torch.nn.Module)


def test_version_and_the_configs_list_answer_without_importing_lightning() -> None:
    probe = ("import sys; from lightning_kd.cli import console; sys.argv = ['lightning-kd', *sys.argv[1:]]; console(); "
             "print('imported:', sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))")
    for args, printed, imported in ((["--version"], "lightning-kd ", "[]"), (["list", "configs"], "digits_ban", "[]"),
                                    (["list", "networks"], "resnet8x4", "['torch']")):
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and printed in result.stdout, result.stderr[-2000:]
        assert result.stdout.strip().endswith(f"imported: {imported}"), (args, result.stdout[-300:])


def test_the_cli_introduces_itself(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import lightning_kd

    main(["--version"])
    assert capsys.readouterr().out.strip() == f"lightning-kd {lightning_kd.__version__}"
    main(["list"])
    listed = capsys.readouterr().out
    for expected in ("methods:", "lightning_kd.BornAgain", "lightning_kd.VanillaKD", "networks:", "resnet8x4",
                     "timm_<name>", "configs:", "digits_ban"):
        assert expected in listed
    assert ":class:" not in listed and "``" not in listed
    main(["list", "configs"])
    assert "methods:" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    helped = capsys.readouterr().out
    assert "Knowledge distillation" in helped and "lightning-kd list" in helped and "--version" in helped
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "BornAgain"])
    model_help = capsys.readouterr().out
    assert len(model_help.splitlines()) < 150  # not every nn.Module in the process
    model_help = " ".join(model_help.split())
    assert "lightning_kd.models.SmallCNN" in model_help and "other classes (any importable one works)" in model_help
    assert "torch.nn.ReLU" not in model_help and ":class:" not in model_help and "``" not in model_help


def test_a_shipped_config_runs_by_name(in_tmp: Path) -> None:
    main(["fit", "--config", "digits_teacher", *TINY, "--trainer.logger", "false"])
    assert (in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt").is_file()
    with pytest.raises(SystemExit):  # neither a file nor a shipped config: jsonargparse says so
        main(["fit", "--config", "no_such_config", *TINY])


def test_a_checkpoint_reloads_from_any_directory(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the teacher's weights come from the task's checkpoint, not from teacher_ckpt (a path relative to the run)
    _run(CONFIGS / "digits_teacher.yaml", in_tmp, "--trainer.logger", "false")
    _run(CONFIGS / "digits_kd.yaml", in_tmp, "--trainer.logger", "false")
    path = in_tmp / "checkpoints/digits_kd/latest/kd-student.ckpt"
    elsewhere = in_tmp / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    reloaded = VanillaKD.load_from_checkpoint(path)
    teacher = load_network(in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt")
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(reloaded.teacher.eval()(x), teacher.eval()(x))
    assert reloaded.hparams.teacher_ckpt is None and reloaded.hparams.teacher["class_path"].endswith("SmallCNN")
    # built in Python from the same teacher checkpoint, it reloads from elsewhere too
    from pytorch_lightning import Trainer

    teacher_ckpt = in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt"
    python_built = VanillaKD(MLP(hidden_sizes=(8,), num_classes=10), teacher_ckpt=teacher_ckpt)
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(python_built)
    trainer.save_checkpoint("python.ckpt")
    again = VanillaKD.load_from_checkpoint("python.ckpt", student=MLP(hidden_sizes=(8,), num_classes=10))
    torch.testing.assert_close(again.teacher.eval()(x), teacher.eval()(x))


def test_print_config_is_the_config_that_runs(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the networks' sizes come from the data: MNIST-5k's 28x28, not the config's (digits) defaults
    args = ["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), "--data", "lightning_kd.data.MNIST5kDataModule",
            "--model.init_args.net", "lightning_kd.models.MLP", *TINY, "--trainer.logger", "false"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["net"]["init_args"]["input_shape"] == [1, 28, 28]
    cli = KDLightningCLI(args=args)
    ran = cli.model.hparams.net
    assert printed["model"]["init_args"]["net"] == ran
    assert printed["model"]["class_path"] == "lightning_kd.Classifier"


def test_a_second_config_file_adds_its_callbacks(in_tmp: Path) -> None:
    extra = {"trainer": {"callbacks": [{"class_path": "pytorch_lightning.callbacks.EarlyStopping",
                                        "init_args": {"monitor": "val/acc", "mode": "max"}}], "max_epochs": 1}}
    (in_tmp / "extra.yaml").write_text(yaml.safe_dump(extra))
    from lightning_kd.cli import append_later_callbacks

    args = append_later_callbacks(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), "--config", "extra.yaml"],
                                  in_tmp)
    cli = KDLightningCLI(args=[*args, *TINY_BATCHES, "--trainer.logger", "false"])
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    assert "ModelCheckpoint" in names and "EarlyStopping" in names  # both files' callbacks
    assert cli.trainer.max_epochs == 1  # and the rest of the second file applies as usual
    assert (in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt").is_file()


def test_wandb_runs_organise_themselves(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    defined: dict[str, str | None] = {}
    original = wandb.sdk.wandb_run.Run.define_metric

    def spy(self, name, step_metric=None, *args, **kwargs):
        defined[name] = step_metric
        return original(self, name, step_metric, *args, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "define_metric", spy)
    settings = yaml.safe_load((CONFIGS / "digits_ban.yaml").read_text())
    settings["trainer"]["callbacks"][1]["init_args"].update(generations=1, epochs=1)
    (in_tmp / "digits_ban.yaml").write_text(yaml.safe_dump(settings))
    cli = KDLightningCLI(args=["fit", "--config", "digits_ban.yaml", "--model.init_args.loss", "ban+l",
                               "--seed_everything", "3", *TINY_BATCHES])
    run = cli.trainer.logger.experiment
    assert (run.name, run.group, run.job_type) == ("bornagain-ban+l-smallcnn-seed3", "digits_ban", "fit")
    assert set(run.tags) == {"bornagain", "ban+l", "smallcnn", "digits"}
    fit_id = run.id
    # the generations' curves and the ensembles keep their own x-axes, whatever Lightning's "*" rule says
    assert defined["generation_1/val/acc"] == "generation/epoch"
    assert defined["ensemble/test/acc"] == "ensemble/size"
    assert defined["born_again/test/acc"] == "born_again/generation"
    wandb.finish()
    checkpoint = torch.load(in_tmp / "checkpoints/digits_ban/latest/last.ckpt", weights_only=True)
    assert checkpoint["lightning_kd"]["wandb"]["id"] == fit_id
    # test from the fit's checkpoint continues the fit's run
    tested = KDLightningCLI(args=["test", "--config", "digits_ban.yaml", "--ckpt_path",
                                  "checkpoints/digits_ban/latest/last.ckpt", "--trainer.enable_progress_bar", "false"])
    assert tested.trainer.logger.experiment.id == fit_id
    assert tested.trainer.logger.experiment.job_type == "test"


def test_checkpoints_as_artifacts_with_the_teacher_recorded(in_tmp: Path) -> None:
    _run(CONFIGS / "digits_teacher.yaml", in_tmp, "--trainer.logger", "false")
    cli = KDLightningCLI(args=["fit", "--config", str(CONFIGS / "digits_kd.yaml"), *TINY,
                               "--trainer.callbacks+=lightning_kd.callbacks.CheckpointArtifacts"])
    run = cli.trainer.logger.experiment
    (callback,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "CheckpointArtifacts"]
    assert callback.logged["checkpoints"] == ["kd-student.ckpt"]
    (teacher,) = callback.logged["teachers"]
    assert teacher["name"] == "teacher-digits_teacher-teacher"  # the config's teacher, not any teacher.ckpt
    import hashlib

    teacher_file = in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt"
    assert teacher["sha256"] == hashlib.sha256(teacher_file.read_bytes()).hexdigest()
    wandb.finish()
    wanted = (callback.logged["artifact"].encode(), b"teacher-digits_teacher-teacher")
    deadline = time.monotonic() + 30  # W&B's service process writes the offline record: on a loaded machine, late
    while True:
        recorded = next(Path(run.dir).parent.glob("run-*.wandb")).read_bytes()  # the offline run's own record
        if all(part in recorded for part in wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(part in recorded for part in wanted)


def test_the_config_that_ran_is_saved_with_the_runs_outputs(in_tmp: Path) -> None:
    _run(CONFIGS / "digits_teacher.yaml", in_tmp, "--trainer.logger", "false")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        main(["test", "--config", str(CONFIGS / "digits_teacher.yaml"), "--ckpt_path",
              "checkpoints/digits_teacher/latest/teacher.ckpt", "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false"])
    # the fit's callback states are not the evaluation's business: Lightning's warnings about them are not shown
    assert not [str(w.message) for w in seen if "callbacks used to create the checkpoint" in str(w.message)
                or "The dirpath has changed" in str(w.message)]
    folder = in_tmp / "checkpoints/digits_teacher/latest"
    assert yaml.safe_load((folder / "config.yaml").read_text())["model"]["class_path"] == "lightning_kd.Classifier"
    assert (folder / "config-test.yaml").is_file()  # the test run's own, not the fit's overwritten
    assert not (in_tmp / "config.yaml").exists()


def test_the_readme_main_job_prints_no_warning_and_gives_the_recorded_accuracies(tmp_path: Path) -> None:
    # as a new user runs it: a fresh folder, a real process, W&B offline

    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("WANDB_SILENT", None)
    env.pop("OMP_NUM_THREADS", None)  # the threads a user's run has (the test workers run one each)
    # ...whose idle threads sleep instead of spinning: beside the other test worker (and its DDP processes) on two
    # cores, spinning threads took this run from 21 s to 137 s in CI; the arithmetic and the accuracies are the same
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    result = subprocess.run([sys.executable, "-m", "lightning_kd", "fit", "--config", str(CONFIGS / "digits_ban.yaml")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Born-Again generations" in output and "epoch 80/80" in output
    warnings = [line for line in output.splitlines() if "warn" in line.lower()]
    assert not warnings, warnings
    # behaviour kept across releases: the same accuracies, bit for bit, as a recording made on this kind of CPU
    recorded = json.loads((Path(__file__).parent / "data/digits_ban_seed0_generations.json").read_text())
    produced = json.loads((tmp_path / "checkpoints/digits_ban/latest/generations.json").read_text())
    runs = [(run["generations"], run["ensembles"]) for run in recorded["recordings"]]
    assert (produced["generations"], produced["ensembles"]) in runs, (
        "the main job's accuracies match no recording: a change of behaviour, or a new kind of CPU (then check that "
        f"the previous release gives the same here and add a recording): {produced['generations']}")


def test_the_full_size_born_again_densenet_runs_a_forward() -> None:
    from lightning_kd.checkpoints import build_network

    settings = yaml.safe_load((CONFIGS / "cifar100_densenet112_ban.yaml").read_text())
    student = dict(settings["model"]["init_args"]["student"])
    student["init_args"] = {**student["init_args"], "num_classes": 100}
    network = build_network(student).eval()
    with torch.no_grad():
        assert network(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_a_run_without_a_schedule_saves_a_config_that_runs_again_and_resumes(in_tmp: Path) -> None:
    # issue 23: `lr_scheduler: none` was saved as "Unable to serialize instance none"
    quick = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", *TINY_BATCHES,
             "--trainer.callbacks.save_last", "true"]  # the teacher file keeps the best epoch; last.ckpt the last
    main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), "--model.init_args.lr_scheduler", "none",
          "--trainer.max_epochs", "1", *quick])
    run = in_tmp / "checkpoints/digits_teacher/latest"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["init_args"]["lr_scheduler"] == "none"
    checkpoint = torch.load(run / "teacher.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["lr_scheduler"] == "none"
    main(["fit", "--config", str(run / "config.yaml"), "--trainer.max_epochs", "2", "--ckpt_path", "last", *quick])
    assert torch.load(run / "last.ckpt", weights_only=False)["global_step"] == 4  # 2 x 2 steps, in the same run


def test_resumes_are_checked_whatever_built_the_trainer(in_tmp: Path, teacher_runs) -> None:
    from lightning_kd.errors import Refusal

    quick = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", *TINY_BATCHES,
             "--model.init_args.lr_scheduler", "none"]
    folder = in_tmp / "checkpoints/digits_teacher/latest"
    folder.mkdir(parents=True)
    shutil.copy(teacher_runs(CONFIGS / "digits_teacher.yaml") / "checkpoints/digits_teacher/latest/teacher.ckpt",
                folder)
    shutil.copy(folder / "teacher.ckpt", in_tmp / "other-teacher.ckpt")
    kd = ["fit", "--config", str(CONFIGS / "digits_kd.yaml"), *quick]
    with pytest.raises(Refusal, match=r"--ckpt_path last: no checkpoint named last in the runs of "
                                      r"checkpoints/digits_kd, so nothing would be resumed"):
        main([*kd, "--trainer.max_epochs", "1", "--ckpt_path", "last"])
    assert not (in_tmp / "checkpoints/digits_kd").exists()
    main([*kd, "--trainer.max_epochs", "1"])
    student = in_tmp / "checkpoints/digits_kd/latest/kd-student.ckpt"
    main([*kd, "--trainer.max_epochs", "2", "--ckpt_path", str(student)])
    resumed = torch.load(student, weights_only=False)
    assert resumed["epoch"] == 1
    # issue 23: a run resumed once no longer recorded its teacher, so a second resume took another one silently
    assert resumed["lightning_kd"]["teacher_ckpt"] == "checkpoints/digits_teacher/latest/teacher.ckpt"
    with pytest.raises(Refusal, match=r"teacher_ckpt: 'checkpoints/digits_teacher/latest/teacher.ckpt' in the "
                                      r"checkpoint, 'other-teacher.ckpt' asked"):
        main([*kd, "--trainer.max_epochs", "3", "--ckpt_path", str(student),
              "--model.init_args.teacher_ckpt", "other-teacher.ckpt"])


def test_a_resume_with_other_settings_or_a_longer_cosine_is_refused_from_python(tmp_path: Path) -> None:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_kd.data import DigitsDataModule
    from lightning_kd.errors import Refusal
    from tests.helpers import cpu_trainer

    def fit(task, max_epochs: int, ckpt_path: Path | None = None) -> None:
        cpu_trainer(max_epochs=max_epochs, limit_train_batches=2, enable_checkpointing=True,
                    callbacks=[ModelCheckpoint(tmp_path, "run")]).fit(task, DigitsDataModule(batch_size=32),
                                                                    ckpt_path=ckpt_path)

    fit(BornAgain(MLP(hidden_sizes=(16,), num_classes=10), loss="ban", lr_scheduler="none"), 1)
    # issue 23: from Python, a `ban` run resumed as `ban+l` trained on without a word
    with pytest.raises(Refusal, match=r"this task's settings differ: loss: 'ban' in the checkpoint, 'ban\+l' here"):
        fit(BornAgain(MLP(hidden_sizes=(16,), num_classes=10), loss="ban+l", lr_scheduler="none"), 2,
            tmp_path / "run.ckpt")
    (tmp_path / "run.ckpt").unlink()
    fit(Classifier(MLP(hidden_sizes=(16,), num_classes=10)), 3)  # cosine over 3 epochs, finished
    # issue 23: resumed with max_epochs 6, the learning rate climbed back up (0.0, 0.0125, 0.0375)
    with pytest.raises(Refusal, match=r"the cosine schedule spans 3 epochs in the checkpoint, 6 here"):
        fit(Classifier(MLP(hidden_sizes=(16,), num_classes=10)), 6, tmp_path / "run.ckpt")


CNN_STUDENT = ["--model.init_args.student", "small_cnn"]
"""The feature methods on maps distil into a CNN (mnist5k_kd's student is an MLP)."""

FAMILIES = {  # a run of each family, with what makes it that family's
    "dml": ("mnist5k_dml.yaml", []),
    "dml-alternating": ("mnist5k_dml.yaml", ["--model.init_args.scheme", "alternating"]),
    "self-distillation": ("mnist5k_byot.yaml", []),
    "kd2m": ("mnist5k_kd2m.yaml", []),
    "multi-teacher": ("mnist5k_multi_teacher.yaml", ["--model.init_args.weighting", "ca-mkd"]),
    # several students, their fitted fusion (a buffer of the fused network) resumed with them
    "multi-student": ("mnist5k_multi_student.yaml", ["--model.init_args.mutual_weight", "1.0"]),
    "teacher-free": ("mnist5k_tfkd_reg.yaml", []),
    "vanilla-kd": ("mnist5k_kd.yaml", []),
    # the logit methods without a config of their own here: mnist5k_kd's run with the method swapped in
    "dkd": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.DecoupledKD"]),
    "dist": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.DIST"]),
    "logit-standardisation": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.LogitStandardisedKD"]),
    # a feature method, its hint regressor (a trained part of the task) resumed with the student
    "fitnets": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.FitNets", "--model.init_args.student_layers",
                                    "penultimate", "--model.init_args.teacher_layers", "penultimate"]),
    # CRD: its memory banks and constants (buffers) resumed with the student
    "crd": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.CRD", "--model.init_args.negatives", "256"]),
    # feature methods on maps (a CNN student): none trained beside the student (AT), regressors and variances (VID),
    # fusions across levels (ReviewKD), connectors with the teacher's margins as buffers (OFD)
    "at": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.AttentionTransfer", *CNN_STUDENT,
                               "--model.init_args.student_layers", "stages[-1]",
                               "--model.init_args.teacher_layers", "stages[-1]"]),
    "vid": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.VID", *CNN_STUDENT,
                                "--model.init_args.student_layers", "stages[-1]",
                                "--model.init_args.teacher_layers", "stages[-1]"]),
    "reviewkd": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.ReviewKD", *CNN_STUDENT,
                                     "--model.init_args.student_layers", '["stages[-1]", "penultimate"]',
                                     "--model.init_args.teacher_layers", '["preact_stages[-1]", "penultimate"]']),
    "ofd": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.OFD", *CNN_STUDENT,
                                "--model.init_args.student_layers", "preact_stages[-1]",
                                "--model.init_args.teacher_layers", "preact_stages[-1]"]),
    "ab": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.ActivationBoundaries", *CNN_STUDENT,
                               "--model.init_args.student_layers", "preact_stages[-1]",
                               "--model.init_args.teacher_layers", "preact_stages[-1]"]),
    "nst": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.NST", *CNN_STUDENT,
                                "--model.init_args.student_layers", "stages[-1]",
                                "--model.init_args.teacher_layers", "stages[-1]"]),
    "fsp": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.FSP", *CNN_STUDENT,  # widths 32, 64 on both
                                "--model.init_args.student_layers", '["stages[0]", "stages[1]"]',
                                "--model.init_args.teacher_layers", '["stages[0]", "stages[1]"]']),
    "ft": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.FactorTransfer", *CNN_STUDENT,
                               "--model.init_args.paraphraser_ckpt", "paraphraser.ckpt"]),
    # relations of the pooled features, on mnist5k_kd's MLP student
    "rkd": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.RKD"]),
    "pkt": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.PKT"]),
    "cc": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.CorrelationCongruence"]),
    "sp": ("mnist5k_kd.yaml", ["--model.class_path", "lightning_kd.SimilarityPreserving",
                               "--model.init_args.student_layers", "penultimate",
                               "--model.init_args.teacher_layers", "penultimate"]),
}


def _family_run(folder: Path, family: str, teacher_runs) -> tuple[list[str], Path]:
    """A two-epoch run of ``family`` set up in ``folder`` (its config and teachers' files): its arguments and the
    checkpoint holding the last epoch's state, as ``<runs folder>/<file>`` (the file is in a run's folder there)."""
    config, extra = FAMILIES[family]
    settings = yaml.safe_load((CONFIGS / config).read_text())
    if extra[:1] == ["--model.class_path"]:  # another method on the same networks: its own arguments' defaults
        method = importlib.import_module("lightning_kd").__getattribute__(extra[1].rsplit(".", 1)[1])
        accepted = inspect.signature(method.__init__).parameters
        settings["model"] = {"class_path": extra[1], "init_args": {
            k: v for k, v in settings["model"]["init_args"].items() if k in accepted and k not in {"alpha"}}}
        extra = extra[2:]
    settings["trainer"]["logger"] = False
    checkpoint = settings["trainer"]["callbacks"][0]["init_args"]
    checkpoint.update(filename="run", monitor=None, save_top_k=1)  # the last epoch's state, each epoch
    folder.mkdir(parents=True)
    (folder / "run.yaml").write_text(yaml.safe_dump(settings))
    for teacher_config in teacher_configs(settings):  # the teachers' files, trained once per session
        for path in _written_checkpoints(yaml.safe_load(teacher_config.read_text())):
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            share_file(teacher_runs(teacher_config) / path, folder / path)
    if "paraphraser.ckpt" in extra:  # FT's first run, as its file: a paraphraser for the teacher's last stage
        from lightning_kd import FactorTransfer

        torch.manual_seed(0)  # the same file for the killed run and the whole one
        first = FactorTransfer(SmallCNN(num_classes=10), SmallCNN(widths=(32, 64, 128), num_classes=10),
                               phase="paraphraser")
        first.build_projectors((1, 28, 28))
        torch.save({"hyper_parameters": {"phase": "paraphraser", "teacher_layers": "stages[-1]", "rate": 0.5},
                    "state_dict": first.state_dict()}, folder / "paraphraser.ckpt")
    return ["fit", "--config", "run.yaml", "--trainer.max_epochs", "2", *TINY_BATCHES, *extra], \
        Path(checkpoint["dirpath"]) / "run.ckpt"


def _born_again_run(folder: Path) -> list[str]:
    """Four generations of two epochs each (0..3 in epochs 0-1, ..., 6-7) set up in ``folder``: the arguments."""
    settings = yaml.safe_load((CONFIGS / "digits_ban.yaml").read_text())
    settings["trainer"]["callbacks"][1]["init_args"]["epochs"] = 2
    folder.mkdir(parents=True)
    (folder / "ban.yaml").write_text(yaml.safe_dump(settings))
    return ["fit", "--config", "ban.yaml", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.limit_train_batches", "3"]


@pytest.fixture(scope="module")
def sigkilled_runs(tmp_path_factory: pytest.TempPathFactory, teacher_runs) -> Path:
    """Every family's run, killed by a real SIGKILL in the second batch of its second epoch (Born-Again: of its
    sixth, in generation 2), one folder each."""
    def kill_every_run(root: Path) -> None:
        runs = [(root / family, _family_run(root / family, family, teacher_runs)[0], 1) for family in FAMILIES]
        run_each_until_sigkilled([*runs, (root / "born-again", _born_again_run(root / "born-again"), 5)])

    return made_once(tmp_path_factory, "sigkilled", kill_every_run)  # once for all workers


def test_born_again_run_killed_and_resumed_through_the_cli_ends_as_an_uninterrupted_one(
    in_tmp: Path, sigkilled_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _born_again_run(in_tmp / "whole")
    monkeypatch.chdir(in_tmp / "whole")
    main(args)
    monkeypatch.chdir(sigkilled_runs / "born-again")
    killed = only_run(Path("checkpoints/digits_ban"))
    assert not (killed / "generation_2.ckpt").exists() and (killed / "generation_1.ckpt").exists()
    main([*args, "--ckpt_path", "last"])  # the README's resume command: the newest run's last.ckpt
    assert only_run(Path("checkpoints/digits_ban")) == killed  # resumed in its own folder, now the latest
    assert Path("checkpoints/digits_ban/latest").resolve() == killed.resolve()
    whole_run = in_tmp / "whole/checkpoints/digits_ban/latest"
    for generation in range(4):
        name = f"generation_{generation}.ckpt"
        whole = torch.load(whole_run / name, weights_only=True)["state_dict"]
        resumed = torch.load(killed / name, weights_only=True)["state_dict"]
        assert whole.keys() == resumed.keys()
        assert all(torch.equal(whole[k], resumed[k]) for k in whole if isinstance(whole[k], torch.Tensor)), generation
    whole_rows = json.loads((whole_run / "generations.json").read_text())["generations"]
    assert json.loads((killed / "generations.json").read_text())["generations"] == whole_rows


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_killed_and_resumed_ends_as_an_uninterrupted_run(in_tmp: Path, teacher_runs, family: str,
                                                                      sigkilled_runs: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 23: only Born-Again with Generations carried the RNG; these ended 0.012 to 0.29 away
    args, ckpt = _family_run(in_tmp / "whole", family, teacher_runs)
    monkeypatch.chdir(in_tmp / "whole")
    main(args)
    monkeypatch.chdir(sigkilled_runs / family)
    killed = only_run(ckpt.parent) / ckpt.name  # the killed run's own folder (never linked as latest)
    assert not (ckpt.parent / "latest").exists()
    assert torch.load(killed, weights_only=True)["epoch"] == 0  # the kill came in the second epoch
    main([*args, "--ckpt_path", str(killed)])
    assert only_run(ckpt.parent) == killed.parent  # the resumed run went on in its folder
    whole = torch.load(in_tmp / "whole" / ckpt.parent / "latest" / ckpt.name, weights_only=True)["state_dict"]
    resumed = torch.load(killed, weights_only=True)["state_dict"]
    assert whole.keys() == resumed.keys()
    differing = {k: float((whole[k].double() - resumed[k].double()).abs().max()) for k in whole
                 if not torch.equal(whole[k], resumed[k])}
    assert not differing, differing


def test_a_python_resume_with_other_teachers_or_data_is_refused(tmp_path: Path) -> None:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_kd import MultiTeacherKD
    from lightning_kd.data import DigitsDataModule, MNIST5kDataModule
    from lightning_kd.errors import Refusal
    from tests.helpers import cpu_trainer

    def fit(task, data=None, ckpt_path: Path | None = None, name: str = "run") -> None:
        cpu_trainer(max_epochs=2 if ckpt_path else 1, limit_train_batches=2, limit_val_batches=1,
                    enable_checkpointing=True, callbacks=[ModelCheckpoint(tmp_path / name, name)]).fit(
            task, data or DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)

    def teacher(name: str, widths: tuple[int, ...]) -> Path:
        fit(Classifier(SmallCNN(widths=widths, num_classes=10), lr_scheduler="none"), name=name)
        return tmp_path / name / f"{name}.ckpt"

    first, second = teacher("first", (8, 16)), teacher("second", (8, 16))
    student = lambda: MLP(input_shape=(1, 8, 8), hidden_sizes=(16,), num_classes=10)  # noqa: E731
    fit(VanillaKD(student(), SmallCNN(widths=(8, 16), num_classes=10), teacher_ckpt=first, lr_scheduler="none"))
    run = tmp_path / "run/run.ckpt"
    # issue 23: another teacher was silently replaced by the checkpoint's on a resume
    with pytest.raises(Refusal, match=r"teacher_ckpt: '.*first.ckpt' in the checkpoint, '.*second.ckpt' here"):
        fit(VanillaKD(student(), SmallCNN(widths=(8, 16), num_classes=10), teacher_ckpt=second,
                      lr_scheduler="none"), ckpt_path=run)
    run.unlink()
    teachers = [SmallCNN(widths=(8, 16), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10),
                SmallCNN(widths=(4, 8), num_classes=10)]
    fit(MultiTeacherKD(student(), teachers, lr_scheduler="none"))
    with pytest.raises(Refusal, match=r"teacher_3: SmallCNN \([\d,]+ parameters\) in the checkpoint, none here"):
        fit(MultiTeacherKD(student(), teachers[:2], lr_scheduler="none"), ckpt_path=run)  # a teacher dropped
    with pytest.raises(Refusal, match=r"data: \{'class': 'DigitsDataModule'.* in the checkpoint, \{'class': "
                                      r"'MNIST5kDataModule'"):
        fit(MultiTeacherKD(MLP(input_shape=(1, 28, 28), hidden_sizes=(16,), num_classes=10), teachers,
                           lr_scheduler="none"), MNIST5kDataModule(batch_size=32), ckpt_path=run)
