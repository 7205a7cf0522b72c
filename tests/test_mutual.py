"""Deep Mutual Learning: the loss against its formula, both schemes against the paper's algorithm, DDP, hand-on."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lightning_kd import DeepMutualLearning
from lightning_kd.checkpoints import load_network
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses.mutual import dml_loss, dml_peer_loss
from lightning_kd.models import MLP, SmallCNN
from lightning_kd.optim import SGD
from tests.helpers import cpu_trainer


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def _naive_peer_loss(logits: list[torch.Tensor], k: int, y: torch.Tensor) -> float:
    """CE(z_k, y) + 1/(K-1) sum_{l != k} KL(p_l || p_k), averaged over samples, one term at a time."""
    count, batch = len(logits), len(y)
    total = 0.0
    for i in range(batch):
        p_k = _softmax(logits[k][i].tolist())
        total += -math.log(p_k[int(y[i])])
        for other in range(count):
            if other != k:
                p_l = _softmax(logits[other][i].tolist())
                total += sum(a * math.log(a / b) for a, b in zip(p_l, p_k, strict=True)) / (count - 1)
    return total / batch


@pytest.mark.parametrize("count", [2, 4])
def test_the_loss_matches_the_formula_and_no_gradient_flows_through_a_target(count: int) -> None:
    generator = torch.Generator().manual_seed(count)
    logits = [(2 * torch.randn(5, 4, generator=generator)).requires_grad_() for _ in range(count)]
    y = torch.randint(0, 4, (5,), generator=generator)
    losses = dml_loss(logits, y)
    total = 0.0
    for k in range(count):
        expected = _naive_peer_loss(logits, k, y)
        got = dml_peer_loss(logits, k, y)
        assert float(got["loss"].detach()) == pytest.approx(expected, rel=1e-5)
        parts = losses[f"peer_{k + 1}/ce"] + losses[f"peer_{k + 1}/kl"]
        assert float(parts.detach()) == pytest.approx(expected, rel=1e-5)
        total += expected
        # L_k moves peer k only: its gradient into every other peer's logits is zero
        gradients = torch.autograd.grad(got["loss"], logits, allow_unused=True)
        assert all(g is None or not g.any() for index, g in enumerate(gradients) if index != k)
        assert gradients[k] is not None and gradients[k].abs().sum() > 0
    assert float(losses["loss"].detach()) == pytest.approx(total, rel=1e-5)
    # the summed loss gives each peer exactly the gradient of its own loss
    summed = torch.autograd.grad(losses["loss"], logits)
    for k in range(count):
        own = torch.autograd.grad(dml_peer_loss(logits, k, y)["loss"], logits[k])[0]
        assert torch.allclose(summed[k], own, atol=1e-7)


class _Batches(Dataset):
    def __init__(self, size: int = 48) -> None:
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(size, 1, 8, 8, generator=generator)
        self.targets = torch.randint(0, 10, (size,), generator=generator)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input": self.inputs[index], "target": self.targets[index], "index": torch.tensor(index)}


def _peers() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [SmallCNN(widths=(4, 8), num_classes=10), MLP(hidden_sizes=(16,), num_classes=10),
            MLP(hidden_sizes=(8,), num_classes=10)]


def _fit(scheme: str, peers: list[torch.nn.Module], batches: int = 2) -> DeepMutualLearning:
    task = DeepMutualLearning(peers, scheme=scheme, lr_scheduler="none")
    trainer = cpu_trainer(max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(task, train_dataloaders=DataLoader(_Batches(16 * batches), batch_size=16))
    return task


def test_alternating_is_the_papers_algorithm_step_by_step() -> None:
    peers = _peers()
    reference = copy.deepcopy(peers)
    task = _fit("alternating", peers)
    # Algorithm 1 of the paper, written out: for each peer, predict with all, update that peer
    optimizers = [SGD(peer.parameters()) for peer in reference]
    for peer in reference:
        peer.train()
    for batch in DataLoader(_Batches(32), batch_size=16):
        for k in range(len(reference)):
            logits = [p(batch["input"]) for p in reference]
            loss = F.cross_entropy(logits[k], batch["target"]) + sum(
                F.kl_div(F.log_softmax(logits[k], 1), F.softmax(logits[other].detach(), 1), reduction="batchmean")
                for other in range(3) if other != k) / 2
            optimizers[k].zero_grad()
            loss.backward()
            optimizers[k].step()
    for trained, expected in zip(task.peers, reference, strict=True):
        for a, b in zip(trained.state_dict().values(), expected.state_dict().values(), strict=True):
            if a.is_floating_point():
                assert torch.allclose(a, b, atol=1e-6)


def test_the_two_schemes_train_differently() -> None:
    alternating = _fit("alternating", _peers())
    simultaneous = _fit("simultaneous", _peers())
    # the first peer's first step is the same in both; later peers learn from updated targets
    assert not torch.allclose(next(alternating.peers[2].parameters()), next(simultaneous.peers[2].parameters()))


def test_simultaneous_is_one_forward_and_one_step_per_peer() -> None:
    peers = _peers()
    reference = copy.deepcopy(peers)
    task = _fit("simultaneous", peers, batches=1)
    optimizers = [SGD(peer.parameters()) for peer in reference]
    batch = next(iter(DataLoader(_Batches(16), batch_size=16)))
    logits = [p.train()(batch["input"]) for p in reference]
    total = dml_loss(logits, batch["target"])["loss"]
    total.backward()
    for optimizer in optimizers:
        optimizer.step()
    for trained, expected in zip(task.peers, reference, strict=True):
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(trained.parameters(), expected.parameters(),
                                                                   strict=True))


def test_fewer_than_two_peers_and_other_class_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="DeepMutualLearning needs `peers`: a list of at least 2 networks, got 1"):
        DeepMutualLearning([MLP(num_classes=10)])
    with pytest.raises(ValueError, match="unknown mutual learning scheme 'async'; choose one of simultaneous"):
        DeepMutualLearning([MLP(num_classes=10), MLP(num_classes=10)], scheme="async")
    with pytest.raises(ValueError, match="hand_on must be one of peer_1, peer_2 or 'best', got 'peer_3'"):
        DeepMutualLearning([MLP(num_classes=10), MLP(num_classes=10)], hand_on="peer_3")
    task = DeepMutualLearning([MLP(num_classes=10), MLP(num_classes=5)])
    with pytest.raises(ValueError, match=r"the peer_2 network \(MLP\) predicts \(5,\) outputs per sample but the "
                                         "data has 10 classes"):
        cpu_trainer().fit(task, DigitsDataModule())


def test_metrics_per_peer_the_best_peer_handed_on_and_the_ensemble_exported(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = DeepMutualLearning([MLP(hidden_sizes=(4,), num_classes=10), MLP(hidden_sizes=(64,), num_classes=10)],
                              hand_on="best")
    trainer = cpu_trainer(max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(task, DigitsDataModule(batch_size=64))
    metrics = trainer.callback_metrics
    for key in ("val/peer_1/acc", "val/peer_2/acc", "val/peer_1/ece", "val/peers_ensemble_acc",
                "val/agreement/peer_1-peer_2", "train/peer_1/ce_loss", "train/peer_2/kl_loss"):
        assert key in metrics, key
    best = max(("peer_1", "peer_2"), key=lambda role: float(metrics[f"val/{role}/acc"]))
    assert task.handed_on == best == "peer_2"  # the wider peer
    path = tmp_path / "dml.ckpt"
    trainer.save_checkpoint(path)
    network = load_network(path, MLP(hidden_sizes=(64,), num_classes=10))
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), task.peers[1].state_dict().values(),
                                                  strict=True))
    ensemble = task.ensemble_network()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        expected = (task.peers[0].eval()(x).softmax(1) + task.peers[1].eval()(x).softmax(1)) / 2
        assert torch.allclose(ensemble(x).softmax(1), expected, atol=1e-6)
    torch.save(ensemble.state_dict(), tmp_path / "ensemble.pt")  # a plain network's weights


# -- the batched path -------------------------------------------------------------------------------------
def _identical_peers(count: int = 3) -> list[torch.nn.Module]:
    torch.manual_seed(1)
    return [SmallCNN(widths=(4, 8), num_classes=10) for _ in range(count)]


def test_the_batched_forward_gives_the_loops_outputs_gradients_and_batchnorm_statistics() -> None:
    from lightning_kd.models.stacked import StackedForward

    batched, looped = _identical_peers(), _identical_peers()
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    out_batched = StackedForward(batched)(x)
    out_looped = torch.stack([peer(x) for peer in looped])
    assert torch.allclose(out_batched, out_looped, atol=1e-6)
    weights = torch.randn_like(out_looped)
    (out_batched * weights).sum().backward()
    (out_looped * weights).sum().backward()
    for a, b in zip(batched, looped, strict=True):
        for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
            assert torch.allclose(p.grad, q.grad, atol=1e-5), name
        for (name, buffer), other in zip(a.named_buffers(), b.buffers(), strict=True):
            same = torch.allclose(buffer, other) if buffer.is_floating_point() else torch.equal(buffer, other)
            assert same, name
    assert any(not torch.equal(a.body[1].running_mean, b.body[1].running_mean) for a, b in itertools.pairwise(batched))


def test_batched_training_matches_the_loop_and_checkpoints_load_per_peer(tmp_path: Path) -> None:
    looped = DeepMutualLearning(_identical_peers(), lr_scheduler="none")
    batched = DeepMutualLearning(_identical_peers(), lr_scheduler="none", batched=True)
    assert looped.state_dict().keys() == batched.state_dict().keys()  # per peer, as without batching
    trainers = []
    for task in (looped, batched):
        trainer = cpu_trainer(max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=tmp_path)
        trainer.fit(task, train_dataloaders=DataLoader(_Batches(32), batch_size=16))
        trainers.append(trainer)
    for a, b in zip(looped.state_dict().values(), batched.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
    trainers[1].save_checkpoint(tmp_path / "batched.ckpt")
    network = load_network(tmp_path / "batched.ckpt", SmallCNN(widths=(4, 8), num_classes=10))
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(),
                                                  batched.peers[0].state_dict().values(), strict=True))


def test_the_batched_path_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ValueError, match=r"identical networks only: network 2 \(MLP\) differs from network 1"):
        DeepMutualLearning([SmallCNN(num_classes=10), MLP(num_classes=10)], batched=True)
    with pytest.raises(ValueError, match="only the 'simultaneous' scheme"):
        DeepMutualLearning(_identical_peers(2), scheme="alternating", batched=True)
