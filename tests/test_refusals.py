"""Nothing silent: blow-ups stop the run, bad values and unusable splits are refused before training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from lightning_kd import VanillaKD
from lightning_kd.cli import console, main
from lightning_kd.data import DigitsDataModule
from lightning_kd.models import MLP, SmallCNN
from lightning_kd.tasks.base import NonFiniteLossError
from tests.conftest import CONFIGS
from tests.helpers import cpu_trainer, only_run

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]


def test_a_diverging_run_stops_at_the_step_and_writes_no_checkpoint(in_tmp: Path) -> None:
    with pytest.raises(NonFiniteLossError, match=r"training stopped at step \d+ \(epoch 0\): (train/loss = (nan|inf)"
                                                 r"|weights are not finite although the loss is)"):
        main(["fit", "--config", str(CONFIGS / "digits_ban.yaml"), *QUIET,
              "--model.init_args.optimizer.init_args.lr", "1e6"])
    assert not list((in_tmp / "checkpoints/digits_ban").glob("*.ckpt"))  # no checkpoint of NaN weights


def test_weights_that_diverge_under_a_finite_loss_stop_the_run_and_are_never_saved(tmp_path: Path) -> None:
    import functools

    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_kd import Classifier
    from lightning_kd.errors import NonFiniteWeightsError
    from lightning_kd.optim import SGD

    torch.manual_seed(0)  # issue 23's case: BatchNorm keeps the loss finite while a running variance reaches inf
    task = Classifier(SmallCNN(widths=(8, 16), num_classes=10), optimizer=functools.partial(SGD, lr=1e6))
    task.finite_check_every_n_steps = 1  # the weights at every step (by default, every log_every_n_steps)
    trainer = cpu_trainer(max_epochs=3, enable_checkpointing=True, callbacks=[ModelCheckpoint(tmp_path, "c")])
    with pytest.raises(NonFiniteWeightsError, match=r"training stopped at step \d+ \(epoch 0\): weights are not "
                                                    r"finite although the loss is .*net\.body\.\d\.running_var"):
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    assert not list(tmp_path.glob("*.ckpt"))
    # at the default interval the loss turns NaN first (step 4): the run stops there, with nothing saved either
    torch.manual_seed(0)
    task = Classifier(SmallCNN(widths=(8, 16), num_classes=10), optimizer=functools.partial(SGD, lr=1e6))
    trainer = cpu_trainer(max_epochs=3, enable_checkpointing=True, callbacks=[ModelCheckpoint(tmp_path, "c")])
    with pytest.raises(NonFiniteLossError, match=r"training stopped at step 4 \(epoch 0\): train/loss = nan"):
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    assert not list(tmp_path.glob("*.ckpt"))


def test_no_path_writes_a_checkpoint_of_non_finite_weights_or_scores_them(tmp_path: Path) -> None:
    from lightning_kd import Classifier
    from lightning_kd.errors import NonFiniteWeightsError

    task = Classifier(MLP(hidden_sizes=(16,), num_classes=10))
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=2)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    with torch.no_grad():
        task.net.body[1].weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match=r"stopped before writing a checkpoint at epoch 1: weights are "
                                                    r"not finite: net\.body\.1\.weight \(1 of 4 tensors\)"):
        trainer.save_checkpoint(tmp_path / "inf.ckpt")  # Lightning's own path, no CLI
    assert not (tmp_path / "inf.ckpt").exists()
    with pytest.raises(NonFiniteWeightsError, match="stopped before validation"):
        cpu_trainer().validate(task, datamodule=DigitsDataModule(batch_size=32), verbose=False)


@pytest.mark.parametrize(("lr", "batches"), [("1e6", "4"), ("3e38", "1")])
def test_finite_weights_whose_outputs_are_not_finite_are_not_scored_or_saved(in_tmp: Path, lr: str,
                                                                              batches: str) -> None:
    # issue 23's cases: the run ended as it diverged and its summary tabulated ~10% accuracy over NaN logits
    with pytest.raises(NonFiniteLossError, match=r"(weights are not finite|validation at epoch 0: \d+ of 180 "
                                                 r"outputs of the net are not finite)"):
        main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUIET, "--trainer.max_epochs", "2",
              "--model.init_args.optimizer.init_args.lr", lr, "--trainer.limit_train_batches", batches])
    assert not list(in_tmp.rglob("*.ckpt"))


def test_an_infinite_temperature_is_refused(in_tmp: Path) -> None:
    settings = yaml.safe_load((CONFIGS / "digits_wide_to_small.yaml").read_text())
    settings["model"]["init_args"]["temperature"] = float("inf")
    (in_tmp / "inf.yaml").write_text(yaml.safe_dump(settings))
    with pytest.raises(ValueError, match="temperature must be finite and > 0, got inf"):
        main(["fit", "--config", "inf.yaml", *QUIET])


class ConstantDigits(DigitsDataModule):
    def load_arrays(self):
        inputs, targets = super().load_arrays()
        return torch.zeros_like(inputs), targets


def test_constant_images_are_refused_rather_than_divided_by_zero() -> None:
    with pytest.raises(ValueError, match=r"ConstantDigits: the training images are constant \(std 0.0\)"):
        ConstantDigits().setup()


@pytest.mark.parametrize(("split", "fraction"), [("val", 0.0001), ("test", 0.0001)])
def test_a_split_too_small_to_hold_a_sample_is_refused(in_tmp: Path, split: str, fraction: float) -> None:
    with pytest.raises(ValueError, match=rf"the {split} split is empty: a fraction of {fraction} of 1797 samples"):
        main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUIET,
              f"--data.init_args.{split}_fraction", str(fraction)])


@pytest.mark.parametrize("max_epochs", ["7", "1000"])
def test_an_explicit_max_epochs_that_disagrees_with_the_generations_is_refused(in_tmp: Path, max_epochs: str) -> None:
    with pytest.raises(ValueError, match=f"trainer.max_epochs is {max_epochs} but the generations take 80 epochs"):
        main(["fit", "--config", str(CONFIGS / "digits_ban.yaml"), *QUIET, "--trainer.max_epochs", max_epochs])


@pytest.mark.parametrize("flags_on_the_device", [False, True])
def test_every_ddp_process_stops_on_a_non_finite_loss(tmp_path: Path, flags_on_the_device: bool) -> None:
    import functools

    from lightning_kd.optim import SGD

    task = VanillaKD(MLP(hidden_sizes=(16,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10),
                     optimizer=functools.partial(SGD, lr=1e6))
    if flags_on_the_device:  # a GPU's way: every process reads its flags at the same steps, and all stop
        task.read_losses_at_their_step, task.finite_check_every_n_steps = False, 5
    trainer = cpu_trainer(devices=2, strategy="ddp_spawn", max_epochs=2, default_root_dir=tmp_path)
    # both processes agree to stop (no rank left waiting in a collective); spawn re-raises the error
    read = r": a loss was not finite at one of the 5 steps from step \d+" if flags_on_the_device else ""
    with pytest.raises(Exception, match=rf"NonFiniteLossError: training stopped at step \d+ \(epoch 0\){read}"):
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        ("digits_kd", ["--model.init_args.teacher_ckpt", "missing.ckpt"],
         "teacher: checkpoint not found: missing.ckpt"),
        ("digits_kd", ["--model.init_args.alpha", "2"], "alpha must be in [0, 1], got 2.0"),
        ("mnist5k_tfkd_reg", ["--model.init_args.true_class_prob", "1.5"],
         "true_class_prob (the virtual teacher's a) must be in (0, 1], got 1.5"),
        ("mnist5k_lsr", ["--model.init_args.label_smoothing", "1"], "label_smoothing must be in [0, 1), got 1.0"),
        ("digits_teacher", ["--model.init_args.net.init_args.num_classes", "3"],
         "the net network (SmallCNN) predicts (3,) outputs per sample but the data has 10 classes"),
        ("mnist5k_kd2m", ["--model.init_args.teacher_ckpt", "null", "--model.init_args.teacher",
                          "lightning_kd.models.MLP", "--model.init_args.matches",
                          "[{distance: mmd_rbf, weight: 1.0, options: {bandwidth: .inf}}]"],
         "bandwidth must be finite and > 0, got inf (an infinite bandwidth makes every kernel value 1 and the MMD 0: "
         "the term would be switched off)"),
        # issue 23: a 94-line union error with the reason in the middle; torch's own optimizer checks; an overflow
        ("digits_wide_to_small", ["--model.init_args.student.init_args.dropout", "1.5"],
         "building the config's objects failed: dropout probability has to be between 0 and 1, but got 1.5"),
        ("digits_teacher", ["--model.init_args.net.init_args.widths", "[-3]"],
         "building the config's objects failed: Trying to create tensor with negative dimension -3: [-3, 1, 3, 3]"),
        ("digits_teacher", ["--model.init_args.optimizer.init_args.lr", "-1"],
         "the optimizer refuses its settings: Invalid learning rate: -1.0"),
        ("digits_teacher", ["--model.init_args.optimizer.init_args.lr", "1e300"],
         "the optimizer's lr 1e+300 is not finite or overflows the parameters' type (largest 3.40282e+38): choose a "
         "learning rate a step can apply"),
        # settings Lightning refuses when it builds the Trainer: its exception's message, in one line
        pytest.param("digits_teacher", ["--trainer.accelerator", "gpu"],
                     "the trainer's settings: No supported gpu backend found!",
                     marks=pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                                              reason="this machine has a GPU")),
        ("digits_teacher", ["--trainer.accelerator", "cpu", "--trainer.devices", "-2"],
         "the trainer's settings: `devices` selected with `CPUAccelerator` should be an int > 0."),
        ("digits_teacher", ["--trainer.strategy", "nonsense"],
         "the trainer's settings: You selected an invalid strategy name: `strategy='nonsense'`. It must be either a "
         "string or an instance of `pytorch_lightning.strategies.Strategy`. Example choices: auto, ddp, ddp_spawn, "
         "deepspeed, ... Find a complete list of options in our documentation at https://lightning.ai"),
        # settings Lightning accepts and then divides by mid-run (all three from Python: test_a_schedule_lightning_...)
        ("digits_teacher", ["--trainer.accumulate_grad_batches", "0"],
         "trainer.accumulate_grad_batches must be an integer >= 1 (the batches whose gradients one optimizer step "
         "sums), got 0"),
    ],
)
def test_the_command_line_refuses_in_one_readable_message(tmp_path: Path, config: str, args: list[str],
                                                           message: str, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    err = console_refusal(["fit", "--config", config, *QUIET, *args], monkeypatch, capsys)
    # the message closes the output
    assert err.strip().splitlines()[-2:] == [f"lightning-kd: error: {message}",
                                             "(set LIGHTNING_KD_DEBUG=1 for the traceback)"]
    monkeypatch.setenv("LIGHTNING_KD_DEBUG", "1")  # the traceback, on demand
    with pytest.raises(Exception, match=re.escape(message)):
        console()


def console_refusal(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """The command's own entry point run in this process (the real process: the test below) with ``args``, which
    it must refuse (exit status 2, no traceback): what it wrote to stderr."""
    import sys

    monkeypatch.delenv("LIGHTNING_KD_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["lightning-kd", *args])
    with pytest.raises(SystemExit) as exit_info:
        console()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_real_process_refuses_in_one_line_and_shows_the_traceback_on_demand(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    message = "alpha must be in [0, 1], got 2.0"
    command = [sys.executable, "-m", "lightning_kd", "fit", "--config", "digits_kd", *QUIET,
               "--model.init_args.alpha", "2"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("LIGHTNING_KD_DEBUG", None)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-2:] == [f"lightning-kd: error: {message}",
                                                       "(set LIGHTNING_KD_DEBUG=1 for the traceback)"]
    assert "Traceback" not in result.stderr
    debug = subprocess.run(command, cwd=tmp_path, env={**env, "LIGHTNING_KD_DEBUG": "1"}, capture_output=True,
                           text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and message in debug.stderr


def _killed_ban_run(in_tmp: Path) -> list[str]:
    """A digits_ban run (2 epochs per generation) killed in generation 1; the args that resume it."""
    settings = yaml.safe_load((CONFIGS / "digits_ban.yaml").read_text())
    settings["trainer"]["callbacks"][1]["init_args"]["epochs"] = 2
    (in_tmp / "ban.yaml").write_text(yaml.safe_dump(settings))
    quick = ["--config", "ban.yaml", *QUIET, "--trainer.limit_train_batches", "3"]
    with pytest.raises(RuntimeError, match="simulated kill"):
        main(["fit", *quick, "--trainer.callbacks+=tests.helpers.KillAtEpoch", "--trainer.callbacks.epoch", "3"])
    return [*quick, "--ckpt_path", "last"]  # the newest run's last.ckpt


def test_resuming_with_another_loss_is_refused_naming_the_change(in_tmp: Path) -> None:
    resume = _killed_ban_run(in_tmp)
    with pytest.raises(ValueError, match=r"changes its settings: loss: 'ban' in the checkpoint, 'ban\+l' asked"):
        main(["fit", *resume, "--model.init_args.loss", "ban+l"])


def test_resuming_with_another_generation_plan_is_refused(in_tmp: Path) -> None:
    resume = _killed_ban_run(in_tmp)
    settings = yaml.safe_load((in_tmp / "ban.yaml").read_text())
    settings["trainer"]["callbacks"][1]["init_args"]["epochs"] = 1
    (in_tmp / "ban1.yaml").write_text(yaml.safe_dump(settings))
    with pytest.raises(ValueError, match=r"the checkpoint's run planned generations 0..3 of 2, 2, 2, 2 epochs; "
                                         r"this command plans generations 0..3 of 1, 1, 1, 1 epochs"):
        main(["fit", *[("ban1.yaml" if arg == "ban.yaml" else arg) for arg in resume]])
    main(["fit", *resume])  # the same settings resume, and finish every generation
    assert (in_tmp / "checkpoints/digits_ban/latest/generation_3.ckpt").is_file()


# a constant learning rate: a cosine run may not resume over a longer budget (its schedule would restart)
CONSTANT_LR = ["--model.init_args.lr_scheduler", "none"]


def test_resuming_with_another_teacher_checkpoint_is_refused(in_tmp: Path) -> None:
    main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUIET, "--trainer.max_epochs", "1"])
    other = in_tmp / "other_teacher.ckpt"
    other.write_bytes((in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt").read_bytes())
    main(["fit", "--config", str(CONFIGS / "digits_kd.yaml"), *QUIET, *CONSTANT_LR, "--trainer.max_epochs", "1"])
    resume = ["fit", "--config", str(CONFIGS / "digits_kd.yaml"), *QUIET, *CONSTANT_LR, "--trainer.max_epochs", "2",
              "--ckpt_path", "checkpoints/digits_kd/latest/kd-student.ckpt"]
    with pytest.raises(ValueError, match=r"teacher_ckpt: 'checkpoints/digits_teacher/latest/teacher.ckpt' in the "
                                         r"checkpoint, 'other_teacher.ckpt' asked"):
        main([*resume, "--model.init_args.teacher_ckpt", "other_teacher.ckpt"])
    main(resume)  # unchanged, it resumes


def test_resuming_with_another_teacher_network_is_refused(in_tmp: Path) -> None:
    main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUIET, "--trainer.max_epochs", "1"])
    teacher = ["--model.init_args.teacher", "lightning_kd.models.SmallCNN",
               "--model.init_args.teacher.init_args.widths", "[32, 64]"]
    main(["fit", "--config", str(CONFIGS / "digits_kd.yaml"), *QUIET, *CONSTANT_LR, "--trainer.max_epochs", "1",
          *teacher])
    resume = ["fit", "--config", str(CONFIGS / "digits_kd.yaml"), *QUIET, *CONSTANT_LR, "--trainer.max_epochs", "2",
              "--ckpt_path", "checkpoints/digits_kd/latest/kd-student.ckpt"]
    other = ["--model.init_args.teacher", "lightning_kd.models.SmallCNN",
             "--model.init_args.teacher.init_args.widths", "[16, 32]"]
    with pytest.raises(ValueError, match=r"changes its settings: teacher: .*'widths': \[32, 64\].* in the checkpoint, "
                                         r".*'widths': \[16, 32\].* asked"):
        main([*resume, *other])
    main([*resume, *teacher])  # the same teacher network resumes


def test_resuming_with_other_data_settings_is_refused(in_tmp: Path) -> None:
    resume = _killed_ban_run(in_tmp)
    with pytest.raises(ValueError, match=r"changes its settings: data.batch_size: 64 in the checkpoint, 32 asked"):
        main(["fit", *resume, "--data.init_args.batch_size", "32"])
    main(["fit", *resume, "--data.init_args.eval_batch_size", "256"])  # how data is loaded may change: it resumes


def test_a_config_with_its_own_run_record_keeps_it_and_the_data_settings(in_tmp: Path) -> None:
    import torch

    main(["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUIET, "--trainer.max_epochs", "1",
          "--trainer.callbacks+=lightning_kd.callbacks.run_record.RunRecord",
          "--trainer.callbacks.settings", '{"note": "mine"}'])
    checkpoint = torch.load(in_tmp / "checkpoints/digits_teacher/latest/teacher.ckpt", weights_only=True)
    (record,) = [state for key, state in checkpoint["callbacks"].items() if key.startswith("RunRecord")]
    assert record["note"] == "mine" and record["data"]["batch_size"] == 64


def _fail_second_save(monkeypatch: pytest.MonkeyPatch, fault) -> None:
    from pytorch_lightning.plugins.io import TorchCheckpointIO

    original = TorchCheckpointIO.save_checkpoint
    calls = []

    def save(self, checkpoint, path, storage_options=None):
        calls.append(path)
        if len(calls) == 2:
            return fault(original, self, checkpoint, path)
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", save)


def _no_space(original, io, checkpoint, path):
    raise OSError(28, "No space left on device", str(path))


def _truncated(original, io, checkpoint, path):
    original(io, checkpoint, path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])  # a writer that lost the end of the file, silently


def _not_written(original, io, checkpoint, path):
    return None  # a permission error swallowed on the way: nothing reached the file


def _disk_full_midway(original, io, checkpoint, path):
    original(io, checkpoint, path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 3])  # what reached the disk before it filled up
    raise OSError(28, "No space left on device", str(path))


@pytest.mark.parametrize(("fault", "error", "match"), [
    (_no_space, Exception, r"checkpoint .*last.ckpt could not be written \(No space left on device\); the previous "
                           r"last.ckpt, if any, is left as it was"),
    (_disk_full_midway, Exception, r"checkpoint .*last.ckpt could not be written \(No space left on device\)"),
    (_truncated, Exception, r"checkpoint .*last.ckpt is incomplete .*is the disk full\?"),
    (_not_written, Exception, r"checkpoint .*last.ckpt was not written \(is the folder writable\?\)"),
])
def test_a_failed_checkpoint_write_stops_the_run(in_tmp: Path, monkeypatch: pytest.MonkeyPatch, fault, error,
                                                 match: str) -> None:
    settings = yaml.safe_load((CONFIGS / "digits_teacher.yaml").read_text())
    settings["trainer"]["callbacks"][0]["init_args"].update(filename="last", save_last=False, monitor=None)
    (in_tmp / "teacher.yaml").write_text(yaml.safe_dump(settings))
    _fail_second_save(monkeypatch, fault)
    with pytest.raises(error, match=match):
        main(["fit", "--config", "teacher.yaml", *QUIET, "--trainer.max_epochs", "3",
              "--trainer.limit_train_batches", "2"])
    # the write went to a temporary file: the previous checkpoint is intact and loads, and no partial file is left
    from lightning_kd import Classifier

    run = only_run(in_tmp / "checkpoints/digits_teacher")
    assert Classifier.load_from_checkpoint(run / "last.ckpt").net is not None
    assert torch.load(run / "last.ckpt", weights_only=False)["epoch"] == 0
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "last.ckpt"]


def test_a_plain_trainer_writes_checkpoints_atomically_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_kd import Classifier

    # no plugin passed: the task swaps Lightning's default writer for the verified one at setup
    _fail_second_save(monkeypatch, _disk_full_midway)
    task = Classifier(MLP(hidden_sizes=(16,), num_classes=10))
    trainer = cpu_trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, enable_checkpointing=True,
                          callbacks=[ModelCheckpoint(dirpath=tmp_path, filename="last", save_top_k=-1)])
    with pytest.raises(Exception, match=r"last.ckpt could not be written \(No space left on device\)"):
        trainer.fit(task, datamodule=DigitsDataModule())
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_non_finite_outputs_are_reported_not_scored(tmp_path: Path) -> None:
    from lightning_kd import BornAgain
    from lightning_kd.callbacks import Generations

    class Broken(torch.nn.Module):  # a given teacher whose outputs are NaN
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)) * float("nan")

    task = BornAgain(MLP(hidden_sizes=(16,), num_classes=10), teacher=Broken())
    trainer = cpu_trainer(max_epochs=None, limit_train_batches=2,
                          callbacks=[Generations(generations=1, epochs=1, dirpath=tmp_path, print_table=False)])
    with pytest.raises(FloatingPointError, match="Broken gives NaN or infinite outputs on the val split"):
        trainer.fit(task, datamodule=DigitsDataModule())
    assert not (tmp_path / "generations.json").exists()


def test_a_value_that_does_not_parse_is_reported_in_a_few_lines(tmp_path: Path) -> None:
    from tests.helpers import lightning_kd_process

    result = lightning_kd_process(["fit", "--config", "digits_kd", "--model.init_args.temperature", "abc"], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 4, result.stderr  # not jsonargparse's 50-line usage and union dump
    assert lines[-1] == ('error: Parser key "model" (lightning_kd.VanillaKD): Parser key "temperature": '
                         "Expected a <class 'float'>. Got value: abc")


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [  # issue 23: the condensed error stopped at "Errors:", the reason dropped
        ("digits_ban", ["--model.init_args.temperature", "inf"],
         'Parser key "model" (lightning_kd.BornAgain): Parser key "temperature": expected float or None, got \'inf\' '
         "(YAML writes infinity as .inf)"),
        ("mnist5k_multi_teacher", ["--model.init_args.teacher", "[null, {class_path: lightning_kd.models.MLP}]"],
         'Parser key "model" (lightning_kd.MultiTeacherKD): Parser key "teacher": expected Module or list[Module] or '
         "None, got \"[None, {'class_path': 'lightning_kd.models.MLP'}]\""),
    ],
)
def test_a_union_value_that_does_not_parse_keeps_its_reason(in_tmp: Path, config: str, args: list[str], message: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config, *QUIET, *args])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message}"


def test_a_setting_lightning_refuses_after_the_fit_started_leaves_one_line_and_no_run_folder(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Lightning checks val_check_interval against the epoch's batches after the fit's start (the config is written
    by then): a ValueError of its own, shown as a refusal, and the run's folder removed with the config in it."""
    err = console_refusal(["fit", "--config", "digits_teacher", *QUIET, "--trainer.val_check_interval", "100000"],
                          monkeypatch, capsys)
    assert err.strip().splitlines()[-2].startswith(
        "lightning-kd: error: Lightning refused the run: `val_check_interval` (100000) must be less than or equal to "
        "the number of the training batches")
    runs = in_tmp / "checkpoints/digits_teacher"  # made with the run's folder, which is gone with its config
    assert runs.is_dir() and not list(runs.iterdir())


@pytest.mark.parametrize("setting", [{"accumulate_grad_batches": 0}, {"check_val_every_n_epoch": 0},
                                     {"val_check_interval": 0}, {"accumulate_grad_batches": -1}])
def test_a_schedule_lightning_would_divide_by_is_refused_before_any_step(setting: dict) -> None:
    from lightning_kd import Classifier
    from lightning_kd.errors import Refusal

    task = Classifier(MLP(hidden_sizes=(8,), num_classes=10))
    trainer = cpu_trainer(limit_train_batches=2, limit_val_batches=1, **setting)
    name = next(iter(setting))
    with pytest.raises(Refusal, match=rf"^trainer\.{name} must be"):
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    assert trainer.global_step == 0


def test_only_what_lightning_itself_raised_counts_as_its_refusal() -> None:
    from pytorch_lightning import Trainer
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    from lightning_kd.cli.app import find_refusal, lightning_refused

    with pytest.raises(TypeError) as lightnings:
        Trainer(accelerator="cpu", devices=-2, logger=False)
    assert lightning_refused(lightnings.value)
    assert str(find_refusal(lightnings.value)).startswith("Lightning refused the run: `devices` selected")
    with pytest.raises(TypeError) as ours:
        len(3)  # a TypeError raised outside Lightning: a bug, with its traceback
    assert not lightning_refused(ours.value) and find_refusal(ours.value) is None
    assert lightning_refused(MisconfigurationException("`gradient_clip_algorithm` foo is invalid."))


def test_a_refusal_is_one_line_and_any_other_error_keeps_its_traceback(monkeypatch, capsys) -> None:
    import lightning_kd.cli.app as app
    from lightning_kd.errors import Refusal

    def refused() -> None:
        try:
            raise Refusal("alpha must be in [0, 1], got 2")
        except Refusal as error:  # as a library would wrap it
            raise RuntimeError("instantiation failed") from error

    monkeypatch.delenv("LIGHTNING_KD_DEBUG", raising=False)
    monkeypatch.setattr(app, "main", refused)
    with pytest.raises(SystemExit) as exit_info:
        app.console()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == "lightning-kd: error: alpha must be in [0, 1], got 2"

    def bug() -> None:
        raise KeyError("an internal bug")

    monkeypatch.setattr(app, "main", bug)
    with pytest.raises(KeyError, match="an internal bug"):  # not condensed: the traceback is the report
        app.console()


def test_paths_that_run_through_a_file_or_a_bad_checkpoint_are_refused_in_one_line(in_tmp: Path) -> None:
    (in_tmp / "notes.txt").write_text("a file, not a folder")
    (in_tmp / "broken.ckpt").write_bytes(b"the first bytes of a checkpoint cut short")
    teacher = ["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUIET, "--trainer.max_epochs", "1"]
    cases = [  # issue 23: each was a raw traceback (some after an epoch of training)
        ([*teacher, "--trainer.callbacks.dirpath", "notes.txt/ckpts"],
         r"the output folder .*notes.txt/ckpts cannot be made: .*notes.txt is a file, not a folder"),
        ([*teacher, "--trainer.callbacks+=lightning_kd.callbacks.EpochCheckpoints", "--trainer.callbacks.epochs", "1",
          "--trainer.callbacks.dirpath", "notes.txt/kept"],
         r"EpochCheckpoints' folder notes.txt/kept cannot be made: notes.txt is a file, not a folder"),
        ([*teacher, "--ckpt_path", "missing.ckpt"], r"--ckpt_path missing.ckpt: no such file"),
        (["fit", "--config", str(CONFIGS / "digits_teacher.yaml"), "--trainer.enable_progress_bar", "false",
          "--trainer.max_epochs", "1", "--trainer.logger.init_args.save_dir", "notes.txt/runs"],
         r"the W&B folder \(save_dir\) .*notes.txt/runs cannot be made: .*notes.txt is a file, not a folder"),
        ([*teacher, "--ckpt_path", "broken.ckpt"], r"--ckpt_path broken.ckpt is truncated or not a PyTorch checkpoint"),
        (["test", "--config", str(CONFIGS / "digits_teacher.yaml"), *QUIET, "--ckpt_path", "broken.ckpt"],
         r"--ckpt_path broken.ckpt is truncated or not a PyTorch checkpoint"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            main(args)
    assert sorted(p.name for p in in_tmp.rglob("*.ckpt")) == ["broken.ckpt"]  # nothing trained, nothing written


def test_a_predictions_file_under_a_file_is_refused_before_predicting(tmp_path: Path) -> None:
    from lightning_kd import Classifier
    from lightning_kd.callbacks import PredictionWriter

    (tmp_path / "notes.txt").write_text("x")
    writer = PredictionWriter(tmp_path / "notes.txt" / "predictions.csv")
    with pytest.raises(ValueError, match=r"the predictions' folder .*notes.txt cannot be made: .*notes.txt is a file"):
        cpu_trainer(callbacks=[writer]).predict(Classifier(MLP(num_classes=10)), datamodule=DigitsDataModule())


def test_evaluating_without_a_checkpoint_is_refused_unless_asked(in_tmp: Path) -> None:
    # issue 24: test without --ckpt_path scored freshly initialised weights (accuracy 0.13) and exited 0
    from lightning_kd.errors import Refusal

    command = ["--config", "digits_teacher", *QUIET, "--trainer.limit_test_batches", "1"]
    for subcommand in ("test", "validate", "predict"):
        with pytest.raises(Refusal, match=rf"{subcommand} without --ckpt_path would score freshly initialised "
                                          r"weights: give the checkpoint"):
            main([subcommand, *command])
    main(["test", *command, "--untrained", "true"])  # said explicitly, it runs


def test_a_shipped_configs_path_outside_the_checkout_points_to_its_name(in_tmp: Path) -> None:
    from lightning_kd.errors import Refusal

    with pytest.raises(Refusal, match=r"--config configs/digits_ban.yaml: no such file here; the shipped config of "
                                      r"that name runs by name: --config digits_ban"):
        main(["fit", "--config", "configs/digits_ban.yaml"])
