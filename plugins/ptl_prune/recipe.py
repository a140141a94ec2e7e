"""The ``prune`` recipe schema: what a run prunes, on which data, with which schedule.

Validated strictly when a recipe is resolved (before anything heavy is loaded), so a typo in a
pruner, model or dataset parameter is reported by ``--dry-run`` with the file it came from.
Components are written as every recipe writes them: ``name`` + ``params`` (``[pruner] name`` and
``[pruner.params]``, validated by the pruner's own schema). The spelling before it (``[pruner]
method`` with the parameters flat next to it) still reads, with a deprecation note.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ptl_cli.errors import UserError
from ptl_cli.recipes import RecipeBase
from ptl_cli.schema import Params


def _lookup(
    kind: str,
    name: str,
    params: dict[str, Any],
    where: str,
    context: dict[str, Any] | None = None,
    prefix: str = "",
) -> tuple[str, dict[str, Any]]:
    """Canonical component name and its validated parameters; errors become pydantic errors that
    name the full recipe key (``prefix`` + the parameter: ``pruner.params.sparsty``)."""
    from ptl_cli import plugins

    try:
        spec = plugins.get(kind, name)
        return spec.name, spec.validate_params(params, where, context, prefix=prefix)
    except UserError as exc:
        raise ValueError(str(exc)) from None


def declared_lr(method: str) -> float | None:
    """The learning rate a pruner's schema declares (``default_lr``, a ``ClassVar``), if any."""
    from ptl_cli import plugins

    try:
        schema = plugins.get("pruners", method).params
    except UserError:
        return None  # the pruner section reports the unknown name
    value = getattr(schema, "default_lr", None) if schema is not None else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class PrunerSection(Params):
    """The pruner: a pruner plugin and its own parameters."""

    name: str = Field("iterand", description="a pruner plugin name: iterand, edge-popup, sgd, ...")
    params: dict[str, Any] = Field(default_factory=dict, description="the pruner's own parameters")

    @model_validator(mode="after")
    def _known(self) -> PrunerSection:
        where = f"pruner {self.name}"
        self.name, self.params = _lookup("pruners", self.name, self.params, where, prefix="pruner.params")
        return self


class ModelSection(Params):
    name: str = Field("conv6", description="a model plugin name: conv6, resnet18, torchvision:resnet50, ...")
    width: float = Field(1.0, gt=0.0, description="width factor (scales the channels)")
    params: dict[str, Any] = Field(default_factory=dict, description="the model's own parameters")

    @model_validator(mode="after")
    def _known(self) -> ModelSection:
        where, width = f"model {self.name}", {"width": self.width}  # torchvision:* has no width factor
        self.name, self.params = _lookup("models", self.name, self.params, where, width, "model.params")
        return self


class DataSection(Params):
    dataset: str = Field("cifar10", description="a dataset plugin name")
    params: dict[str, Any] = Field(default_factory=dict, description="the dataset's own parameters")
    data_dir: str | None = Field(None, description="where the dataset is (default: ptl's data directory)")
    download: bool = Field(False, description="download the dataset if missing (needs internet)")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of the train split held out")
    split_seed: int = Field(0, description="seed of the train/validation split (fixed across run seeds)")
    train_limit: int = Field(0, ge=0, description="use only this many training images (0 = all)")
    test_limit: int = Field(0, ge=0, description="evaluate on only this many test images (0 = all)")
    eval_batch_size: int = Field(512, ge=1)

    @field_validator("train_limit")
    @classmethod
    def _batchable(cls, value: int) -> int:
        if value == 1:  # the lone image would be dropped: a batch of one breaks BatchNorm
            raise ValueError("1 training image makes no batch; use 0 (all) or 2 or more")
        return value

    @model_validator(mode="after")
    def _known(self) -> DataSection:
        where = f"dataset {self.dataset}"
        self.dataset, self.params = _lookup(
            "datasets", self.dataset, self.params, where, prefix="data.params"
        )
        return self


class AugmentSection(Params):
    """Training augmentation, batched on the device. Paper: pad 4, random-resized crop, flip."""

    pad: int = Field(4, ge=0, description="zero padding before the crop")
    crop: Literal["random-resized", "random", "none"] = Field(
        "random-resized", description="random-resized: RandomResizedCrop back to size; random: pad-crop"
    )
    crop_scale: tuple[float, float] = Field((0.08, 1.0), description="area range of random-resized crops")
    flip: bool = Field(True, description="random horizontal flip")

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < value[0] <= value[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(value)}")
        return value


class TrainSection(Params):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=2, description="global batch (split across data-parallel ranks)")
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0.0, description="on what is trained (the scores, for edge-popup)")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning rate per epoch")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs before the cosine")
    tail_epochs: int = Field(0, ge=0, description="final epochs at tail_lr after the cosine (ImageNet)")
    tail_lr: float = Field(1e-5, ge=0.0)
    checkpoint_every: int = Field(500, ge=0, description="steps between checkpoints (0: epoch ends only)")
    log_every: int = Field(50, ge=1, description="steps between training-metric records")
    stop_after_steps: int = Field(
        0, ge=0, description="stop as if interrupted after this many steps (0: never); for tests and CI"
    )

    @model_validator(mode="after")
    def _phases(self) -> TrainSection:
        if self.warmup_epochs + self.tail_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) + tail_epochs ({self.tail_epochs}) must be "
                f"fewer than epochs ({self.epochs})"
            )
        return self


class PruneRecipe(RecipeBase):
    kind: str = "prune"
    # default factories: sections validate (and look up plugins) when a recipe is built, not at import
    pruner: PrunerSection = Field(default_factory=PrunerSection)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)
    train: TrainSection = Field(default_factory=TrainSection)

    #: What the spelling before ``name`` + ``params`` looks like, for the deprecation note.
    OLD_PRUNER: ClassVar[str] = (
        "`[pruner] method` and pruner parameters flat in `[pruner]` are read as `[pruner] name` and "
        "`[pruner.params]`; write them so (docs/prune.md#recipes)"
    )

    @classmethod
    def respelled(cls, path: tuple[str, ...]) -> tuple[tuple[str, ...], str] | None:
        if len(path) == 2 and path[0] == "pruner" and path[1] not in ("name", "params"):
            new = ("pruner", "name") if path[1] == "method" else ("pruner", "params", path[1])
            return new, cls.OLD_PRUNER
        return None

    @model_validator(mode="before")
    @classmethod
    def _pruner_lr(cls, data: Any) -> Any:
        """Without a ``train.lr`` in the recipe, the pruner's own declared ``default_lr`` (its
        schema's), never another method's: ptl's generic default applies only when it has none."""
        if not isinstance(data, dict):
            return data
        train = data.get("train")
        if isinstance(train, dict) and "lr" in train:
            return data
        pruner = data.get("pruner")
        # this may run before or after the respelling: either spelling of the name
        name = pruner.get("name", pruner.get("method", "iterand")) if isinstance(pruner, dict) else "iterand"
        lr = declared_lr(name) if isinstance(name, str) else None
        if lr is None:
            return data
        return {**data, "train": {**(train if isinstance(train, dict) else {}), "lr": lr}}

    @property
    def method(self) -> str:
        return self.pruner.name

    @property
    def pruner_params(self) -> dict[str, Any]:
        return self.pruner.params
