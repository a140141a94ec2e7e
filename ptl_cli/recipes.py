"""Recipes: TOML files that name a workflow, its plugins and their parameters.

Resolution order (later wins): the recipe file (after its ``extends`` chain), command-line
flags, then ``--set key.path=value``. The result is validated strictly against the workflow's
schema and written into the run directory, so a run always records exactly what it did.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ptl_cli import respelling
from ptl_cli.errors import UserError, did_you_mean
from ptl_cli.schema import Params


class Compute(Params):
    """Where and how fast a run executes; never changes what it computes (except precision)."""

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    precision: Literal["fp32", "bf16-mixed", "fp16-mixed"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    workers: int = Field(0, ge=0, description="data-loader worker processes")
    deterministic: bool = Field(True, description="deterministic kernels (bit-exact resume)")
    cudnn_benchmark: bool | None = Field(
        None,
        description="CUDA: time convolution algorithms and keep the fastest; default: on unless "
        "deterministic (on with deterministic: faster, but a resumed run may pick other algorithms)",
    )
    malloc_tuning: bool = Field(
        True, description="CPU runs: keep freed memory for reuse (fewer page faults; same results)"
    )
    log: list[str] = Field(
        default_factory=list, description="experiment loggers: tensorboard, mlflow, wandb (ptl list loggers)"
    )


class RecipeBase(Params):
    """Keys every recipe has; workflows subclass this with their own sections."""

    kind: str = Field(description="the workflow: prune, transfer, ...")
    name: str = ""
    description: str = ""
    extends: str | None = Field(None, description="recipe this one starts from")
    seed: int = Field(0, ge=0, le=2**64 - 1, description="0..2**64-1 (what torch.manual_seed takes)")
    compute: Compute = Compute()
    sweep: dict[str, Any] | None = Field(
        None, description="`ptl sweep`: grid and seeds (ptl_cli.sweep.SweepTable); single runs ignore it"
    )

    @classmethod
    def respelled(cls, path: tuple[str, ...]) -> tuple[tuple[str, ...], str] | None:
        """Where a key this schema renamed lives now, and the one-line note saying so
        (``("pruner", "method")`` -> ``("pruner", "name")``); ``None`` for a current key.

        Old recipes, flags and ``--set`` keys keep working through it (:mod:`ptl_cli.respelling`).
        """
        return None

    @model_validator(mode="before")
    @classmethod
    def _respell(cls, data: Any) -> Any:
        """Recipes read without :func:`load_raw` (a run's own ``recipe.toml``) in today's spelling too."""
        return respelling.respell(data, cls, "recipe") if isinstance(data, dict) else data


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up: ``$PTL_RECIPE_PATH`` entries, then the bundled ones."""
    dirs = [Path(p) for p in os.environ.get("PTL_RECIPE_PATH", "").split(os.pathsep) if p]
    bundled = Path(__file__).resolve().parent.parent / "recipes"
    dirs.append(bundled)
    return [d for d in dirs if d.is_dir()]


def available() -> dict[str, Path]:
    """Recipe name -> file, earlier directories shadowing later ones."""
    found: dict[str, Path] = {}
    for directory in recipe_dirs():
        for path in sorted(directory.rglob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def find(ref: str, base: Path | None = None) -> Path:
    """A recipe path from a name (``iterand-conv6-cifar10``) or a file path.

    ``base`` is the folder of the recipe that names ``ref`` in its ``extends``: a relative file
    path there means a file beside that recipe, wherever ptl is run from.
    """
    path = Path(ref).expanduser()
    if path.suffix == ".toml" or os.sep in ref or "/" in ref:
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.is_file():
            beside = f" (beside {base})" if base is not None else ""
            raise UserError(f"recipe file {ref}{beside} not found; check the path or run `ptl recipes list`")
        return path
    names = available()
    if ref not in names:
        raise UserError(f"unknown recipe {ref!r}; {did_you_mean(ref, names)} (see `ptl recipes list`)")
    return names[ref]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"recipe {path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"recipe {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"recipe {path}: cannot be read: {exc.strerror}") from None


def load_raw(
    ref: str, _chain: tuple[Path, ...] = (), _base: Path | None = None
) -> tuple[dict[str, Any], Path]:
    """Read a recipe and merge its ``extends`` chain (the base first)."""
    path = find(ref, _base).resolve()
    if path in _chain:
        raise UserError(f"recipe {path}: `extends` forms a cycle")
    data = read_toml(path)
    base_ref = data.get("extends")
    if base_ref:
        if not isinstance(base_ref, str):
            raise UserError(f"recipe {path}: key `extends` must be a recipe name")
        base, _ = load_raw(base_ref, (*_chain, path), path.parent)
        base.pop("name", None)
        base.pop("description", None)
        schema = respelling.schema_for({"kind": base.get("kind"), **data})
        data = deep_merge(base, respelling.respell(data, schema, f"recipe {path}"))
    else:
        data = respelling.respell(data, respelling.schema_for(data), f"recipe {path}")
    data.setdefault("name", path.stem)
    return data, path


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_set(item: str) -> tuple[str, Any]:
    """``train.lr=0.1`` -> ("train.lr", 0.1); the value is read as TOML, else as a string."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key.path=value, e.g. --set train.lr=0.1")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {item!r}: the key is empty; expected key.path=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any, source: str) -> str:
    """Set ``key`` (dotted) in recipe ``data``, in today's spelling of the key; return that key."""
    schema = respelling.schema_for(data)
    key = respelling.respell_key(key, schema)
    if isinstance(value, dict):
        value = respelling.respell(value, schema, source, tuple(key.split(".")))
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"{source}: `{key}`: `{part}` is a value, not a section")
        node = child
    node[parts[-1]] = value
    return key


@dataclass
class ResolvedRecipe:
    """A validated recipe, where it came from, and its plain-data form (what gets written)."""

    model: RecipeBase
    data: dict[str, Any]
    source: str


def resolve(
    ref: str,
    schema: type[RecipeBase],
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    kind: str | None = None,
) -> ResolvedRecipe:
    """Load ``ref``, apply flag ``overrides`` and ``--set`` items, validate against ``schema``.

    With ``kind``, a recipe of another kind is refused in one line before its keys are checked
    (they would all be unknown to ``schema``).
    """
    data, path = load_raw(ref)
    found = data.get("kind")
    if kind and isinstance(found, str) and found != kind:
        raise UserError(
            f"recipe {path}: this is a `{found}` recipe; run it with `ptl {found} --recipe {ref}`"
        )
    sources: dict[str, str] = {}  # dotted key -> where its value came from, for error messages
    for key, value in (overrides or {}).items():
        if value is not None:
            sources[set_dotted(data, key, value, "command line")] = f"command-line value of `{key}`"
    for item in sets or []:
        key, value = parse_set(item)
        sources[set_dotted(data, key, value, f"--set {item}")] = f"--set {item}"
    return validate(data, schema, f"recipe {path}", sources)


def validate(
    data: dict[str, Any], schema: type[RecipeBase], where: str, sources: dict[str, str] | None = None
) -> ResolvedRecipe:
    """Validate recipe ``data`` strictly; errors name ``where`` (or the ``--set`` that caused them)."""
    from ptl_cli.schema import validate_model

    check_sections(data, schema, where, sources or {})
    model = validate_model(schema, data, where, sources)
    return ResolvedRecipe(model=model, data=model.model_dump(mode="json"), source=where)


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The schema of a section (``train: Train``, ``Train | None``), else None."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    models = [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if models and len(models) == len(members) else None


def check_sections(
    data: dict[str, Any], schema: type[BaseModel], where: str, sources: dict[str, str], prefix: str = ""
) -> None:
    """A plain value where the schema has a section (``--set train=1``) is an error, not a section
    silently reset to its defaults (a validator that fills a section would otherwise drop it)."""
    for name, field in schema.model_fields.items():
        if name not in data:
            continue
        section = _section_model(field.annotation)
        if section is None:
            continue
        key, value = f"{prefix}{name}", data[name]
        if isinstance(value, dict):
            check_sections(value, section, where, sources, f"{key}.")
        elif value is not None or type(None) not in typing_args(field.annotation):
            source = sources.get(key, where)
            example = next(iter(section.model_fields), "key")
            raise UserError(
                f"{source}: `{key}` is a section ([{key}]), not a value (got {value!r}); set its keys, "
                f"e.g. {key}.{example}=..."
            )


def typing_args(annotation: Any) -> tuple[Any, ...]:
    import typing

    return typing.get_args(annotation)


def dumps(data: dict[str, Any]) -> str:
    """Recipe data as TOML text (None values are left out: TOML has no null)."""
    import tomli_w

    return tomli_w.dumps(_drop_none(data))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
