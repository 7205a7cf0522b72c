"""Sphinx configuration: the API pages come from the package's docstrings (Google style)."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import lightning_kd

project = "lightning-kd"
author = "The lightning-kd authors"
copyright = "2026, The lightning-kd authors"
release = lightning_kd.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # torch's and Lightning's docstrings are not ours to build
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ["_build", "_generated"]
html_theme = "alabaster"
html_title = f"lightning-kd {release}"
# the docstrings refer to names outside these pages (torch, Lightning): not warnings
nitpicky = False
suppress_warnings = ["ref.python"]

# The API page lists every module of the package, found rather than listed (a new module needs no edit here).
SECTIONS = {"tasks": "Tasks", "losses": "Losses", "models": "Networks", "data": "Data", "callbacks": "Callbacks",
            "cli": "Command line"}
REEXPORTING = {"lightning_kd.tasks", "lightning_kd.losses"}  # packages that re-export their modules' names


def write_api_modules(target: Path) -> None:
    modules = sorted(info.name for info in pkgutil.walk_packages(lightning_kd.__path__, "lightning_kd.")
                     if not info.name.endswith("__main__"))
    lines = []
    for key, title in [*SECTIONS.items(), ("", "Package")]:
        chosen = [m for m in modules if (m.split(".")[1] == key if key else m.split(".")[1] not in SECTIONS)]
        lines += [title, "-" * len(title), ""]
        for module in chosen:
            lines.append(f".. automodule:: {module}")
            if module in REEXPORTING:
                lines.append("   :no-members:")
        lines.append("")
    target.parent.mkdir(exist_ok=True)
    target.write_text("\n".join(lines))


write_api_modules(Path(__file__).parent / "_generated" / "api_modules.rst")
