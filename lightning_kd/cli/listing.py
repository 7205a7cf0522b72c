"""The text of ``lightning-kd list``: each list imports only what it lists (configs: nothing; networks: torch)."""

from __future__ import annotations

LISTS = ("methods", "networks", "configs")


def listing(what: str = "all") -> str:
    """The text of ``lightning-kd list``: methods, networks and/or shipped configs (each imports only what it lists).

    Example:
        >>> print(listing("configs").splitlines()[0])
        configs:
    """
    if what != "all" and what not in LISTS:
        raise SystemExit(f"lightning-kd list: choose methods, networks or configs, not {what!r}")
    lines = []
    for title in LISTS if what == "all" else (what,):
        entries = _entries(title)
        lines.append(f"{title}:")
        width = max(len(name) for name, _ in entries)
        lines += [f"  {name:<{width}}  {text}".rstrip() for name, text in entries]
    return "\n".join(lines)


def _entries(title: str) -> list[tuple[str, str]]:
    if title == "configs":
        from lightning_kd.catalog import shipped_configs

        return [(name, str(path)) for name, path in shipped_configs().items()]
    if title == "networks":
        from lightning_kd.models import list_models

        return [(name, "") for name in list_models()] + [
            ("tv_<name>", "any torchvision classification model (TorchvisionNetwork)"),
            ("timm_<name>", "any timm model (TimmNetwork; pip install 'lightning-kd[timm]')"),
        ]
    from lightning_kd.catalog import task_classes
    from lightning_kd.text import summary_line

    return [(f"lightning_kd.{cls.__name__}", summary_line(cls)) for cls in task_classes()]
