"""Layers a student inherits from its teacher: copied in, then frozen (Born-Again across architectures).

The Born-Again paper's ResNet students of a DenseNet teacher "share the first (conv1) and last (fc-output) layer
with the teacher, which are frozen". :func:`inherit_layers` copies such layers (parameters and buffers) from a
teacher into a student of another architecture and freezes them; the task keeps them frozen through training.

Layers are named by module path, the same on both networks (``"stem"`` of a zoo network names its stem, see
:mod:`lightning_kd.models.taps`; ``"classifier"`` its head: the network's ``classifier_name`` or its last
``nn.Linear``), or by a mapping from the student's layer to the teacher's.

Example:
    >>> import torch
    >>> from lightning_kd.models import SmallCNN
    >>> teacher, student = SmallCNN((8, 16), num_classes=10), SmallCNN((8, 32, 16), num_classes=10)
    >>> inherit_layers(student, teacher, ["body.0", "classifier"])
    ['body.0', 'fc']
    >>> torch.equal(student.body[0].weight, teacher.body[0].weight), student.body[0].weight.requires_grad
    (True, False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from lightning_kd.errors import Refusal
from lightning_kd.models.taps import resolve_layers

InheritSpec = str | Sequence[str] | Mapping[str, str] | None
"""Layers to inherit: a name or list of names (the same on both networks), or ``{student layer: teacher layer}``."""

CLASSIFIER = "classifier"


def layer_pairs(spec: InheritSpec) -> list[tuple[str, str]]:
    """``(student layer, teacher layer)`` names of ``spec``, in order.

    Example:
        >>> layer_pairs("stem"), layer_pairs({"conv1": "stem"})
        ([('stem', 'stem')], [('conv1', 'stem')])
    """
    if spec is None:
        return []
    if isinstance(spec, str):
        return [(spec, spec)]
    if isinstance(spec, Mapping):
        return [(str(student), str(teacher)) for student, teacher in spec.items()]
    return [(str(name), str(name)) for name in spec]


def layer_path(network: nn.Module, name: str) -> str:
    """The module path ``name`` stands for in ``network`` (``"stem"``, ``"classifier"``, ``"stages[i]"`` or a path).

    Raises:
        Refusal: No such layer (the closest paths are suggested), or ``name`` is not one module (``"stages"``).
    """
    if name == CLASSIFIER:
        given = getattr(network, "classifier_name", None)
        if given is not None:
            return given
        linears = [path for path, module in network.named_modules() if isinstance(module, nn.Linear)]
        if not linears:
            raise Refusal(f"{type(network).__name__} has no nn.Linear head to inherit as 'classifier'")
        return linears[-1]
    paths = resolve_layers(network, name)
    if len(paths) != 1 or paths[0] == "penultimate":
        raise Refusal(f"{name!r} is not one layer of {type(network).__name__}: name one module to inherit "
                      "(a module path, 'stem', 'classifier' or 'stages[i]')")
    return paths[0]


def _stay_in_eval(module: nn.Module, inputs: object) -> None:
    module.eval()  # whatever called train() on the network before this forward (Lightning, a shape check, a user)


def keep_in_eval(module: nn.Module) -> None:
    """Put ``module`` in eval mode and keep it there: every forward runs it in eval mode (a BatchNorm uses and keeps
    its running statistics), whoever calls ``train()`` on the network. Survives copies of the network."""
    module.eval()
    if not getattr(module, "kept_in_eval", False):
        module.register_forward_pre_hook(_stay_in_eval)
        module.kept_in_eval = True  # one hook, however often the layer is inherited again


def _shapes(state: Mapping[str, torch.Tensor]) -> str:
    return ", ".join(f"{key} {'x'.join(map(str, value.shape)) or 'scalar'}" for key, value in state.items())


def inherit_layers(student: nn.Module, teacher: nn.Module, spec: InheritSpec) -> list[str]:
    """Copy ``spec``'s layers of ``teacher`` (parameters and buffers) into ``student`` and freeze them there.

    Frozen: no gradient (``requires_grad`` off, so no optimizer holds them) and eval mode at every forward (a
    BatchNorm among them keeps the teacher's statistics; see :func:`keep_in_eval`).

    Returns:
        The student's module paths that now hold the teacher's layers.

    Raises:
        Refusal: A layer is missing, or the two layers' parameters and buffers differ in name or shape: both layers
            and their shapes are named.
    """
    inherited = []
    for student_name, teacher_name in layer_pairs(spec):
        student_path, teacher_path = layer_path(student, student_name), layer_path(teacher, teacher_name)
        target, source = student.get_submodule(student_path), teacher.get_submodule(teacher_path)
        wanted, given = target.state_dict(), source.state_dict()
        if list(wanted) != list(given) or any(wanted[k].shape != given[k].shape for k in wanted):
            raise Refusal(
                f"the student cannot inherit the teacher's {teacher_path!r} ({type(source).__name__}: "
                f"{_shapes(given)}) as its {student_path!r} ({type(target).__name__}: {_shapes(wanted)}): the "
                "shapes differ; build the student so that these layers match (e.g. the same stem width and "
                "feature width before the classifier), or inherit other layers"
            )
        with torch.no_grad():
            target.load_state_dict(given)
        target.requires_grad_(False)
        keep_in_eval(target)
        inherited.append(student_path)
    return inherited
