"""Formulas written as MathML when the docs are built, so they render offline in any current browser, with no script.

Sphinx's default, MathJax, leaves the LaTeX in the page for a script from a CDN to typeset: offline, a reader sees
``\\frac{1}{B}``. Docutils' own converter turns the LaTeX into MathML at build time instead; a formula it cannot
convert is a build warning (an error under ``-W``), named with its page, never a silently raw formula.
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from docutils.utils.math import MathError, latex2mathml
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

# \big( and friends only size a delimiter; docutils has no such command, and MathML stretches fences by itself
SIZED_DELIMITER = re.compile(r"\\(?:big|Big|bigg|Bigg)[lrm]?(?![A-Za-z])")


def to_mathml(latex: str, block: bool, node: nodes.Element) -> str:
    try:
        return latex2mathml.tex2mathml(SIZED_DELIMITER.sub("", latex).strip(), as_block=block)
    except (MathError, SyntaxError) as error:  # an unknown command, a bad syntax
        logger.warning("formula not converted to MathML (%s): %s", error, latex, location=node)
        return f"<code>{latex}</code>"


def visit_inline_math(translator: Any, node: nodes.Element) -> None:
    translator.body.append(to_mathml(node.astext(), block=False, node=node))
    raise nodes.SkipNode


def visit_block_math(translator: Any, node: nodes.Element) -> None:
    translator.body.append(translator.starttag(node, "div", CLASS="math"))
    for equation in re.split(r"\n\s*\n", node.astext()):  # a directive's blank-line-separated equations
        if equation.strip():
            translator.body.append(to_mathml(equation, block=True, node=node))
    translator.body.append("</div>\n")
    raise nodes.SkipNode


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_html_math_renderer("mathml", (visit_inline_math, None), (visit_block_math, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
