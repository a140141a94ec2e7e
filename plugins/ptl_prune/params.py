"""Parameter schemas of the pruners (pydantic only, so registering them costs no torch import).

Defaults are the papers' (Ramanujan et al. 2020, Chijiwa et al. 2021): ranking by the signed
score, Kaiming-uniform weights and scores, non-affine BatchNorm, every Conv/Linear layer pruned at
the same rate.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ptl_cli.schema import Params

WeightInit = Literal["kaiming_uniform", "signed_constant", "kaiming_normal"]
ScoreInit = Literal["kaiming_uniform", "kaiming_normal"]


#: the reference's example coats above its first (p = 0.7): 0.9212 and 0.9685
DEFAULT_COATS = (0.9212, 0.9685)


class SGDParams(Params):
    """The weight-optimized baseline: ordinary dense training from the same weight distribution."""

    #: used when a recipe sets no train.lr (the papers' Conv-6 SGD baseline)
    default_lr: ClassVar[float] = 0.01

    weight_init: WeightInit = Field(
        "kaiming_uniform", description="distribution of the initial weights (fan-in, ReLU gain)"
    )
    bn_affine: bool = Field(True, description="keep BatchNorm's learned scale and shift")


class EdgePopupParams(Params):
    """edge-popup (Ramanujan et al. 2020): weights stay at their random values, scores choose them."""

    #: used when a recipe sets no train.lr (the papers' ResNet and ImageNet score learning rate)
    default_lr: ClassVar[float] = 0.1

    sparsity: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="fraction p of the weights pruned: of each layer (sparsity_scope layer) or of all "
        "the layers ranked together (sparsity_scope global)",
    )
    sparsity_scope: Literal["layer", "global"] = Field(
        "layer",
        description="layer: each layer keeps its own top 1-p (the papers); global: one top-k over all "
        "layers' scores, exact in total, each layer's count free",
    )
    score_abs: bool = Field(False, description="rank |S| (hidden-networks) instead of the signed score S")
    weight_init: WeightInit = Field(
        "kaiming_uniform", description="distribution of the random weights (fan-in, ReLU gain)"
    )
    score_init: ScoreInit = Field("kaiming_uniform", description="distribution of the initial scores")
    prune_first_layer: bool = Field(
        True, description="prune the first Conv/Linear layer (else keep it dense)"
    )
    prune_last_layer: bool = Field(True, description="prune the last Conv/Linear layer (else keep it dense)")
    bn_affine: bool = Field(
        False, description="keep BatchNorm's scale/shift and train them with the scores (papers: false)"
    )
    layer_sparsity: dict[str, float] = Field(
        default_factory=dict,
        description="per-layer overrides: module-name glob -> p (first match wins; p = 0 keeps it dense)",
    )

    frozen_pruned: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="partial search: this fraction of each pruned layer is frozen as pruned (seeded), "
        "at most the layer's sparsity; no scores are kept for it",
    )
    frozen_kept: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="partial search: this fraction of each pruned layer is frozen as kept (seeded), "
        "at most 1 - sparsity; no scores are kept for it",
    )
    frozen_distribution: Literal["uniform", "erk"] = Field(
        "uniform",
        description="partial search: uniform freezes the same fractions of every pruned layer (the "
        "reference's epl); erk shapes them Erdős–Rényi-Kernel-wise (large layers more), the same "
        "fractions network-wide",
    )

    @field_validator("layer_sparsity")
    @classmethod
    def _rates_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for pattern, rate in value.items():
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"layer_sparsity[{pattern!r}] = {rate} must be in [0, 1)")
        return value

    @model_validator(mode="after")
    def _frozen_fits(self) -> EdgePopupParams:
        if self.frozen_pruned > self.sparsity or self.frozen_kept > 1.0 - self.sparsity:
            raise ValueError(
                f"frozen_pruned {self.frozen_pruned} must be at most sparsity {self.sparsity} and "
                f"frozen_kept {self.frozen_kept} at most 1 - sparsity"
            )
        return self


class IteRandParams(EdgePopupParams):
    """IteRand (Chijiwa et al. 2021): edge-popup plus periodic re-draws of pruned weights."""

    rerand_freq: int = Field(300, ge=1, description="K_per: re-draw every this many iterations")
    rerand_freq_unit: Literal["iterations", "epochs"] = Field(
        "iterations",
        description="'iterations': every rerand_freq steps; 'epochs': rerand_freq times per epoch",
    )
    rerand_lambda: float = Field(
        0.1, ge=0.0, le=1.0, description="r: probability that an eligible pruned weight is re-drawn"
    )
    rerand_rate: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="only the lowest p·rate fraction of scores is eligible (1 = all pruned)",
    )


def _no_redraw():
    """IteRand's r for the methods that compose with it: off by default (their papers')."""
    return Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="r of IteRand's re-draws of pruned weights: 0 = none (the paper); > 0 adds them",
    )


class MPTParams(IteRandParams):
    """MPT / biprop (Diffenderfer & Kailkhura 2021): edge-popup over ``α·sign(W)``; the reference
    code's defaults: ``|S|`` ranked, Kaiming-normal weights, non-affine BatchNorm."""

    score_abs: bool = Field(True, description="rank |S| (the biprop code) instead of the signed score S")
    weight_init: WeightInit = Field(
        "kaiming_normal",
        description="distribution of the random weights; only their signs and each layer's mean |W| "
        "over the kept ones (α) reach the forward",
    )
    rerand_lambda: float = _no_redraw()
    activations: Literal["real", "binary"] = Field(
        "real",
        description="binary (MPT-1/1): the model's nn.ReLU modules become sign(x) with Bi-Real's "
        "gradient; real (MPT-1/32): unchanged",
    )
    binary_batchnorm: bool = Field(
        True,
        description="binary activations only: a BatchNorm (non-affine unless bn_affine, running stats) "
        "before each sign, as the reference's *_BinAct networks; sized by the Conv/Linear before the ReLU",
    )


class PartialSearchParams(IteRandParams):
    """Partial search in a frozen network (Otsuka et al.): the reference's Conv-6 example, half of
    each layer frozen (a quarter pruned, a quarter kept), ``|S|`` ranked over all layers at once."""

    frozen_pruned: float = Field(
        0.25,
        ge=0.0,
        lt=1.0,
        description="fraction of each pruned layer frozen as pruned (seeded), ≤ sparsity",
    )
    frozen_kept: float = Field(
        0.25,
        ge=0.0,
        lt=1.0,
        description="fraction of each pruned layer frozen as kept (seeded), ≤ 1 - sparsity",
    )
    sparsity_scope: Literal["layer", "global"] = Field(
        "global",
        description="global: one ranking over all layers (the reference's global_ep); layer: per layer",
    )
    score_abs: bool = Field(True, description="rank |S| (the reference) instead of the signed score S")
    score_init: ScoreInit = Field("kaiming_normal", description="distribution of the initial scores")
    rerand_lambda: float = _no_redraw()


class SignedSupermaskParams(IteRandParams):
    """Signed supermask (Koster et al. 2022): masks in {−1, 0, 1}; the top 1-p of |S| are kept, each
    with the sign of its score."""

    score_abs: Literal[True] = Field(True, description="always |S|: a score's sign is the mask's sign")
    rerand_lambda: float = _no_redraw()


class MulticoatedParams(IteRandParams):
    """Multicoated supermasks (Okoshi et al. 2022): C nested masks summed into levels 0..C; the
    reference's example coats 0.7, 0.9212, 0.9685 with signed-constant weights and ``|S|`` ranked."""

    sparsity: float = Field(
        0.7, ge=0.0, lt=1.0, description="p of the first coat: the fraction pruned (the network's sparsity)"
    )
    coat_sparsity: list[float] = Field(
        default_factory=lambda: list(DEFAULT_COATS),
        description="p of each further coat, rising, each above sparsity: the top 1-p also count once more",
    )
    sparsity_scope: Literal["layer"] = Field("layer", description="coats rank each layer on its own")
    score_abs: bool = Field(True, description="rank |S| (the reference) instead of the signed score S")
    weight_init: WeightInit = Field("signed_constant", description="distribution of the random weights")
    rerand_lambda: float = _no_redraw()

    @field_validator("coat_sparsity")
    @classmethod
    def _coats_rise(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < p < 1.0 for p in value) or value != sorted(set(value)):
            raise ValueError(f"coat_sparsity {value} must rise strictly, each in (0, 1)")
        return value

    @model_validator(mode="after")
    def _coats_above_sparsity(self) -> MulticoatedParams:
        if self.coat_sparsity and self.coat_sparsity[0] <= self.sparsity:
            raise ValueError(
                f"coat_sparsity {self.coat_sparsity} must lie above sparsity {self.sparsity} (the first coat)"
            )
        return self


class GemMinerParams(Params):
    """Gem-Miner (Sreenivasan et al. 2022): scores in [0, 1] rounded at 0.5, an L2 regulariser on
    them and an iterative schedule to the target sparsity; defaults from the reference's ResNet-20
    CIFAR-10 setting at 3.72% density (signed-constant weights, λ = 3e-5, a round every 5 epochs)."""

    #: the reference's search learning rate (SGD, cosine)
    default_lr: ClassVar[float] = 0.1

    sparsity: float = Field(
        0.9628,
        gt=0.0,
        lt=1.0,
        description="target p: the schedule leaves at most 1-p of all pruned layers' weights "
        "(the rounding at 0.5 may drop more)",
    )
    lmbda: float = Field(3e-5, ge=0.0, description="λ of the regulariser λ·‖S‖² on the scores (0 = none)")
    prune_every: int = Field(5, ge=1, description="P: a pruning round every P units (the first after P + 1)")
    prune_every_unit: Literal["epochs", "iterations"] = Field(
        "epochs", description="the unit of prune_every (the reference: epochs)"
    )
    prune_rounds: int | None = Field(
        None,
        ge=1,
        description="R: rounds to reach the target; unset: floor((E - 1)/P) for E search units",
    )
    weight_init: WeightInit = Field("signed_constant", description="distribution of the random weights")
    prune_first_layer: bool = Field(
        True, description="prune the first Conv/Linear layer (else keep it dense)"
    )
    prune_last_layer: bool = Field(True, description="prune the last Conv/Linear layer (else keep it dense)")
    bn_affine: bool = Field(False, description="keep BatchNorm's scale/shift and train them (papers: false)")
    finetune_epochs: int = Field(
        0,
        ge=0,
        description="the last this many of train.epochs fine-tune the kept weights (0: none, a ticket)",
    )
    finetune_lr: float = Field(
        0.01, gt=0.0, description="fine-tuning learning rate (×0.1 after 8/15 and 12/15 of those epochs)"
    )
    finetune_weight_decay: float = Field(1e-4, ge=0.0, description="weight decay while fine-tuning")
    unflag_before_finetune: bool = Field(
        True,
        description="fine-tune the schedule's mask (weights the rounding dropped come back; the "
        "reference's setting) instead of the rounded one",
    )
