"""A plain (non-editable) install works on its own: the wheel carries the configs and runs one by name."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_the_wheel_installs_and_runs_a_shipped_config_by_name(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(REPO)], check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = wheels.glob("lightning_kd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lightning_kd/configs/digits_ban.yaml" in names and "lightning_kd/py.typed" in names
    assert any(name.endswith("licenses/LICENSE") or name.endswith("/LICENSE") for name in names)

    # a fresh venv: the wheel installed without its dependencies, which it finds in this environment's
    # site-packages through a .pth line (one that does not run the editable install's own .pth hooks)
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    target = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                          text=True).strip())
    (target / "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "run"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"WANDB_MODE": "offline"}
    where = subprocess.check_output([str(python), "-c", "import lightning_kd; print(lightning_kd.__file__)"],
                                    text=True, cwd=work, env=env).strip()
    assert Path(where).is_relative_to(target)  # the installed copy, not the repository
    result = subprocess.run(
        [str(python), "-m", "lightning_kd", "fit", "--config", "digits_teacher", "--trainer.max_epochs", "1",
         "--trainer.limit_train_batches", "2", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work / "checkpoints/digits_teacher/latest/teacher.ckpt").is_file()
