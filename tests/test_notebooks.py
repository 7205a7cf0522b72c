"""The notebooks run top to bottom (with a small budget)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# what each notebook must print once it has run
EXPECTED = {
    "quickstart.ipynb": ["teacher test accuracy", "KD student test accuracy"],
    "born_again.ipynb": ["generation 0", "generation 3", "ensemble of generations 1..3: test accuracy"],
}


def test_every_notebook_has_expectations() -> None:
    assert {path.name for path in NOTEBOOKS} == set(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stored_with_their_outputs(path: Path) -> None:
    """A reader (and the docs, which show them as stored) sees the full run's results and plots without running it."""
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), f"{path.name}: run it top to bottom and save it with outputs"
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), f"{path.name}: run in order"
    outputs = [o for cell in code for o in cell.get("outputs", [])]
    printed = "".join(o.get("text", "") for o in outputs)
    assert all(text in printed for text in EXPECTED[path.name])
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: its plots are not stored"
    assert not [o for o in outputs if o.get("output_type") == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTNING_KD_NOTEBOOK_EPOCHS", "3")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources=resources)
    client.execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    for text in EXPECTED[path.name]:
        assert text in outputs
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
