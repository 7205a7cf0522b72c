"""Sphinx configuration: the API pages come from the package's docstrings (Google style)."""

from __future__ import annotations

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
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"lightning-kd {release}"
# the docstrings refer to names outside these pages (torch, Lightning): not warnings
nitpicky = False
suppress_warnings = ["ref.python"]
