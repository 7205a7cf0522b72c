"""Feature taps on zoo, torchvision and timm networks: shapes, unchanged outputs, no hooks left, named errors."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from lightning_kd import BornAgain, VanillaKD
from lightning_kd.compat import hook_count
from lightning_kd.models import MLP, CifarResNet, SmallCNN, TimmNetwork, TorchvisionNetwork, create_model
from lightning_kd.models.taps import forward_with_taps, resolve_layers, stage_names


def _no_hooks(network: nn.Module) -> bool:
    return all(hook_count(m) == 0 for m in network.modules())


@pytest.mark.parametrize(
    ("build", "input_shape", "stages"),
    [
        (lambda: create_model("resnet20", num_classes=10), (3, 32, 32),
         {"stages.0": (16, 32, 32), "stages.1": (32, 16, 16), "stages.2": (64, 8, 8)}),
        (lambda: TorchvisionNetwork("resnet18", num_classes=10), (3, 64, 64),
         {"body.relu": (64, 32, 32), "body.layer1": (64, 16, 16), "body.layer2": (128, 8, 8),
          "body.layer3": (256, 4, 4), "body.layer4": (512, 2, 2)}),
        (lambda: TimmNetwork("resnet18", num_classes=10, in_channels=1), (1, 64, 64),
         {"body.act1": (64, 32, 32), "body.layer1": (64, 16, 16), "body.layer2": (128, 8, 8),
          "body.layer3": (256, 4, 4), "body.layer4": (512, 2, 2)}),
        (lambda: SmallCNN(widths=(8, 16, 32)), (1, 8, 8),
         {"body.2": (8, 8, 8), "body.6": (16, 4, 4), "body.10": (32, 2, 2)}),
        (lambda: create_model("densenet_bc_100_12", num_classes=10), (3, 32, 32),
         {"blocks.0": (216, 32, 32), "blocks.2": (300, 16, 16), "blocks.4": (342, 8, 8)}),
        (lambda: create_model("wrn_16_2", num_classes=10), (3, 32, 32),
         {"stages.0": (32, 32, 32), "stages.1": (64, 16, 16), "stages.2": (128, 8, 8)}),
    ],
    ids=["zoo-resnet20", "torchvision-resnet18", "timm-resnet18", "zoo-small-cnn", "zoo-densenet", "zoo-wrn"],
)
def test_stage_taps_have_the_right_shapes_and_change_nothing(build, input_shape, stages) -> None:
    torch.manual_seed(0)
    network = build().eval()
    x = torch.randn(2, *input_shape)
    plain = network(x)
    out = forward_with_taps(network, x, ["stages", "penultimate"])
    assert stage_names(network) == tuple(stages)
    assert {name: tuple(f.shape[1:]) for name, f in out.features.items() if name != "penultimate"} == stages
    assert out.features["penultimate"].shape == (2, network.num_features)
    torch.testing.assert_close(out.logits, plain, rtol=0, atol=0)
    assert _no_hooks(network)


def test_a_tapped_layer_is_that_layers_output() -> None:
    network = create_model("resnet20", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    out = forward_with_taps(network, x, ["stages.1.0.conv1", "stem"])
    stem = network.stem(x)
    torch.testing.assert_close(out.features["stem"], stem)
    torch.testing.assert_close(out.features["stages.1.0.conv1"], network.stages[1][0].conv1(network.stages[0](stem)))


def test_plain_module_taps_by_path_and_its_heads_input() -> None:
    network = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.randn(3, 1, 8, 8)
    out = forward_with_taps(network, x, ["2", "penultimate"])
    torch.testing.assert_close(out.features["2"], out.features["penultimate"])
    torch.testing.assert_close(out.logits, network(x))
    with pytest.raises(ValueError, match="Sequential does not name its stages; name the layers"):
        forward_with_taps(network, x, "stages")


def test_a_misspelt_path_is_refused_with_the_closest_paths() -> None:
    with pytest.raises(ValueError, match=r"CifarResNet has no layer 'stage.1'; did you mean 'stages.1'"):
        resolve_layers(create_model("resnet20", num_classes=10), "stage.1")
    with pytest.raises(ValueError, match=r"has no layer 'body.layr4'; did you mean 'body.layer4'"):
        resolve_layers(TorchvisionNetwork("resnet18", num_classes=10), ["body.layer1", "body.layr4"])


def test_hooks_are_removed_when_the_forward_raises() -> None:
    network = SmallCNN(widths=(8, 16))
    with pytest.raises(RuntimeError):
        forward_with_taps(network, torch.randn(2, 3, 8, 8), "stages")  # 3 channels into a 1-channel stem
    assert _no_hooks(network)


def test_student_taps_keep_gradients() -> None:
    network = SmallCNN(widths=(8, 16))
    out = forward_with_taps(network, torch.randn(2, 1, 8, 8), "stages")
    out.features["body.6"].sum().backward()
    assert network.body[0].weight.grad is not None


def test_teacher_outputs_tap_every_teacher_and_leave_nothing_behind() -> None:
    task = VanillaKD(MLP(hidden_sizes=(16,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10))
    batch = {"input": torch.randn(4, 1, 8, 8), "target": torch.zeros(4, dtype=torch.long), "index": torch.arange(4)}
    (teacher,) = task.teacher_outputs(batch, ["stages", "penultimate"])
    assert set(teacher.features) == {"body.2", "body.6", "penultimate"}
    assert not teacher.logits.requires_grad and not any(f.requires_grad for f in teacher.features.values())
    assert all(_no_hooks(network) for network in task.networks().values())
    reference = weakref.ref(task)
    del task, teacher
    gc.collect()
    assert reference() is None  # no hook or closure keeps the task alive


def test_promotion_leaves_no_hooks() -> None:
    task = BornAgain(SmallCNN(widths=(8, 16), num_classes=10))
    forward_with_taps(task.student, torch.randn(2, 1, 8, 8), "stages")
    task.promote()
    task.teacher_outputs({"input": torch.randn(2, 1, 8, 8)}, "stages")
    assert all(_no_hooks(network) for network in task.networks().values())


def test_mlp_and_cifar_resnet_name_their_stages() -> None:
    assert MLP(hidden_sizes=(32, 16)).stage_names == ("body.3", "body.6")
    assert CifarResNet(depth=8, widths=(8, 8, 16)).stage_names == ("stages.0", "stages.1")


@pytest.mark.parametrize("name", ["resnet20", "resnet8x4", "resnet50_cifar", "vgg8", "wrn_16_2", "shufflenetv2",
                                  "small_cnn"])
def test_preact_stages_are_the_stages_before_their_last_relu(name: str) -> None:
    """Each pre-activation tap, through a ReLU, is its stage (or, for a WRN, whose stages end before BatchNorm and
    ReLU, the last one through ReLU and pooling is the penultimate features); the logits are unchanged."""
    torch.manual_seed(0)
    net = SmallCNN(widths=(8, 16), num_classes=10) if name == "small_cnn" else create_model(name, num_classes=10)
    net.eval()
    x = torch.randn(2, 1, 8, 8) if name == "small_cnn" else torch.randn(2, 3, 32, 32)
    out = forward_with_taps(net, x, ["preact_stages", "stages", "penultimate"])
    torch.testing.assert_close(out.logits, net(x), rtol=0, atol=0)
    preact = [out.features[path] for path in net.preact_stage_names]
    assert len(preact) == len(net.stage_names)
    if name.startswith("wrn"):
        torch.testing.assert_close(preact[-1].relu().mean(dim=(2, 3)), out.features["penultimate"])
    elif name.startswith("shufflenet"):  # the benchmarks' pre-activation is taken before the unit's channel shuffle
        from lightning_kd.models.shufflenet_cifar import channel_shuffle

        for before, stage in zip(preact, net.stage_names, strict=True):
            torch.testing.assert_close(channel_shuffle(before.relu(), 2), out.features[stage])
    else:
        for before, stage in zip(preact, net.stage_names, strict=True):
            torch.testing.assert_close(before.relu(), out.features[stage])
            assert bool((before < 0).any())  # before the ReLU indeed
    one = forward_with_taps(net, x, "preact_stages[-1]").features
    assert list(one) == [net.preact_stage_names[-1]]
