"""Parameter and recipe schemas of the source-model plugin (pydantic only: cheap to import)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ptl_cli.recipes import RecipeBase
from ptl_cli.schema import Params

WEIGHTS_HELP = (
    "'bundled' (= bundled:fashion-coarse, Fashion-MNIST coarse classes; bundled:fashion-clusters = "
    "those split into 24 visual clusters; bundled:fashion04 = classes 0-4), a ptl .safetensors file, "
    "a local directory, "
    "or a Hugging Face hub id (cached; offline without a cache is an error)"
)


class BigGANParams(Params):
    weights: str = Field(
        "bundled",
        description=WEIGHTS_HELP + "; biggan-deep-128|256|512 = the published checkpoints (cached download)",
    )
    truncation: float = Field(1.0, gt=0.0, le=1.0, description="ψ: latents are ψ·truncated-normal on [-2, 2]")


class DiffusersParams(Params):
    weights: str = Field("bundled", description=WEIGHTS_HELP + ", e.g. facebook/DiT-XL-2-256")
    steps: int = Field(25, ge=1, le=1000, description="DDIM sampling steps")
    guidance_scale: float = Field(
        2.0, ge=0.0, description="classifier-free guidance (1 = off; needs a null class in the model)"
    )
    eta: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="DDIM eta (0 = deterministic given z); default: the model file's (bundled: 1), else 0",
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="weights/compute dtype")


class BundledClassifierParams(Params):
    weights: Literal["fashion-coarse", "fashion-clusters", "fashion04"] = Field(
        "fashion-coarse",
        description="fashion-coarse: top/trouser/footwear/bag of Fashion-MNIST half A; fashion-clusters: "
        "those split into 6 visual clusters each (24 classes); fashion04: 0-4",
    )


class TorchvisionClassifierParams(Params):
    weights: str = Field("DEFAULT", description="torchvision weights name (cached download when online)")

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> TorchvisionClassifierParams:
        """``torchvision:NAME`` and its weights, checked when a recipe is read (the name comes as
        context) from a catalog that imports no torch: a typo fails ``--dry-run``."""
        name = str((info.context or {}).get("name", ""))
        if name.startswith("torchvision:"):
            from ptl_models.tv_catalog import classifier_problem

            problem = classifier_problem(name, self.weights)
            if problem:
                raise ValueError(problem)
        return self


class CheckpointClassifierParams(Params):
    path: str = Field(description="a ptl classifier .safetensors file, or a .pt/.pth state dict")
    arch: str | None = Field(None, description="model plugin name (read from a ptl file when omitted)")
    num_classes: int | None = Field(None, ge=1, description="K_s (read from a ptl file when omitted)")
    image_size: int | None = Field(None, ge=1, description="input side the network expects")
    channels: int | None = Field(None, ge=1, description="input channels the network expects (1 or 3)")
    width: float | None = Field(None, gt=0, description="model width factor")
    mean: list[float] | None = Field(None, description="normalization mean per channel")
    std: list[float] | None = Field(None, description="normalization std per channel")
    class_names: list[str] | None = None
    arch_params: dict[str, Any] = Field(default_factory=dict, description="parameters of the model plugin")


# -- the train-source workflow ---------------------------------------------------------------------
class SourceData(Params):
    dataset: str = Field("fashion-mnist", description="dataset plugin name")
    classes: list[int] | None = Field(
        None, description="keep these classes (relabelled 0..K-1); all if omitted"
    )
    data_dir: str | None = None
    download: bool = False
    dataset_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("classes")
    @classmethod
    def _each_once(cls, classes: list[int] | None) -> list[int] | None:
        """A class kept twice would be two labels for one class: refused, not trained."""
        twice = sorted({c for c in classes or [] if (classes or []).count(c) > 1})
        if twice:
            raise ValueError(f"class {twice[0]} is given twice; list each class once")
        return classes


class TrainLoop(Params):
    steps: int = Field(2000, ge=1, description="optimizer steps")
    batch_size: int = Field(64, ge=1)
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    threads: int = Field(0, ge=0, description="torch CPU threads (0 = torch's default)")


class BigGANTrain(Params):
    """Architecture (BigGAN config keys) and GAN training settings (hinge loss, TTUR, EMA)."""

    z_dim: int = Field(32, ge=1)
    class_embed_dim: int = Field(32, ge=1)
    channel_width: int = Field(16, ge=1)
    layers: list[tuple[bool, int, int]] = Field(
        default_factory=lambda: [(True, 8, 4), (True, 4, 2)],
        description="(upsample, in, out) channel multipliers per block",
    )
    attention_layer_position: int = Field(
        1, description="block index before which self-attention sits; -1 = none"
    )
    bottom_width: int = Field(7, ge=1)
    d_channels: list[int] = Field(default_factory=lambda: [16, 32, 64])
    d_downsample: list[bool] = Field(default_factory=lambda: [True, True, False])
    lr_g: float = Field(1e-4, gt=0)
    lr_d: float = Field(4e-4, gt=0)
    betas: tuple[float, float] = (0.0, 0.999)
    d_steps: int = Field(1, ge=1, description="discriminator steps per generator step")
    ema_decay: float = Field(0.999, ge=0, lt=1)
    ema_start: int = Field(200, ge=0, description="step from which the EMA generator averages")
    standing_batches: int = Field(4, ge=1, description="batches per truncation row for standing statistics")
    standing_batch_size: int = Field(128, ge=2, description="batch size of the standing-statistics passes")
    truncation: float = Field(1.0, gt=0, le=1, description="ψ used for the final quality measurement")

    @model_validator(mode="after")
    def _networks(self) -> BigGANTrain:
        """What building G and D would trip over (after the data has loaded), or silently ignore."""
        if any(m < 1 for _, m_in, m_out in self.layers for m in (m_in, m_out)):
            raise ValueError(f"layers {self.layers}: channel multipliers are 1 or more")
        if not -1 <= self.attention_layer_position <= len(self.layers):
            raise ValueError(
                f"attention_layer_position {self.attention_layer_position} is not a block index "
                f"0..{len(self.layers) - 1} ({len(self.layers)} or -1: no attention)"
            )
        if not self.d_channels or len(self.d_channels) != len(self.d_downsample):
            raise ValueError(
                f"d_channels {self.d_channels} and d_downsample {self.d_downsample} need one entry "
                "each per discriminator block"
            )
        if min(self.d_channels) < 1:
            raise ValueError(f"d_channels {self.d_channels}: channel counts are 1 or more")
        return self


class DDPMTrain(Params):
    """A class-conditional diffusers UNet2DModel with a null class for classifier-free guidance."""

    block_out_channels: list[int] = Field(default_factory=lambda: [32, 64])
    down_block_types: list[Literal["DownBlock2D", "AttnDownBlock2D"]] = Field(
        default_factory=lambda: ["DownBlock2D", "AttnDownBlock2D"],
        description="one per entry of block_out_channels (the up path mirrors them)",
    )
    layers_per_block: int = Field(1, ge=1)
    norm_num_groups: int = Field(8, ge=1, description="GroupNorm groups; divides every block_out_channels")
    patch: int = Field(2, ge=1, description="pixel-unshuffle factor: the UNet sees H/p × W/p × C·p² (speed)")
    num_train_timesteps: int = Field(1000, ge=1)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    class_dropout: float = Field(0.1, ge=0, lt=1, description="label dropout to the null class (for CFG)")
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(200, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    sample_steps: int = Field(25, ge=1, description="DDIM steps for the final quality measurement")
    guidance_scale: float = Field(2.0, ge=0)
    sample_eta: float = Field(
        1.0, ge=0, le=1, description="DDIM eta recorded in the model file as its sampling default"
    )

    @model_validator(mode="after")
    def _unet(self) -> DDPMTrain:
        """What diffusers would refuse when the UNet is built (after the data has loaded)."""
        if not self.block_out_channels or len(self.block_out_channels) != len(self.down_block_types):
            raise ValueError(
                f"block_out_channels {self.block_out_channels} and down_block_types "
                f"{self.down_block_types} need one entry each per UNet level"
            )
        uneven = [c for c in self.block_out_channels if c < 1 or c % self.norm_num_groups]
        if uneven:
            raise ValueError(
                f"block_out_channels {uneven[0]} is not a positive multiple of norm_num_groups "
                f"{self.norm_num_groups}"
            )
        return self


class ClassifierTrain(Params):
    arch: str = Field("conv4", description="model plugin")
    width: float = Field(0.5, gt=0, description="width factor of the model")
    arch_params: dict[str, Any] = Field(default_factory=dict)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    augment: bool = Field(True, description="random flip + pad-crop")


class EvalSettings(Params):
    classifier: str = Field(
        "bundled", description="source classifier that scores generated samples; 'none' skips"
    )
    classifier_params: dict[str, Any] = Field(default_factory=dict)
    samples_per_class: int = Field(100, ge=1)


class TrainSourceRecipe(RecipeBase):
    kind: Literal["train-source"] = "train-source"
    model: Literal["biggan", "ddpm", "classifier"] = Field(description="what to train")
    data: SourceData = SourceData()
    train: TrainLoop = TrainLoop()
    biggan: BigGANTrain = BigGANTrain()
    ddpm: DDPMTrain = DDPMTrain()
    classifier: ClassifierTrain = ClassifierTrain()
    eval: EvalSettings = EvalSettings()
