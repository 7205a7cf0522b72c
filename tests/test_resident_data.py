"""The training split held on the device as 8-bit images (``device_resident``), against the host loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from pytorch_lightning import Callback

from lightning_kd import Classifier
from lightning_kd.data import (
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNIST5kDataModule,
)
from lightning_kd.data.base import ClassificationDataModule
from lightning_kd.data.resident import ResidentTrainingSplit, check_fits
from lightning_kd.errors import Refusal
from lightning_kd.models import MLP
from tests.conftest import write_fashion, write_tiny_cifar
from tests.helpers import cpu_trainer


def image_folder(root: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(12):
            pixels = torch.randint(0, 256, (30, 40, 3), dtype=torch.uint8, generator=generator).numpy()
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def modules(tmp_path: Path) -> dict[str, Any]:
    write_tiny_cifar(tmp_path / "cifar", 100)
    write_fashion(tmp_path / "fashion")
    return {"cifar": CIFAR100DataModule(tmp_path / "cifar", batch_size=8, num_workers=0, device_resident=True),
            "fashion": FashionMNISTDataModule(tmp_path / "fashion", batch_size=8, augment=True, device_resident=True),
            "folder": ImageFolderDataModule(image_folder(tmp_path / "folder"), image_size=16, batch_size=8,
                                            num_workers=0, device_resident=True),
            "digits": DigitsDataModule(batch_size=8, device_resident=True),
            "mnist5k": MNIST5kDataModule(batch_size=8, device_resident=True)}


@pytest.mark.usefixtures("skip_cifar_checksums")
@pytest.mark.parametrize("name", ["cifar", "fashion", "folder", "digits", "mnist5k"])
def test_resident_images_decode_to_the_host_loaders_inputs_bit_for_bit(tmp_path: Path, name: str) -> None:
    data = modules(tmp_path)[name]
    data.setup("fit")
    images, targets, decode = data.resident_images()
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == tuple(data.input_shape)
    host = [data.train_set[i] for i in range(len(data.train_set))]
    assert torch.equal(decode(images), torch.stack([item["input"] for item in host]))
    assert targets.tolist() == [int(item["target"]) for item in host]


class Seen(Callback):
    def __init__(self) -> None:
        self.index: list[list[int]] = []
        self.devices: set[str] = set()

    def on_train_epoch_start(self, *args: Any) -> None:
        self.index.append([])

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.index[-1] += batch["index"].tolist()
        self.devices.add(batch["input"].device.type)
        assert "view" in batch  # the replayable crop and flip ran on the resident batch


@pytest.mark.usefixtures("skip_cifar_checksums")
def test_a_fit_on_resident_data_shows_every_sample_once_an_epoch_in_a_new_order(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = modules(tmp_path)["cifar"]
    seen = Seen()
    task = Classifier(MLP((3, 32, 32), hidden_sizes=(16,), num_classes=100), lr_scheduler="none")
    trainer = cpu_trainer(max_epochs=2, limit_val_batches=0, callbacks=[seen])
    trainer.fit(task, datamodule=data)
    samples = len(data.train_set)
    assert isinstance(trainer.train_dataloader, ResidentTrainingSplit)
    assert [sorted(epoch) for epoch in seen.index] == [list(range(samples))] * 2 and seen.index[0] != seen.index[1]
    assert trainer.global_step == 2 * -(-samples // 8)


def test_processes_share_the_split_as_distributed_sampler_does() -> None:
    images, targets = torch.zeros(11, 1, 2, 2, dtype=torch.uint8), torch.arange(11)
    shares = [ResidentTrainingSplit(images, targets, lambda x: x.float(), 2, False, 5, lambda: 3, rank, 2)
              for rank in range(2)]
    orders = [share.order(3).tolist() for share in shares]
    assert [len(order) for order in orders] == [6, 6] and len(shares[0]) == 3
    assert set(orders[0] + orders[1]) == set(range(11))  # one sample twice: the padding
    assert shares[0].order(3).tolist() == orders[0] and shares[0].order(4).tolist() != orders[0]  # per epoch
    dropped = ResidentTrainingSplit(images, targets, lambda x: x.float(), 4, True, 5, lambda: 0)
    assert len(dropped) == 2 and [len(batch["index"]) for batch in dropped] == [4, 4]


@pytest.mark.usefixtures("skip_cifar_checksums")
def test_what_cannot_be_held_is_refused_before_training_with_the_estimate(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_kd.data.base as base

    data = modules(tmp_path)["cifar"]
    monkeypatch.setattr(base, "check_fits",
                        lambda samples, shape, device: check_fits(samples, shape, device, free=1000))
    task = Classifier(MLP((3, 32, 32), hidden_sizes=(16,), num_classes=100))
    with pytest.raises(Refusal, match=r"device_resident: the training split needs 0\.1 MB on cpu as 8-bit images "
                                      r"\(36 of 3x32x32, with their labels\), and 0\.0 MB of its memory is free"):
        cpu_trainer().fit(task, datamodule=data)
    assert task.trainer.global_step == 0

    class FloatDigits(DigitsDataModule):  # a module of one's own that does not say how to hold its inputs as 8 bits
        resident_images = ClassificationDataModule.resident_images

    with pytest.raises(Refusal, match="FloatDigits does not say how its training inputs are made from them"):
        cpu_trainer().fit(Classifier(MLP(hidden_sizes=(8,), num_classes=10)),
                          datamodule=FloatDigits(device_resident=True))
    imagenet = ImageFolderDataModule(image_folder(tmp_path / "imagenet"), image_size=16, transform_style="imagenet",
                                     num_workers=0, device_resident=True)
    with pytest.raises(Refusal, match="RandomResizedCrop"):
        cpu_trainer().fit(Classifier(MLP((3, 16, 16), hidden_sizes=(8,), num_classes=2)), datamodule=imagenet)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.usefixtures("skip_cifar_checksums")
def test_on_a_gpu_the_resident_split_serves_every_batch_from_the_device(tmp_path: Path) -> None:
    data, seen = modules(tmp_path)["cifar"], Seen()
    task = Classifier(MLP((3, 32, 32), hidden_sizes=(16,), num_classes=100), lr_scheduler="none")
    trainer = cpu_trainer(accelerator="cuda", max_epochs=1, limit_val_batches=0, callbacks=[seen])
    trainer.fit(task, datamodule=data)
    assert seen.devices == {"cuda"} and sorted(seen.index[0]) == list(range(len(data.train_set)))
    images, _, decode = data.resident_images()
    assert torch.equal(decode(images.cuda()).cpu(), decode(images))  # the same inputs as on the host
