"""The model zoo: networks that return logits and, on request, penultimate features.

Example:
    >>> from lightning_kd.models import create_model, list_models
    >>> "resnet32x4" in list_models()
    True
    >>> create_model("resnet20", num_classes=10).num_features
    64
"""

from lightning_kd.models.base import ClassifierNetwork, count_parameters, reinitialize
from lightning_kd.models.dense_follower import DenseFollowerResNet
from lightning_kd.models.densenet import DenseNet, dense_block_channels
from lightning_kd.models.early_exit import EarlyExitNetwork, early_exit_sweep
from lightning_kd.models.ensemble import SoftmaxEnsemble
from lightning_kd.models.huggingface import HuggingFaceCausalLM
from lightning_kd.models.inheritance import inherit_layers
from lightning_kd.models.language import CharCNNLSTM, LSTMLanguageModel, TransformerLanguageModel
from lightning_kd.models.mobilenet_cifar import CifarMobileNetV2
from lightning_kd.models.multi_exit import ExitCost, MultiExitNetwork, TruncatedNetwork
from lightning_kd.models.registry import create_model, is_model_name, list_models, model_config, register_model
from lightning_kd.models.resnet_cifar import CifarResNet
from lightning_kd.models.shufflenet_cifar import CifarShuffleNetV1, CifarShuffleNetV2
from lightning_kd.models.simple import MLP, SmallCNN
from lightning_kd.models.taps import NetworkOutput, forward_with_taps, resolve_layers, stage_names
from lightning_kd.models.timm import TimmNetwork
from lightning_kd.models.torchvision import TorchvisionNetwork
from lightning_kd.models.vgg_cifar import CifarVGG
from lightning_kd.models.wide_resnet import WideResNet

__all__ = [
    "MLP",
    "MultiExitNetwork",
    "CharCNNLSTM",
    "CifarMobileNetV2",
    "CifarResNet",
    "CifarShuffleNetV1",
    "CifarShuffleNetV2",
    "CifarVGG",
    "ClassifierNetwork",
    "DenseFollowerResNet",
    "DenseNet",
    "EarlyExitNetwork",
    "ExitCost",
    "HuggingFaceCausalLM",
    "LSTMLanguageModel",
    "NetworkOutput",
    "SmallCNN",
    "SoftmaxEnsemble",
    "TimmNetwork",
    "TorchvisionNetwork",
    "TransformerLanguageModel",
    "TruncatedNetwork",
    "WideResNet",
    "count_parameters",
    "create_model",
    "dense_block_channels",
    "early_exit_sweep",
    "forward_with_taps",
    "inherit_layers",
    "list_models",
    "is_model_name",
    "model_config",
    "register_model",
    "reinitialize",
    "resolve_layers",
    "stage_names",
]
