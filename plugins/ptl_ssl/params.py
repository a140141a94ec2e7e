"""Parameter schemas of the SSL algorithms.

Kept apart from the algorithms so that registering (``ptl list ssl``, ``ptl --help``) only needs
pydantic: the modules holding the losses import torch and are loaded when a run builds one.
Defaults follow the FixMatch, FlexMatch, FreeMatch, UDA and Mean Teacher papers and the USB
benchmark (semilearn 0.3.2's arguments).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ptl_cli.schema import Params

# The fields several algorithms declare alike (each with its own default).
UnlabeledWeight = Annotated[float, Field(ge=0.0, description="weight of the unlabeled loss (>= 0)")]
RampupFraction = Annotated[
    float, Field(ge=0.0, le=1.0, description="fraction of training in [0, 1] over which the weight ramps up")
]


class FixMatchParams(Params):
    threshold: float = Field(
        0.95, ge=0.0, le=1.0, description="confidence tau in [0, 1] a pseudo label needs to count"
    )
    lambda_u: UnlabeledWeight = 1.0
    temperature: float = Field(
        1.0, gt=0.0, description="softmax temperature (> 0) of the prediction that gives the confidence"
    )


class UDAParams(Params):
    temperature: float = Field(0.4, gt=0.0, description="sharpening temperature (> 0) of the soft targets")
    threshold: float = Field(
        0.8, ge=0.0, le=1.0, description="confidence mask in [0, 1] on the unsharpened max probability"
    )
    lambda_u: float = Field(1.0, ge=0.0, description="weight of the consistency loss (>= 0)")


class MeanTeacherParams(Params):
    ema_decay: float = Field(
        0.999, ge=0.0, le=1.0, description="EMA decay in [0, 1] of the teacher's weights"
    )
    lambda_u: float = Field(50.0, ge=0.0, description="maximum weight of the consistency loss (>= 0)")
    rampup_fraction: RampupFraction = 0.4


class PseudoLabelParams(Params):
    threshold: float = Field(
        0.95, ge=0.0, le=1.0, description="confidence in [0, 1] a pseudo label needs to count"
    )
    lambda_u: float = Field(1.0, ge=0.0, description="maximum weight of the unlabeled loss (>= 0)")
    rampup_fraction: RampupFraction = 0.4


class FlexMatchParams(Params):
    threshold: float = Field(
        0.95, ge=0.0, le=1.0, description="confidence tau in [0, 1] at which a class's threshold saturates"
    )
    lambda_u: UnlabeledWeight = 1.0
    thresh_warmup: bool = Field(
        True, description="count the unused samples in the normalization (the paper's threshold warm-up)"
    )


class FreeMatchParams(Params):
    lambda_u: UnlabeledWeight = 1.0
    lambda_e: float = Field(0.01, ge=0.0, description="weight of the self-adaptive fairness loss (>= 0)")
    ema_decay: float = Field(
        0.999, ge=0.0, le=1.0, description="EMA decay in [0, 1] of the adaptive thresholds"
    )
    use_quantile: bool = Field(
        False, description="track the 0.8 quantile of the confidence instead of its mean"
    )
    clip_thresh: bool = Field(False, description="clip the global threshold to at most 0.95")


# The algorithms below follow USB's arguments (semilearn 0.3.2) for their defaults.
EmaDecay = Annotated[
    float, Field(ge=0.0, le=1.0, description="EMA decay in [0, 1] of the running statistics")
]
HardLabel = Annotated[bool, Field(description="hard pseudo labels (argmax) instead of soft targets")]
Temperature = Annotated[float, Field(gt=0.0, description="temperature (> 0) of the soft targets")]


class SoftMatchParams(Params):
    lambda_u: UnlabeledWeight = 1.0
    ema_decay: EmaDecay = 0.999
    n_sigma: float = Field(
        2.0, gt=0.0, description="width (> 0) of the Gaussian weight, in standard deviations"
    )
    dist_uniform: bool = Field(
        True, description="align towards the uniform prior (false: towards the labeled predictions)"
    )
    hard_label: HardLabel = True
    temperature: Temperature = 0.5


class AdaMatchParams(Params):
    threshold: float = Field(
        0.95, ge=0.0, le=1.0, description="tau in [0, 1], times the mean labeled confidence: the threshold"
    )
    lambda_u: UnlabeledWeight = 1.0
    ema_decay: EmaDecay = 0.999
    hard_label: HardLabel = True


class DashParams(Params):
    lambda_u: UnlabeledWeight = 1.0
    temperature: Temperature = 0.5
    gamma: float = Field(
        1.27, gt=1.0, description="factor (> 1) by which the threshold shrinks at each update"
    )
    c: float = Field(1.0001, gt=0.0, description="scale (> 0) of the first threshold relative to rho_init")
    rho_min: float = Field(
        0.05, ge=0.0, description="lowest threshold (>= 0); reaching it switches to hard labels"
    )
    warmup_steps: int = Field(
        2048, ge=0, description="supervised-only steps before the unlabeled loss starts"
    )
    rho_update_every: int = Field(10240, ge=1, description="steps (>= 1) between two threshold updates")


class DeFixMatchParams(Params):
    threshold: float = Field(
        0.95, ge=0.0, le=1.0, description="confidence tau in [0, 1] a pseudo label needs to count"
    )
    lambda_u: UnlabeledWeight = 1.0
    hard_label: HardLabel = True


class PiModelParams(Params):
    lambda_u: float = Field(10.0, ge=0.0, description="maximum weight of the consistency loss (>= 0)")
    rampup_fraction: RampupFraction = 0.4


class VATParams(Params):
    lambda_u: float = Field(0.3, ge=0.0, description="maximum weight of the adversarial loss (>= 0)")
    lambda_ent: float = Field(0.06, ge=0.0, description="weight of the entropy minimization term (>= 0)")
    eps: float = Field(6.0, gt=0.0, description="norm (> 0) of the adversarial perturbation, per sample")
    xi: float = Field(1e-6, gt=0.0, description="norm (> 0) of the probe perturbation of the power iteration")
    rampup_fraction: RampupFraction = 0.4


class MixMatchParams(Params):
    lambda_u: float = Field(100.0, ge=0.0, description="maximum weight of the unlabeled MSE loss (>= 0)")
    temperature: float = Field(0.5, gt=0.0, description="sharpening temperature (> 0) of the averaged guess")
    alpha: float = Field(0.5, ge=0.0, description="Beta(alpha, alpha) of the mixup ratio (0: no mixing)")
    rampup_fraction: RampupFraction = 1 / 64


class CoMatchParams(Params):
    """USB's CIFAR benchmark configuration (the paper's CIFAR settings), not its CLI defaults."""

    threshold: float = Field(
        0.95, ge=0.0, le=1.0, description="confidence tau in [0, 1] a smoothed pseudo label needs to count"
    )
    lambda_u: UnlabeledWeight = 1.0
    contrast_threshold: float = Field(
        0.8, ge=0.0, le=1.0, description="pseudo-label similarity in [0, 1] below which a graph edge is cut"
    )
    lambda_c: float = Field(1.0, ge=0.0, description="weight of the graph-contrastive loss (>= 0)")
    temperature: float = Field(0.2, gt=0.0, description="temperature (> 0) of the embedding similarities")
    proj_size: int = Field(64, ge=1, description="width (>= 1) of the projection head's embeddings")
    queue_batch: int = Field(
        5, ge=1, description="global batches (>= 1) the memory queue holds; smoothing starts once it is full"
    )
    smoothing_alpha: float = Field(
        0.9, ge=0.0, le=1.0, description="weight in [0, 1] of the own prediction in memory smoothing"
    )
    da_len: int = Field(
        32, ge=1, description="batches (>= 1) whose mean prediction distribution alignment averages"
    )


class ReMixMatchParams(Params):
    """USB's image configuration (its ``ulb_loss_ratio`` 1.5 beside the argument defaults)."""

    lambda_u: float = Field(1.5, ge=0.0, description="maximum weight of the mixed unlabeled loss (>= 0)")
    lambda_kl: float = Field(
        0.5, ge=0.0, description="maximum weight (>= 0) of the one-strong-view consistency loss"
    )
    lambda_rot: float = Field(0.5, ge=0.0, description="weight (>= 0) of the rotation-prediction loss")
    temperature: float = Field(0.5, gt=0.0, description="sharpening temperature (> 0) of the aligned guess")
    alpha: float = Field(0.75, ge=0.0, description="Beta(alpha, alpha) of the mixup ratio (0: no mixing)")
    rampup_fraction: RampupFraction = 1 / 64
    ema_decay: float = Field(
        0.999, ge=0.0, le=1.0, description="EMA decay in [0, 1] of the model's class prior (alignment)"
    )


class CRMatchParams(Params):
    """USB's arguments (its ``hard_label`` is never read by its step: not offered)."""

    threshold: float = Field(
        0.95, ge=0.0, le=1.0, description="confidence tau in [0, 1] a pseudo label needs to count"
    )
    lambda_rot: float = Field(1.0, ge=0.0, description="weight (>= 0) of the rotation-prediction loss")


class SimMatchParams(Params):
    """USB's CIFAR configuration (``config/classic_cv/simmatch``), not its CLI defaults."""

    threshold: float = Field(
        0.95, ge=0.0, le=1.0, description="confidence tau in [0, 1] a propagated pseudo label needs to count"
    )
    lambda_u: UnlabeledWeight = 1.0
    lambda_in: float = Field(1.0, ge=0.0, description="weight of the instance-similarity loss (>= 0)")
    temperature: float = Field(0.1, gt=0.0, description="temperature (> 0) of the similarities to the bank")
    proj_size: int = Field(128, ge=1, description="width (>= 1) of the projection head's embeddings")
    smoothing_alpha: float = Field(
        0.9, ge=0.0, le=1.0, description="weight in [0, 1] of the own prediction in label propagation"
    )
    da_len: int = Field(
        32, ge=1, description="batches (>= 1) whose mean prediction distribution alignment averages"
    )
    bank_momentum: float = Field(
        0.7, ge=0.0, le=1.0, description="weight in [0, 1] of a bank entry's old value when it is written"
    )
    ema_teacher: bool = Field(
        False, description="write the bank from an EMA teacher's embeddings (USB beyond CIFAR) instead"
    )
    teacher_decay: float = Field(
        0.999, ge=0.0, le=1.0, description="constant EMA decay in [0, 1] of that teacher (with ema_teacher)"
    )
