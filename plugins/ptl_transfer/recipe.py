"""The ``transfer`` recipe schema (pydantic only, so that ``ptl --help`` never imports torch).

A recipe names the source models (generator and classifier), the target data and architecture,
the SSL algorithm and the schedules of the stages. Component parameters (``params`` tables) are
validated against the plugin's own schema when the run is planned, not here: a third-party
generator brings its own parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ptl_cli.recipes import RecipeBase
from ptl_cli.schema import Params
from ptl_transfer.stages import STAGES


class Component(Params):
    """A plugin component by name, with the parameters its own schema accepts."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Source(Params):
    """The source side: what replaces the unavailable source dataset."""

    generator: Component = Component(name="biggan", params={"weights": "bundled"})
    classifier: Component = Component(name="bundled")


class Target(Params):
    """The small labeled target dataset."""

    dataset: str = Field("fashion-pack", description="dataset plugin name (imagefolder for your own)")
    params: dict[str, Any] = Field(default_factory=dict, description="the dataset plugin's parameters")
    classes: list[int] = Field(
        default_factory=list, description="keep only these classes, relabelled 0..n-1 (empty: all)"
    )
    labels_per_class: int = Field(10, ge=0, description="labeled training images per class (0: all)")
    split_seed: int = Field(0, description="seed of the labeled subset (independent of `seed`)")
    train_split: str = "train"
    test_split: str = "test"
    data_dir: str | None = Field(None, description="--data-dir; default $PTL_DATA_DIR or the cache")
    download: bool = False

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        """A negative or repeated class is a typo; caught here, before any data is read (whether
        each class exists depends on the dataset and is checked when it is loaded)."""
        if any(c < 0 for c in value):
            raise ValueError(f"class indices are 0 or more, not {min(value)}")
        twice = [c for i, c in enumerate(value) if c in value[:i]]
        if twice:
            raise ValueError(f"class {twice[0]} is listed twice; name each target class once")
        return value


class Model(Params):
    """The target architecture: any model plugin, e.g. ``resnet18`` or ``torchvision:mobilenet_v3_large``."""

    name: str = "resnet18"
    width: float = Field(1.0, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def arch(self) -> str:
        """The model plugin's name, as ``[model] arch`` spelled it before ``name``."""
        return self.name


class Optim(Params):
    """SGD with Nesterov momentum, no weight decay on BatchNorm/bias, cosine ``lr·cos(7πt/16T)``."""

    steps: int = Field(500, ge=1, description="optimizer steps of the stage")
    batch_size: int = Field(
        32, ge=1, le=2**16, description="labeled batch size B (at most 65536: a typo, not a batch, beyond)"
    )
    lr: float = Field(0.03, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    cosine_cycles: float = Field(7 / 16, ge=0, description="the schedule is lr·cos(π·cycles·t/T)")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of weights used for evaluation")
    log_every: int = Field(20, ge=1)
    eval_every: int = Field(0, ge=0, description="test accuracy every N steps (0: at the end only)")
    checkpoint_every: int = Field(100, ge=1)


class PoolSpec(Params):
    """Where and how pseudo samples are stored (shared by the PP and PCS pools)."""

    dir: str | None = Field(None, description="pool root; default <cache>/pools")
    shard_size: int = Field(1000, ge=1, description="images per shard file")
    gen_batch_size: int = Field(250, ge=1, description="images per generator call")

    def root(self) -> Path:
        """``dir`` when given, else ``<cache>/pools`` (pools are shared by every run)."""
        from ptl_cli.data.locations import cache_dir

        return Path(self.dir).expanduser() if self.dir else cache_dir() / "pools"


class PP(Params):
    """Pseudo pre-training: train the target architecture on generated, source-labeled samples."""

    mode: Literal["pool", "on-the-fly"] = "pool"
    samples: int = Field(10000, ge=1, description="pool size (pool mode)")
    seed: int = Field(0, description="pool seed: same generator + seed = same pool, reused")
    train: Optim = Optim(steps=1000, batch_size=128, lr=0.1, ema_decay=0.0)

    @model_validator(mode="after")
    def _batch_fits_pool(self) -> PP:
        """A batch larger than the pool it is drawn from is a typo (known before any sample exists)."""
        if self.mode == "pool" and self.train.batch_size > self.samples:
            raise ValueError(
                f"`pp.train.batch_size` {self.train.batch_size} is larger than the pool "
                f"(`pp.samples` {self.samples})"
            )
        return self


class PCS(Params):
    """Pseudo conditional sampling: M generated samples per labeled target image."""

    per_image: int = Field(32, ge=1, description="M, pseudo samples per labeled target image")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the source classifier")
    top_k: int = Field(0, ge=0, description="keep the k largest probabilities (0: all)")
    seed: int = Field(0, description="pool seed")


class SSL(Params):
    """The SSL algorithm of the P-SSL stages and the unlabeled/labeled batch ratio μ."""

    name: str = "fixmatch"
    params: dict[str, Any] = Field(default_factory=dict)
    mu: int = Field(7, ge=1, description="unlabeled batch = μ·B pseudo samples")
    unlabeled: Literal["pseudo", "real"] = Field(
        "pseudo",
        description="pseudo: the PCS pool (the method); real: the target's own unlabeled training images "
        "instead, a control that shows what P-SSL would reach with a perfect generator",
    )
    strong_ops: int = Field(
        2,
        ge=0,
        le=16,
        description="RandAugment ops per strong view (2: FixMatch's paper and ptl's recorded numbers; "
        "USB's CIFAR, SVHN and STL-10 use 3)",
    )
    strong_magnitude: str | float = Field(
        "random",
        description="RandAugment magnitude policy: random (each op's magnitude uniform over its range, "
        "FixMatch's and USB's) or a fixed strength in [0, 1] (RandAugment's original policy)",
    )

    @field_validator("strong_magnitude", mode="before")
    @classmethod
    def _magnitude(cls, value: Any) -> Any:
        """One message for both spellings (pydantic's would list each member of the union); the
        same rule as ``ptl_cli.data.randaugment.check_policy``, which needs torch to import."""
        if value == "random":
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        raise ValueError(f"strong_magnitude is 'random' or a strength between 0 and 1, not {value!r}")


class KD(Params):
    """Knowledge-distillation baseline through an auxiliary K_s-way head on target images."""

    mode: Literal["kl", "logits"] = Field("kl", description="soft-target KL (T²-scaled) or logit MSE")
    temperature: float = Field(4.0, gt=0)
    weight: float = Field(1.0, ge=0)


class TransferRecipe(RecipeBase):
    """``kind = "transfer"``: every key of a transfer recipe."""

    kind: Literal["transfer"] = "transfer"
    stages: list[str] = Field(default_factory=lambda: list(STAGES))
    source: Source = Source()
    target: Target = Target()
    model: Model = Model()
    pool: PoolSpec = PoolSpec()
    pp: PP = PP()
    pcs: PCS = PCS()
    ssl: SSL = SSL()
    kd: KD = KD()
    train: Optim = Optim()
    stage_processes: int | Literal["auto"] = Field(
        "auto",
        description="run independent stages side by side in this many processes, each with its share "
        "of the threads (same results as one process with that many threads); auto: 2 on a CPU with "
        "2 or more threads, else 1",
    )

    @classmethod
    def respelled(cls, path: tuple[str, ...]) -> tuple[tuple[str, ...], str] | None:
        if path == ("model", "arch"):
            return ("model", "name"), "`[model] arch` is read as `[model] name`; write it so"
        return None

    @field_validator("stage_processes", mode="before")
    @classmethod
    def _processes(cls, value: Any) -> Any:
        """One message for both spellings (pydantic's would list each member of the union)."""
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"stage_processes is 'auto' or a number of processes (1 or more), not {value!r}")

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}")
        if not value:
            raise ValueError(f"no stage selected; choose from {', '.join(STAGES)}")
        return [s for s in STAGES if s in value]  # canonical order, duplicates dropped
