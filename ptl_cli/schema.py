"""Parameter and recipe schemas: strict pydantic models with one-line error messages."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ptl_cli.errors import UserError, did_you_mean

M = TypeVar("M", bound=BaseModel)


class Params(BaseModel):
    """Base class for component parameter schemas: unknown keys are errors, not ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True, protected_namespaces=())


def describe_validation_error(
    model: type[BaseModel],
    exc: ValidationError,
    where: str,
    sources: dict[str, str] | None = None,
    prefix: str = "",
) -> str:
    """Turn a pydantic error into 'where: key `a.b`: what is wrong (how to fix)'.

    ``sources`` maps dotted keys to where their values came from (``--set train.lr=x``): when
    every reported error lies under one of them, the message names that source, not ``where``.
    ``prefix`` is where ``model`` sits in a larger recipe (``pruner``): keys are named in full
    (``pruner.sparsty``), so a schema nested in a recipe section blames the key actually wrong.
    """
    parts, blamed = [], set()
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in (*([prefix] if prefix else []), *err["loc"]))
        source = _source_of(loc, sources or {})
        if err["type"] in ("value_error", "assertion_error") and sources:
            # a nested schema's message names the full key that is wrong: blame where it was set
            named = [key for key in sources if f"`{key}`" in err["msg"]]
            source = sources[named[0]] if named else source
        blamed.add(source)
        if err["type"] == "extra_forbidden":
            parent = _submodel(model, err["loc"][:-1])
            known = list(parent.model_fields) if parent else []
            hint = did_you_mean(str(err["loc"][-1]), known)
            parts.append(f"unknown key `{loc}` ({hint})")
        elif err["type"] == "missing":
            parts.append(f"missing key `{loc}`")
        elif err["type"] in ("value_error", "assertion_error"):
            # a schema's own validator (e.g. "unknown model 'x'; did you mean ..."): its words only
            message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            names_a_key_below = f"`{loc}." in message
            parts.append(f"key `{loc}`: {message}" if loc and not names_a_key_below else message)
        else:
            got = err.get("input")
            got_text = f" (got {got!r})" if not isinstance(got, dict) else ""
            parts.append(f"key `{loc}`: {err['msg']}{got_text}")
    more = f" (+{len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    source = blamed.pop() if len(blamed) == 1 else None
    return f"{source or where}: " + "; ".join(parts) + more


def _source_of(loc: str, sources: dict[str, str]) -> str | None:
    """The source of the value at ``loc``: a key set there, or above or below it."""
    for key, source in sources.items():
        if loc == key or key.startswith(f"{loc}.") or loc.startswith(f"{key}."):
            return source
    return None


def _submodel(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = model
    for key in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or key not in fields:
            return None
        current = fields[key].annotation
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def validate_model(
    model: type[M],
    values: dict[str, Any],
    where: str,
    sources: dict[str, str] | None = None,
    context: dict[str, Any] | None = None,
    prefix: str = "",
) -> M:
    """Validate ``values`` against ``model`` or raise a one-line :class:`UserError`.

    ``context`` reaches the model's validators as ``info.context`` (see
    :meth:`ptl_cli.registry.ComponentSpec.validate_params`); ``prefix`` names keys in full
    (see :func:`describe_validation_error`).
    """
    try:
        return model.model_validate(values, context=context)
    except ValidationError as exc:
        raise UserError(describe_validation_error(model, exc, where, sources, prefix)) from None


def schema_fields(model: type[BaseModel] | None) -> list[dict[str, Any]]:
    """Describe a schema's fields for ``ptl list``: name, type, default, description."""
    if model is None:
        return []
    rows = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        rows.append(
            {
                "name": name,
                "type": type_name,
                "default": default,
                "required": info.is_required(),
                "description": info.description or "",
            }
        )
    return rows
