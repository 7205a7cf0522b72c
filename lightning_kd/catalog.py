"""What the package ships: its methods, networks and configs, found rather than listed by hand.

Example:
    >>> "BornAgain" in {cls.__name__ for cls in task_classes()}
    True
    >>> "digits_ban" in shipped_configs()
    True
"""

from __future__ import annotations

import importlib
import inspect
import re
from importlib.resources import files
from pathlib import Path


def task_classes() -> list[type]:
    """Every method: the non-abstract task classes of :data:`lightning_kd.tasks.TASKS`, by name."""
    from lightning_kd.tasks import TASKS

    return [cls for cls in TASKS.values() if not inspect.isabstract(cls)]


def shipped_configs() -> dict[str, Path]:
    """The configs installed with the package, by name (file name without ``.yaml``)."""
    folder = files("lightning_kd") / "configs"
    return {entry.name.removesuffix(".yaml"): Path(str(entry)) for entry in sorted(folder.iterdir(), key=str)
            if entry.name.endswith(".yaml")}


def written_from(text: str) -> str | None:
    """The config a shipped config was written from by ``tools/pair_configs.py`` (its header says so), or ``None``.

    Example:
        >>> written_from("# KD on a pair: written by tools/pair_configs.py from\\n# configs/cifar100_a_b_kd.yaml")
        'cifar100_a_b_kd'
        >>> written_from("# written by hand") is None
        True
    """
    match = re.search(r"written by\s+#?\s*tools/pair_configs\.py\s+#?\s*from\s+#?\s*configs/(\S+)\.yaml", text)
    return match.group(1) if match else None


def method_configs() -> dict[str, list[str]]:
    """The shipped configs of each method, by task class name (a config's ``model.class_path``).

    A config written from another by ``tools/pair_configs.py`` (the same method on another benchmark pair) is
    counted with the config it was written from, as ``"<name> (+N pairs)"``.
    """
    import yaml

    found: dict[str, list[str]] = {}
    copies: dict[str, int] = {}
    for name, path in shipped_configs().items():
        text = path.read_text()
        template = written_from(text)
        if template is not None:
            copies[template] = copies.get(template, 0) + 1
            continue
        model = (yaml.safe_load(text) or {}).get("model") or {}
        class_path = model.get("class_path", "") if isinstance(model, dict) else ""
        found.setdefault(class_path.rsplit(".", 1)[-1], []).append(name)
    return {method: [f"{name} (+{copies[name]} pairs)" if name in copies else name for name in names]
            for method, names in found.items()}


def methods_table() -> str:
    """The README's methods table, from the registry: class, paper (its module's first line), configs, docs page.

    ``python -m lightning_kd.catalog README.md`` writes it between the README's ``methods table`` markers;
    ``tests/test_readme.py`` checks that the README holds the current one.
    """
    configs = method_configs()
    rows = ["| method | class | configs | docs |", "|---|---|---|---|"]
    for cls in task_classes():
        module = importlib.import_module(cls.__module__)
        paper = (inspect.getdoc(module) or "").splitlines()[0].split(":")[0].rstrip(".")
        page = cls.__module__.rsplit(".", 1)[-1]
        quoted = (re.sub(r"^(\S+)", r"`\1`", name) for name in configs.get(cls.__name__, []))
        shipped = ", ".join(quoted) or "(Python only)"
        docs = f"[{page}](docs/methods/{page}.rst)" if cls.__name__ != "Classifier" else "(teachers, baselines)"
        rows.append(f"| {paper} | `lightning_kd.{cls.__name__}` | {shipped} | {docs} |")
    return "\n".join(rows)


TABLE_START = "<!-- methods table: written by `python -m lightning_kd.catalog README.md` -->"
TABLE_END = "<!-- end of methods table -->"


def write_methods_table(readme: Path) -> None:
    """Replace the text between the methods-table markers of ``readme`` with :func:`methods_table`."""
    text = readme.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    readme.write_text(text[:start] + "\n" + methods_table() + "\n" + text[end:])


if __name__ == "__main__":
    import sys

    write_methods_table(Path(sys.argv[1]))
