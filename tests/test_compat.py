"""Every private name the package relies on still exists, and no other module reaches for one."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.strategies import DDPStrategy
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import lightning_kd
from lightning_kd import Classifier, compat
from lightning_kd.data import DigitsDataModule

PACKAGE = Path(lightning_kd.__file__).parent


def test_ddp_still_reads_the_ignore_attribute() -> None:
    assert compat.DDP_IGNORE_ATTRIBUTE in inspect.getsource(DistributedDataParallel.__init__)


def test_lightning_module_keeps_its_trainer_attribute() -> None:
    class Bare(pl.LightningModule):
        pass

    module = Bare()
    assert compat.attached_trainer(module) is None
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    module.trainer = trainer
    assert compat.attached_trainer(module) is trainer


def test_ddp_strategy_can_still_rewrap() -> None:
    assert callable(getattr(DDPStrategy, "_setup_model", None))
    assert callable(getattr(DDPStrategy, "_register_ddp_hooks", None))


def test_lightning_default_epoch_budget() -> None:
    # what a callback's setup sees when the user set neither max_epochs nor max_steps (Generations reads it)
    seen: list[int | None] = []

    class Record(pl.Callback):
        def setup(self, trainer, pl_module, stage) -> None:
            seen.append(trainer.fit_loop.max_epochs)
            trainer.fit_loop.max_epochs = 1

    task = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), lr_scheduler="none")
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_train_batches=1,
                         limit_val_batches=0, enable_model_summary=False, callbacks=[Record()])
    trainer.fit(task, datamodule=DigitsDataModule())
    assert seen == [compat.LIGHTNING_DEFAULT_MAX_EPOCHS]


def test_lightning_still_names_its_hooks_and_a_task_stores_the_name_plainly(monkeypatch) -> None:
    # Lightning still sets _current_fx_name around the hooks it calls (self.log reads it); a task stores it past
    # nn.Module.__setattr__ (PlainHookName), which must see none of those writes, yet still registers submodules
    seen: list[str] = []
    module_setattr = nn.Module.__setattr__

    def counting(self: nn.Module, name: str, value: object) -> None:
        seen.append(name)
        module_setattr(self, name, value)

    monkeypatch.setattr(nn.Module, "__setattr__", counting)
    names: list[str | None] = []

    class Recording(Classifier):
        def on_train_batch_start(self, batch, batch_idx) -> None:
            names.append(self._current_fx_name)

    task = Recording(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), lr_scheduler="none")
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_train_batches=2,
                         limit_val_batches=0, max_epochs=1, enable_model_summary=False)
    trainer.fit(task, datamodule=DigitsDataModule())
    assert names == ["on_train_batch_start"] * 2
    assert "_current_fx_name" not in seen
    task.extra = nn.Linear(2, 2)
    assert "extra" in task._modules and "extra" in seen


def test_hook_count_sees_hooks() -> None:
    layer = nn.Linear(2, 2)
    handle = layer.register_forward_hook(lambda *args: None)
    pre = layer.register_forward_pre_hook(lambda *args: None)
    assert compat.hook_count(layer) == 2
    handle.remove()
    pre.remove()
    assert compat.hook_count(layer) == 0


def _private_uses(path: Path) -> list[str]:
    """Attribute reads ``x._name`` on anything but self/cls, and imports of ``_name`` or from ``_module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in {"self", "cls"}:
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [alias.name for alias in node.names]
            if any(part.startswith("_") and not part.startswith("__") for part in module.split(".")) or any(
                    n.startswith("_") and not n.startswith("__") for n in names):
                found.append(f"{path.name}:{node.lineno} from {module} import {names}")
    return found


def test_inductor_options_are_a_modes_settings_with_ours_on_top() -> None:
    from lightning_kd.compat import inductor_options

    assert inductor_options("reduce-overhead", fallback_random=True) == {"triton.cudagraphs": True,
                                                                         "fallback_random": True}
    assert inductor_options("default") == {}


def test_no_private_name_outside_the_compat_module() -> None:
    offenders = [use for path in sorted(PACKAGE.rglob("*.py")) if path.name != "compat.py"
                 for use in _private_uses(path)]
    assert not offenders, offenders


def test_the_rich_bar_counts_epochs_from_one() -> None:
    from pytorch_lightning.callbacks import RichProgressBar

    assert callable(getattr(RichProgressBar, "_get_train_description", None))  # the private hook it overrides
    bar = compat.OneBasedRichProgressBar()
    trainer = pl.Trainer(max_epochs=80, logger=False, enable_checkpointing=False, callbacks=[bar])
    bar.setup(trainer, Classifier(nn.Linear(2, 2)), stage="fit")  # what the trainer does before the first epoch
    assert bar._get_train_description(2).strip() == "Epoch 3/80"
