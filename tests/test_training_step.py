"""What every training step does besides the method's losses: the non-finite checks and the training log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor, nn

from lightning_kd import Classifier
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import NonFiniteLossError, NonFiniteWeightsError
from lightning_kd.guards import finite_flags
from lightning_kd.metrics import EpochSums
from lightning_kd.models import MLP
from tests.helpers import cpu_trainer


class PoisonAt(nn.Module):
    """``network``, whose outputs turn NaN at forward call ``step`` (counting training calls only)."""

    def __init__(self, network: nn.Module, step: int) -> None:
        super().__init__()
        self.network, self.step, self.calls = network, step, 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.network(x)
        if self.training:
            self.calls += 1
            if self.calls - 1 == self.step:
                return out * float("nan")
        return out


def test_finite_flags_read_every_loss_and_weight_by_its_norm() -> None:
    nan, inf = float("nan"), float("inf")
    flags = finite_flags([torch.tensor(1.0), torch.tensor(nan), torch.ones(3), torch.tensor([inf, 1.0])])
    assert flags.tolist() == [True, False, True, False]
    assert finite_flags([]).tolist() == []


def test_a_nan_loss_stops_at_its_own_step_on_a_cpu() -> None:
    torch.manual_seed(0)
    task = Classifier(PoisonAt(MLP(hidden_sizes=(16,), num_classes=10), step=3))
    with pytest.raises(NonFiniteLossError, match=r"training stopped at step 3 \(epoch 0\): train/loss = nan"):
        cpu_trainer(max_epochs=1).fit(task, datamodule=DigitsDataModule(batch_size=32))


@pytest.mark.parametrize("checkpoint_every", [None, 2])
def test_flags_left_on_the_device_stop_the_run_at_the_next_read_before_any_checkpoint(
        tmp_path: Path, checkpoint_every: int | None) -> None:
    # a GPU's way (here forced on the CPU): the flags wait on the device, read every 5 steps or before a checkpoint
    torch.manual_seed(0)
    task = Classifier(PoisonAt(MLP(hidden_sizes=(16,), num_classes=10), step=6))
    task.read_losses_at_their_step, task.finite_check_every_n_steps = False, 5
    callbacks: list[Any] = []
    if checkpoint_every:
        callbacks.append(ModelCheckpoint(tmp_path, "c-{step}", every_n_train_steps=checkpoint_every, save_top_k=-1))
    trainer = cpu_trainer(max_epochs=1, enable_checkpointing=bool(checkpoint_every), callbacks=callbacks)
    # read at the 10th step (steps 5..9), or at the checkpoint after step 7 (steps 6, 7: the one after step 5 read
    # the flags up to there): the checkpoints after steps 1, 3 and 5 are written, none after
    since, last = (6, 7) if checkpoint_every else (5, 9)
    with pytest.raises(NonFiniteLossError, match=rf"training stopped at step {last} \(epoch 0\): a loss was not "
                                                 rf"finite at one of the {last - since + 1} steps from step {since} "
                                                 r"\(read every 5 steps on this device\)"):
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    written = sorted(int(p.stem.split("step=")[1].split("-")[0]) for p in tmp_path.glob("*.ckpt"))
    assert written == ([2, 4, 6] if checkpoint_every else [])
    for checkpoint in tmp_path.glob("*.ckpt"):  # each written before the NaN step
        state = torch.load(checkpoint, weights_only=False)["state_dict"]
        assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def test_weights_left_on_the_device_are_named_when_read() -> None:
    torch.manual_seed(0)
    task = Classifier(MLP(hidden_sizes=(16,), num_classes=10))
    task.net.register_parameter("spare", nn.Parameter(torch.zeros(2)))  # trained, but no loss sees it
    task.read_losses_at_their_step, task.finite_check_every_n_steps = False, 3

    class Diverge(Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            if trainer.global_step == 4:
                with torch.no_grad():
                    pl_module.net.spare[0] = float("inf")

    with pytest.raises(NonFiniteWeightsError, match=r"step 5 \(epoch 0\): weights are not finite although every "
                                                    r"loss since step 3 was .*net\.spare \(1 of 5 tensors\)"):
        cpu_trainer(max_epochs=1, callbacks=[Diverge()]).fit(
            task, datamodule=DigitsDataModule(batch_size=32))


def test_a_huge_but_finite_weight_does_not_stop_the_run() -> None:
    torch.manual_seed(0)
    task = Classifier(MLP(hidden_sizes=(16,), num_classes=10), lr_scheduler="none")
    task.finite_check_every_n_steps = 1
    with torch.no_grad():
        task.net.body[1].weight[0, 0] = 1e25  # its square overflows float32; it does not
    cpu_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0).fit(
        task, datamodule=DigitsDataModule(batch_size=32))
    assert task.trainer.global_step == 3


def test_epoch_sums_are_the_sample_weighted_means_of_every_value() -> None:
    sums = EpochSums(epoch=0)
    batches = [({"loss": torch.tensor(2.0), "kd": torch.tensor(1.0)}, 4, 3.0),
               ({"loss": torch.tensor(1.0), "kd": torch.tensor(3.0)}, 2, 2.0),
               ({"loss": torch.tensor(5.0)}, 1, 0.0)]  # a batch without "kd"
    for values, size, correct in batches:
        sums.add(values, size, counts={"acc": torch.tensor(correct)})
    means = {name: float(value) for name, value in sums.means().items()}
    assert means == pytest.approx({"loss": (2 * 4 + 1 * 2 + 5) / 7, "kd": (1 * 4 + 3 * 2) / 6, "acc": 5 / 7})
    halves = sums.means(reduce=lambda vector, reduce_op: vector * 2)  # two processes that saw the same: same means
    assert {name: float(value) for name, value in halves.items()} == pytest.approx(means)


def test_the_training_log_gives_the_epochs_mean_loss_and_accuracy() -> None:
    torch.manual_seed(0)
    task = Classifier(MLP(hidden_sizes=(16,), num_classes=10), lr_scheduler="none")
    seen: list[tuple[float, int, int]] = []
    original = task.training_losses

    def recorded(batch: Any) -> Any:
        losses, logits = original(batch)
        seen.append((float(losses["loss"]), int((logits.argmax(1) == batch["target"]).sum()), len(batch["target"])))
        return losses, logits

    task.training_losses = recorded  # type: ignore[method-assign]
    trainer = cpu_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=50))  # a last batch of another size
    samples = sum(size for *_, size in seen)
    assert len({size for *_, size in seen}) == 2
    loss = sum(value * size for value, _, size in seen) / samples
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(loss, rel=1e-6)
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(sum(c for _, c, _ in seen) / samples)
