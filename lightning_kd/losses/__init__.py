"""Distillation losses: pure functions (no Lightning), one module per method family, ``nn.Module`` twins.

Conventions, the same for every family:

* A **loss** (what a method minimises) returns a :data:`LossOutput`: ``{"loss": total, **parts}``, the
  parts unweighted (a task logs each as ``train/<part>_loss``). Its module twin returns the same dict.
* A **term** (:func:`soft_target_kl`, :func:`soft_cross_entropy`) is one divergence, a scalar tensor,
  that losses are assembled from.
* ``student_logits`` and ``teacher_logits`` are ``(B, C)``; the teacher's are constants, detached
  here whatever the caller did.
* ``alpha`` weights the *distillation* term and ``1 - alpha`` the label term (Hinton's convention;
  torchdistill's ``KDLoss`` uses the reverse).
* Argument checks live in :mod:`lightning_kd.losses.validation`; each family states its names and
  defaults once, in its own module.
"""

from lightning_kd.losses.born_again import (
    BORN_AGAIN_LOSSES,
    BornAgainLoss,
    BornAgainLossName,
    ban_label_loss,
    ban_loss,
    born_again_loss,
    cwtm_loss,
    cwtm_weights,
    dkpp_loss,
    permute_non_argmax,
)
from lightning_kd.losses.distances import (
    DISTANCES,
    class_conditional_distance,
    feature_distance,
    gaussian_kl_diag,
    gaussian_kl_full,
    gaussian_w2_diag,
    gaussian_w2_full,
    gromov_wasserstein,
    mmd,
    sinkhorn,
    sliced_wasserstein,
    wasserstein_exact,
)
from lightning_kd.losses.distribution_matching import FeatureMatch, distribution_matching_loss
from lightning_kd.losses.divergences import soft_cross_entropy, soft_target_kl
from lightning_kd.losses.kd import DEFAULT_ALPHA, DEFAULT_TEMPERATURE, HintonKDLoss, hinton_kd_loss
from lightning_kd.losses.label_smoothing import (
    DEFAULT_SMOOTHING_CONVENTION,
    SMOOTHING_CONVENTIONS,
    LabelSmoothing,
    SmoothingConvention,
    smoothed_targets,
)
from lightning_kd.losses.multi_teacher import (
    MULTI_TEACHER_REDUCTIONS,
    MULTI_TEACHER_WEIGHTINGS,
    MultiTeacherKDLoss,
    MultiTeacherReduction,
    MultiTeacherWeighting,
    ae_kd_weights,
    confidence_weights,
    entropy_weights,
    fixed_weights,
    min_norm_weights,
    multi_teacher_kd_loss,
    multi_teacher_weights,
    per_teacher_kd_gradients,
)
from lightning_kd.losses.self_distillation import (
    SELF_DISTILLATION_PRESETS,
    SelfDistillationLoss,
    SelfDistillationPreset,
    SelfDistillationWeights,
    hint_distance,
    self_distillation_loss,
    self_distillation_weights,
)
from lightning_kd.losses.teacher_free import (
    DEFAULT_REG_ALPHA,
    DEFAULT_REG_TEMPERATURE,
    DEFAULT_TRUE_CLASS_PROB,
    TF_KD_REG_MODES,
    TfKDRegLoss,
    TfKDRegMode,
    tf_kd_reg_loss,
    virtual_teacher,
    virtual_teacher_target,
)
from lightning_kd.losses.validation import LossOutput, check_alpha, check_smoothing, check_temperature

__all__ = [
    "BORN_AGAIN_LOSSES",
    "DEFAULT_ALPHA",
    "DISTANCES",
    "DEFAULT_REG_ALPHA",
    "DEFAULT_REG_TEMPERATURE",
    "DEFAULT_SMOOTHING_CONVENTION",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TRUE_CLASS_PROB",
    "SELF_DISTILLATION_PRESETS",
    "SMOOTHING_CONVENTIONS",
    "TF_KD_REG_MODES",
    "BornAgainLoss",
    "BornAgainLossName",
    "FeatureMatch",
    "HintonKDLoss",
    "MULTI_TEACHER_REDUCTIONS",
    "MULTI_TEACHER_WEIGHTINGS",
    "MultiTeacherKDLoss",
    "MultiTeacherReduction",
    "MultiTeacherWeighting",
    "LabelSmoothing",
    "LossOutput",
    "SelfDistillationLoss",
    "SelfDistillationPreset",
    "SelfDistillationWeights",
    "SmoothingConvention",
    "TfKDRegLoss",
    "TfKDRegMode",
    "ae_kd_weights",
    "ban_label_loss",
    "ban_loss",
    "born_again_loss",
    "check_alpha",
    "class_conditional_distance",
    "check_smoothing",
    "check_temperature",
    "confidence_weights",
    "cwtm_loss",
    "cwtm_weights",
    "distribution_matching_loss",
    "dkpp_loss",
    "entropy_weights",
    "feature_distance",
    "fixed_weights",
    "gaussian_kl_diag",
    "gaussian_kl_full",
    "gaussian_w2_diag",
    "gaussian_w2_full",
    "gromov_wasserstein",
    "hint_distance",
    "hinton_kd_loss",
    "min_norm_weights",
    "mmd",
    "multi_teacher_kd_loss",
    "multi_teacher_weights",
    "per_teacher_kd_gradients",
    "permute_non_argmax",
    "self_distillation_loss",
    "self_distillation_weights",
    "sinkhorn",
    "sliced_wasserstein",
    "smoothed_targets",
    "soft_cross_entropy",
    "soft_target_kl",
    "tf_kd_reg_loss",
    "virtual_teacher",
    "virtual_teacher_target",
    "wasserstein_exact",
]
