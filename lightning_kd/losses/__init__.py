"""Distillation losses: pure functions (no Lightning), one module per method family, ``nn.Module`` twins.

Conventions, the same for every family:

* A **loss** (what a method minimises) returns a :data:`LossOutput`: ``{"loss": total, **parts}``, the
  parts unweighted (a task logs each as ``train/<part>_loss``). Its module twin returns the same dict.
* A **term** (:func:`soft_target_kl`, :func:`soft_cross_entropy`) is one divergence, a scalar tensor,
  that losses are assembled from.
* ``student_logits`` and ``teacher_logits`` are ``(B, C)``; the teacher's are constants, detached
  here whatever the caller did.
* Weights say which convention they follow. A **convex** weight (``alpha``, checked by
  :func:`check_alpha`) weighs the *distillation* term and ``1 - alpha`` the label term (Hinton's
  convention; torchdistill's ``KDLoss`` uses the reverse). An **independent** weight (DKD's ``tckd_weight``
  and ``nckd_weight``, a feature term's ``at_weight``; checked by :func:`check_weight`) multiplies its own term
  only, is finite and ``>= 0``, and 0 switches the term off.
* Argument checks live in :mod:`lightning_kd.losses.validation`; each family states its names and
  defaults once, in its own module.

Every module of this package lists its public names in ``__all__``; they are all exported here, so a
new family is one new module and nothing else to edit.

Example:
    >>> from lightning_kd import losses
    >>> losses.hinton_kd_loss is losses.kd.hinton_kd_loss
    True
"""

import importlib as _importlib
import pkgutil as _pkgutil


def _export_every_module() -> list[str]:
    exported: list[str] = []
    for info in sorted(_pkgutil.iter_modules(__path__), key=lambda info: info.name):
        module = _importlib.import_module(f"{__name__}.{info.name}")
        names = getattr(module, "__all__", None)
        if names is None:
            raise ImportError(f"{module.__name__} must list its public names in __all__")
        clashes = set(names) & set(exported)
        if clashes:
            raise ImportError(f"{module.__name__} exports {sorted(clashes)}, which another loss module exports too")
        globals().update({name: getattr(module, name) for name in names})
        exported += names
    return sorted(exported)


__all__ = _export_every_module()
