from __future__ import annotations

import pytest
import torch

from lightning_kd.models import (
    CifarResNet,
    ClassifierNetwork,
    DenseNet,
    TimmNetwork,
    TorchvisionNetwork,
    WideResNet,
    create_model,
    list_models,
)
from lightning_kd.models.taps import forward_with_taps

# the heaviest presets are covered by their class in test_cifar_networks_shapes
CIFAR_PRESETS = [m for m in list_models() if m not in {"mlp", "small_cnn", "wrn_28_10", "densenet_112_33"}]


@pytest.mark.parametrize("name", CIFAR_PRESETS)
def test_presets_return_logits_and_features(name: str) -> None:
    net = create_model(name, num_classes=7)
    logits, features = net.forward_with_features(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7)
    assert features.shape == (2, net.num_features)
    torch.testing.assert_close(net.forward_head(features), logits)


# CIFAR-100 heads; counts as the KD benchmark tables print them (CRD, ReviewKD, DKD: two decimals, in millions)
# and the architectures' papers
PUBLISHED_PARAMETERS_M = {
    "resnet20": 0.28, "resnet32": 0.47, "resnet56": 0.86, "resnet110": 1.74, "resnet8x4": 1.23, "resnet32x4": 7.43,
    "wrn_16_2": 0.70, "wrn_40_1": 0.57, "wrn_40_2": 2.26, "vgg8": 3.96, "vgg13": 9.46, "mobilenetv2": 0.81,
    "shufflenetv1": 0.95, "shufflenetv2": 1.36, "resnet50_cifar": 23.71, "densenet_bc_100_12": 0.80,
    "resnet18_cifar": 11.22,
}


@pytest.mark.parametrize(("name", "params_m"), PUBLISHED_PARAMETERS_M.items())
def test_parameter_counts_match_the_literature(name: str, params_m: float) -> None:
    net = create_model(name, num_classes=100)
    assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(params_m, abs=0.006)


@pytest.mark.parametrize("name", ["mlp", "small_cnn"])
def test_small_networks_on_digits_shape(name: str) -> None:
    net = create_model(name, num_classes=10)
    out = forward_with_taps(net, torch.randn(3, 1, 8, 8), "penultimate")
    assert out.logits.shape == (3, 10) and out.features["penultimate"].shape == (3, net.num_features)


def test_small_cnn_on_mnist_shape() -> None:
    assert create_model("small_cnn", num_classes=10)(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_model_by_name_splits_head() -> None:
    net = create_model("tv_mobilenet_v3_small", num_classes=5)
    assert isinstance(net, TorchvisionNetwork)
    logits, features = net.forward_with_features(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5) and features.shape == (2, net.num_features)


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "vit_tiny_patch16_224"])
def test_timm_networks_split_into_features_and_head(name: str) -> None:
    kwargs = {"img_size": 32, "patch_size": 8} if name.startswith("vit") else {}
    net = TimmNetwork(name, num_classes=7, in_channels=1, model_kwargs=kwargs).eval()  # pretrained is off: no download
    x = torch.randn(2, 1, 32, 32)
    logits, features = net.forward_with_features(x)
    assert logits.shape == (2, 7) and features.shape == (2, net.num_features)
    torch.testing.assert_close(logits, net(x))  # the split is the model's own forward
    assert net.stage_names and all(name.startswith("body.") for name in net.stage_names)


def test_plain_modules_give_their_heads_input_as_penultimate_features() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    x = torch.randn(2, 4)
    out = forward_with_taps(net, x, "penultimate")
    torch.testing.assert_close(out.features["penultimate"], net[1](net[0](x)))
    torch.testing.assert_close(out.logits, net(x))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: CifarResNet(depth=21), "6n \\+ 2"),
        (lambda: CifarResNet(depth=20, widths=(8, 8, 8, 8, 8), blocks=(2, 2, 2, 2)), "make depth 18, not 20"),
        (lambda: CifarResNet(widths=(8, 8, 8), blocks=(2, 2, 2)), "one count >= 1 per stage \\(2 stages\\)"),
        (lambda: WideResNet(depth=27), "6n \\+ 4"),
        (lambda: DenseNet(depth=11), "6n \\+ 4"),
        (lambda: create_model("resnet_nope"), "unknown model 'resnet_nope'"),
        (lambda: TorchvisionNetwork("not_a_model"), "unknown torchvision classification model"),
        (lambda: TorchvisionNetwork("resnet18", in_channels=1), "3 input channels"),
        (lambda: create_model("timm_resnet_18"), r"unknown timm model 'resnet_18'; did you mean resnet18"),
    ],
)
def test_bad_architecture_arguments_are_refused(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_resnet18_cifar_has_the_papers_layout() -> None:
    # four stages of two basic blocks, 64/128/256/512 channels, a 3x3 stem and no max-pooling
    net = create_model("resnet18_cifar", num_classes=100)
    assert [len(stage) for stage in net.stages] == [2, 2, 2, 2]
    assert [stage[-1].conv2.out_channels for stage in net.stages] == [64, 128, 256, 512]
    assert net.stem[0].kernel_size == (3, 3) and not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    features = forward_with_taps(net, torch.randn(2, 3, 32, 32), "stages").features
    assert [tuple(f.shape[2:]) for f in features.values()] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert CifarResNet(depth=18, widths=(8, 8, 8, 8, 8), blocks=(2, 2, 2, 2)).num_features == 8


def test_cifar_networks_shapes() -> None:
    for net in (WideResNet(depth=16, widen_factor=1, num_classes=3), DenseNet(depth=16, growth_rate=4, num_classes=3)):
        assert isinstance(net, ClassifierNetwork)
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("name", ["densenet_bc_100_12", "mlp", "resnet20", "resnet8x4", "small_cnn", "wrn_16_2",
                                  "tv_resnet18", "timm_resnet18", "timm_convnext_atto"])
def test_zoo_networks_reinitialise_every_weight(name: str) -> None:
    # Born-Again generations in Python start from re-initialised copies: no weight may be carried over
    from lightning_kd.models import reinitialize

    network = create_model(name, num_classes=10)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    reinitialize(network)
    changed = [k for k, v in network.state_dict().items() if not torch.equal(v, before[k])]
    weights = [k for k, v in before.items() if k.endswith("weight") and v.ndim > 1]
    assert set(weights) <= set(changed)


@pytest.mark.parametrize(("name", "shapes"), [
    ("vgg8", [(128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)]),
    ("mobilenetv2", [(12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)]),
    ("shufflenetv1", [(240, 16, 16), (480, 8, 8), (960, 4, 4)]),
    ("shufflenetv2", [(116, 16, 16), (232, 8, 8), (464, 4, 4)]),
    ("resnet50_cifar", [(256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)]),
])
def test_benchmark_networks_name_the_stages_the_feature_methods_tap(name: str, shapes: list[tuple[int, ...]]) -> None:
    """The stages are the benchmark codebases' feature list after its stem, so AT's "stages", SP's "stages[-1]" and
    FitNets' "stages[1]" find the layers the published tables used; each ends with its ReLU, but MobileNetV2's,
    whose blocks end linear."""
    net = create_model(name, num_classes=100).eval()
    out = forward_with_taps(net, torch.randn(2, 3, 32, 32), "stages")
    assert [tuple(f.shape[1:]) for f in out.features.values()] == shapes
    assert all(float(f.min()) >= 0 for f in out.features.values()) == (name != "mobilenetv2")
