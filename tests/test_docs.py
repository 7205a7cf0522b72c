"""The documentation site builds from the docstrings with no warning, and has a page per method."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lightning_kd.catalog import task_classes
from tests.conftest import REPO


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built HTML: .ci/run's build (with -W, just before the tests), or one built here."""
    if prebuilt := os.environ.get("LIGHTNING_KD_DOCS_HTML"):
        return Path(prebuilt)
    target = tmp_path_factory.mktemp("html")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                             str(REPO / "docs"), str(target)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return target


class TextOutsideFormulas(HTMLParser):
    """The text a reader sees as text: everything outside ``<math>``, scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.inside: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in {"math", "script", "style"}:
            self.inside.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.inside and self.inside[-1] == tag:
            self.inside.pop()

    def handle_data(self, data: str) -> None:
        if not self.inside:
            self.text.append(data)


def test_formulas_render_offline_as_mathml(site: Path) -> None:
    latex = re.compile(r"\\(frac|mathrm|alpha|sum|big|Big|log|qquad|operatorname)\b|\\\(|\\\[")
    pages_with_formulas = 0
    for page in [*site.glob("*.html"), *site.glob("methods/*.html")]:
        html = page.read_text()
        parser = TextOutsideFormulas()
        parser.feed(html)
        raw = latex.findall(" ".join(parser.text))
        assert not raw, f"{page.name} shows raw LaTeX to its reader: {raw[:5]}"
        pages_with_formulas += "<math" in html
        assert not re.search(r"<script[^>]*mathjax", html, re.I), f"{page.name} loads MathJax, which needs the network"
    assert pages_with_formulas >= 10  # every method page writes its loss as a formula
    assert "<math" in (site / "methods/vanilla_kd.html").read_text()


def test_the_docs_build_without_warnings(site: Path) -> None:
    tmp_path = site
    api = (tmp_path / "api.html").read_text()
    signatures = re.findall(r'<dt class="sig sig-object py" id="([^"]+)">(.*?)</dt>', api, re.S)
    passing_on = [name for name, html in signatures if re.search(r"\(\*args, \*\*kwargs\)$",
                                                                  re.sub("<[^>]+>", "", html).rstrip("¶ \n"))]
    assert not passing_on, f"classes documented as taking (*args, **kwargs) rather than what they take: {passing_on}"
    for cls in task_classes():  # every method documented from its docstring
        assert f"{cls.__module__}.{cls.__name__}" in api, cls
    # one page per method module, named as the module (Classifier trains teachers: no method page)
    pages = {page.stem for page in (REPO / "docs/methods").glob("*.rst")}
    modules = {cls.__module__.rsplit(".", 1)[-1] for cls in task_classes() if cls.__name__ != "Classifier"}
    assert pages == modules, f"docs/methods/ needs a page per method module: missing {modules - pages}, " \
                             f"without a method {pages - modules}"


def test_results_and_notebook_pages_show_their_plots(site: Path) -> None:
    results, language = (site / "results.html").read_text(), (site / "language_models.html").read_text()
    for name, page in [("born_again_generations", results), ("throughput_ratios", results),
                       ("language_model_generations", language)]:
        assert f'src="_images/{name}.png"' in page and (site / "_images" / f"{name}.png").stat().st_size > 10_000
    for notebook in (REPO / "notebooks").glob("*.ipynb"):  # shown with the outputs they are stored with
        page = (site / "notebooks" / f"{notebook.stem}.html").read_text()
        assert "<img" in page and "Traceback" not in page, notebook.name
