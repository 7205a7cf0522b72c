"""docs/tutorial.rst runs as written: its two files, in a folder of their own, through the ``lightning-kd`` command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import REPO

QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
         "--trainer.enable_progress_bar", "false"]


def tutorial_files() -> dict[str, str]:
    """The page's code blocks that name a file (``:caption: <file>``), by file name."""
    text = (REPO / "docs/tutorial.rst").read_text()
    blocks = re.findall(r"\.\. code-block:: \w+\n   :caption: (\S+)\n\n((?:   .*\n|\n)+)", text)
    return {name: "\n".join(line[3:] for line in body.splitlines()).strip() + "\n" for name, body in blocks}


def command(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The installed ``lightning-kd`` script (not ``python -m``: the working directory is not on its path)."""
    script = Path(sys.executable).parent / "lightning-kd"
    return subprocess.run([str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "offline"})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's files written out, and the teacher it distils from trained (briefly)."""
    folder = tmp_path_factory.mktemp("tutorial")
    files = tutorial_files()
    assert set(files) == {"standardised_kd.py", "standardised_kd.yaml"}
    for name, text in files.items():
        (folder / name).write_text(text)
    teacher = command(["fit", "--config", "digits_teacher", *QUICK, "--trainer.logger", "false"], folder)
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    return folder


def test_the_tutorials_method_trains_from_the_command_line(folder: Path) -> None:
    result = command(["fit", "--config", "standardised_kd.yaml", *QUICK], folder)
    assert result.returncode == 0, result.stderr[-3000:]
    run = (folder / "checkpoints/standardised_kd/latest").resolve()
    assert run.name == "standardisedkd-tinynet-seed0" and (run / "student.ckpt").is_file()
    checkpoint = torch.load(run / "student.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["alpha"] == 0.9 and checkpoint["epoch"] == 0
    assert any(key.startswith("teacher") for key in checkpoint["state_dict"])  # the teacher came from its checkpoint
    refused = command(["fit", "--config", "standardised_kd.yaml", *QUICK, "--model.init_args.alpha", "2"], folder)
    assert refused.returncode == 2
    expected = "lightning-kd: error: alpha weighs the two terms and must be in [0, 1], got 2"
    assert any(line.startswith(expected) for line in refused.stderr.splitlines()), refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr


def test_the_contract_runs_on_the_tutorials_class(folder: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "tests/test_contract.py"), "-q",
                             "-p", "no:cacheprovider", "--task-class", "standardised_kd.StandardisedKD", "-k",
                             "StandardisedKD"], cwd=folder, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "WANDB_MODE": "offline"})
    assert result.returncode == 0 and re.search(r"\b[1-9]\d* passed", result.stdout), result.stdout[-3000:]


def test_the_tutorials_loss_is_its_formula(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(folder))
    from standardised_kd import standardised_kd_loss

    generator = torch.Generator().manual_seed(0)
    zs, zt = (torch.randn(6, 5, dtype=torch.float64, generator=generator) * 3 for _ in range(2))
    y = torch.randint(0, 5, (6,), generator=generator)
    alpha, T = 0.7, 2.0

    def z(logits: torch.Tensor) -> torch.Tensor:  # the formula, sample by sample
        rows = []
        for row in logits:
            mean = sum(row.tolist()) / len(row)
            std = (sum((v - mean) ** 2 for v in row.tolist()) / (len(row) - 1)) ** 0.5
            rows.append([(v - mean) / (std + 1e-7) for v in row.tolist()])
        return torch.tensor(rows, dtype=torch.float64)

    p, q = F.softmax(z(zt) / T, dim=1), F.softmax(z(zs) / T, dim=1)
    kl = (p * (p.log() - q.log())).sum(dim=1).mean() * T**2
    expected = (1 - alpha) * F.cross_entropy(zs, y) + alpha * kl
    torch.testing.assert_close(standardised_kd_loss(zs, zt, y, alpha, T)["loss"], expected)
