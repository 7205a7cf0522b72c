"""The documentation site builds from the docstrings with no warning, and has a page per method."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lightning_kd.catalog import task_classes
from tests.conftest import REPO


def test_the_docs_build_without_warnings(tmp_path: Path) -> None:
    if prebuilt := os.environ.get("LIGHTNING_KD_DOCS_HTML"):  # .ci/run built them with -W just before the tests
        tmp_path = Path(prebuilt)
    else:
        result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                                 str(REPO / "docs"), str(tmp_path)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    api = (tmp_path / "api.html").read_text()
    for cls in task_classes():  # every method documented from its docstring
        assert f"{cls.__module__}.{cls.__name__}" in api, cls
    # one page per method module, named as the module (Classifier trains teachers: no method page)
    pages = {page.stem for page in (REPO / "docs/methods").glob("*.rst")}
    modules = {cls.__module__.rsplit(".", 1)[-1] for cls in task_classes() if cls.__name__ != "Classifier"}
    assert pages == modules, f"docs/methods/ needs a page per method module: missing {modules - pages}, " \
                             f"without a method {pages - modules}"
