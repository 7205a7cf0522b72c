from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_CODE", "true")

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, not two competing pairs
    # the processes a test starts too (a run killed in a subprocess and resumed here must sum in the same order)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--task-class", action="append", metavar="DOTTED.PATH",
                     help="also run the task contract (tests/test_contract.py) on this task class")
CONFIGS = REPO / "configs"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a fresh folder, so configs' relative paths (runs/, checkpoints/, data/) land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_tiny_corpus(root: Path, layout: str = "ptb", sentences: tuple[int, int, int] = (60, 12, 12),
                      seed: int = 0) -> Path:
    """Write a tiny word corpus in Penn Treebank's format (one sentence per line, rare words as ``<unk>``;
    ``train.txt``/``valid.txt``/``test.txt``) or WikiText-2's (``wiki.train.tokens``, ..., with headings and
    blank lines). A bigram chain over 20 words, so a language model has something to learn."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(19)] + ["<unk>"]
    root.mkdir(parents=True, exist_ok=True)
    for split, count in zip(("train", "valid", "test"), sentences, strict=True):
        lines = []
        for _ in range(count):
            word, line = int(rng.integers(20)), []
            for _ in range(int(rng.integers(3, 9))):
                line.append(words[word])
                word = (3 * word + int(rng.integers(1, 3))) % 20
            lines.append(" ".join(line))
        name = f"{split}.txt" if layout == "ptb" else f"wiki.{split}.tokens"
        text = "\n".join(lines) + "\n"
        if layout == "wikitext":
            text = " = Heading = \n\n " + text.replace("\n", " \n", 3)
        (root / name).write_text(text)
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding written from the format's description: 0, 0, type 0x08, ndim, big-endian sizes, values."""
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes()


def write_fashion(root: Path, train: int = 60, test: int = 20, compressed: bool = True, seed: int = 0) -> dict:
    """Fashion-MNIST's four IDX files, tiny, in ``root``: the arrays written, by split."""
    from lightning_kd.data.fashion_mnist import FILES  # here: the package imports after the environment is set

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", train), ("test", test)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        # each class a different brightness, so a split's statistics are known and classes are learnable
        images = (labels[:, None, None] * 25 + rng.integers(0, 5, (count, 28, 28))).astype(np.uint8)
        arrays[split] = (images, labels)
        for name, array in zip(FILES[split], (images, labels), strict=True):
            data = idx_bytes(array)
            (root / (f"{name}.gz" if compressed else name)).write_bytes(gzip.compress(data) if compressed else data)
    return arrays


def write_tiny_cifar(root: Path, num_classes: int, train_per_file: int = 8, test: int = 16, seed: int = 0) -> None:
    """Write CIFAR-10/100 in torchvision's on-disk python format (pickled dicts, uint8 rows of 3072)."""
    rng = np.random.default_rng(seed)
    label_key = "labels" if num_classes == 10 else "fine_labels"
    folder = root / ("cifar-10-batches-py" if num_classes == 10 else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, count: int) -> None:
        entry = {
            "data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
            label_key: rng.integers(0, num_classes, size=count).tolist(),
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle)

    if num_classes == 10:
        for index in range(1, 6):
            dump(f"data_batch_{index}", train_per_file)
        dump("test_batch", test)
        meta = {"label_names": [f"class{i}" for i in range(10)]}
        meta_name = "batches.meta"
    else:
        dump("train", 5 * train_per_file)
        dump("test", test)
        meta = {"fine_label_names": [f"class{i}" for i in range(100)]}
        meta_name = "meta"
    with open(folder / meta_name, "wb") as handle:
        pickle.dump(meta, handle)


def skip_cifar_checksums_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """What :func:`skip_cifar_checksums` does, with a given monkeypatch (for a narrower scope)."""
    import torchvision

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)


@pytest.fixture
def skip_cifar_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny CIFAR files cannot match the real archives' MD5s; everything else is torchvision's real code."""
    skip_cifar_checksums_in(monkeypatch)


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]) -> Path:
    """A folder that ``make`` fills once per test run, by whichever xdist worker asks first (the other waits for it
    under a lock, then reads it): a shared run of a minute is not made again on every worker.

    (xdist's ``xdist_group`` cannot send the tests that share it to one worker here: with pytest 9 it no longer
    changes their ids, which is how its scheduler groups them.)
    """
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this run's folder, which its workers share (each has its own below it)
    folder = base / name
    with FileLock(str(base / f"{name}.lock")):
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)  # what an attempt that failed left
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def ddp_pool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every DDP scenario marked in this session (``@pytest.mark.ddp``), run once in one pair of processes."""
    from tests.ddp_pool import run_scenarios, scenario_name

    scenarios: dict[str, object] = {}
    for item in request.session.items:
        if (marker := item.get_closest_marker("ddp")) is not None:
            scenarios.setdefault(scenario_name(marker.kwargs["scenario"]), marker.kwargs["scenario"])
    # every worker collects every test, so each names the same scenarios; the first to ask runs them
    return made_once(tmp_path_factory, "ddp_pool",
                     lambda root: run_scenarios(list(scenarios.values()), root))  # type: ignore[arg-type]


@pytest.fixture
def ddp_run(request: pytest.FixtureRequest, ddp_pool: Path) -> Path:
    """The folder this test's DDP scenario (``@pytest.mark.ddp(scenario=...)``) wrote into, on both ranks."""
    from tests.ddp_pool import scenario_folder

    marker = request.node.get_closest_marker("ddp")
    assert marker is not None, "a test asking for ddp_run marks its scenario: @pytest.mark.ddp(scenario=...)"
    return scenario_folder(marker.kwargs["scenario"], ddp_pool)


@pytest.fixture(autouse=True)
def _no_wandb_run_left_open():
    """A test that leaves a W&B run open would hand it to the next test of its worker (W&B's run is global)."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
