"""Checkpoints written by an earlier release still load, hand their network on, and resume.

``tests/fixtures/release_0_1_0/`` holds one small checkpoint per method family written by lightning-kd
0.1.0 through its CLI (``tests/fixtures/make_release_checkpoints.py``). A change that renames a module,
a hyperparameter or a state-dict entry fails here rather than in a user's resumed run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from pytorch_lightning import seed_everything

import lightning_kd
from lightning_kd.callbacks import Generations
from lightning_kd.checkpoints import CHECKPOINT_KEY, build_network, load_network
from lightning_kd.data import DigitsDataModule
from tests.conftest import REPO
from tests.helpers import cpu_trainer

FIXTURES = REPO / "tests" / "fixtures" / "release_0_1_0"
FAMILIES = {
    "classifier": lightning_kd.Classifier,
    "vanilla_kd": lightning_kd.VanillaKD,
    "born_again": lightning_kd.BornAgain,
    "teacher_free": lightning_kd.TeacherFreeKD,
    "multi_teacher": lightning_kd.MultiTeacherKD,
    "mutual": lightning_kd.DeepMutualLearning,
    "self_distillation": lightning_kd.SelfDistillation,
    "distribution_matching": lightning_kd.DistributionMatchingKD,
}


def test_every_family_has_a_fixture() -> None:
    assert {path.stem for path in FIXTURES.glob("*.ckpt")} == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_release_checkpoint_loads_and_resumes(family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the checkpoints name their teachers' files relative to the repository, where they were written
    monkeypatch.chdir(REPO)
    path = tmp_path / f"{family}.ckpt"
    shutil.copy(FIXTURES / f"{family}.ckpt", path)
    saved = torch.load(path, weights_only=False)
    task = FAMILIES[family].load_from_checkpoint(path)
    x = torch.randn(4, 1, 8, 8)
    task.eval()
    # the handed-on network is the saved one, bit for bit, and loads alone as a teacher
    network = load_network(path)
    torch.testing.assert_close(network.eval()(x), task(x), rtol=0, atol=0)
    assert set(saved[CHECKPOINT_KEY]["roles"]) == set(task.networks())
    before = {name: value.clone() for name, value in network.state_dict().items()}

    if family == "born_again":  # Generations resumes a sequence from its start, as the CLI builds it
        task = lightning_kd.BornAgain(build_network(saved["hyper_parameters"]["student"]), loss="ban+l")
    seed_everything(0)
    # the rest of the run the checkpoint was written in: its budget, its generations
    generations = [Generations(generations=1, epochs=[1, 2], print_table=False)] if family == "born_again" else []
    trainer = cpu_trainer(max_epochs=None if generations else 2, limit_train_batches=2, limit_val_batches=1,
                          callbacks=generations, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32), ckpt_path=path)
    assert trainer.global_step > saved["global_step"]
    changed = [name for name, value in task.network.state_dict().items()
               if value.is_floating_point() and not torch.equal(value, before[name])]
    assert changed, "resuming trained nothing"
    assert all(torch.isfinite(p).all() for p in task.parameters())

