"""Sphinx configuration: the API pages come from the package's docstrings (Google style)."""

from __future__ import annotations

import inspect
import pkgutil
import sys
from pathlib import Path

from sphinx.util.inspect import stringify_signature

import lightning_kd

project = "lightning-kd"
author = "The lightning-kd authors"
copyright = "2026, The lightning-kd authors"
release = lightning_kd.__version__

sys.path.insert(0, str(Path(__file__).parent / "_ext"))
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_nb", "mathml", "record_plots"]
html_math_renderer = "mathml"  # formulas as MathML at build time: they render offline, with no script
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # torch's and Lightning's docstrings are not ours to build
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ["_build", "_generated"]
# The notebooks are pages too, shown with the outputs they are stored with (executing them is the tests' job).
nb_execution_mode = "off"
nb_output_stderr = "remove"  # warnings a run prints are for its terminal; the pages show results and plots
NOTEBOOKS = Path(__file__).parent / "notebooks"  # a copy of ../notebooks (Sphinx reads pages under docs/ only)
NOTEBOOKS.mkdir(exist_ok=True)
for notebook in (Path(__file__).parents[1] / "notebooks").glob("*.ipynb"):
    (NOTEBOOKS / notebook.name).write_bytes(notebook.read_bytes())
html_theme = "alabaster"
# wide enough for the 120-character lines of the code blocks (alabaster's default body is about 700 px)
html_theme_options = {"page_width": "1320px", "body_max_width": "none"}
html_static_path = ["_static"]
html_css_files = ["wide_code.css"]
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


class Default:
    """A default value shown as its name (a class as ``BaseTask``, not ``<class '...'>``)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        return getattr(self.value, "__qualname__", None) or repr(self.value)


def real_signature(app: object, what: str, name: str, obj: object, options: object, signature: str | None,
                   return_annotation: str | None) -> tuple[str, str | None] | None:
    """A class whose ``__init__`` passes ``(*args, **kwargs)`` on shows what it really takes.

    Protocols are never built (no signature); a class that only sets some of its base's defaults
    (``DEFAULTS``) shows the base's signature with those defaults; one that adds nothing shows the base's.
    """
    if what != "class" or signature not in {"(*args, **kwargs)", "(*args: Any, **kwargs: Any)"}:
        return None
    if getattr(obj, "_is_protocol", False):
        return "", return_annotation
    defaults = vars(obj).get("DEFAULTS", {})
    for base in obj.__mro__[1:]:
        init = vars(base).get("__init__")
        if init is None:
            continue
        parameters = list(inspect.signature(init).parameters.values())[1:]
        if [p.kind for p in parameters] == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]:
            continue  # another pass-through (nn.Module's): look further up
        named = {p.name for p in parameters}
        shown = [p.replace(default=Default(defaults.get(p.name, p.default)))
                 if p.name in defaults or (isinstance(p.default, type) and p.default is not p.empty) else p
                 for p in parameters]
        extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=Default(v))
                 for n, v in defaults.items() if n not in named]
        at = next((i for i, p in enumerate(shown) if p.kind == inspect.Parameter.VAR_KEYWORD), len(shown))
        shown[at:at] = extra
        return stringify_signature(inspect.Signature(shown), show_annotation=False), return_annotation
    return "()", return_annotation


def setup(app: object) -> None:
    app.connect("autodoc-process-signature", real_signature)
