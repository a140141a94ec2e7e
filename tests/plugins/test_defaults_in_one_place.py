"""A built-in component's defaults are its parameter schema's: a factory that also writes a default
in its signature (for direct Python use) writes the same value, or ``None`` for "the schema's"
(the mutable-default idiom), so the schema stays the one place a default is decided (runs,
``ptl list``, ``--dry-run`` and the docs read it)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from ptl_cli import plugins
from ptl_cli.kinds import KINDS

BUILTIN = Path(__file__).resolve().parents[2] / "plugins"


def _components():
    """Every built-in component (a factory defined under ``plugins/``) that has a schema."""
    for kind, entry in KINDS.items():
        if not entry.params_to_factory:
            continue
        for spec in plugins.manager().registry(kind):
            if spec.params is None or spec.is_pattern:
                continue
            source = inspect.getsourcefile(spec.load_factory())
            if source and Path(source).resolve().is_relative_to(BUILTIN):
                yield pytest.param(kind, spec.name, id=f"{kind}:{spec.name}")


def both_defaults(kind: str, name: str) -> dict[str, tuple[object, object]]:
    """``field: (signature default, schema default)`` for each field both give a value for."""
    spec = plugins.get(kind, name)
    factory = spec.load_factory()
    signature = inspect.signature(factory.__init__ if inspect.isclass(factory) else factory)
    pairs = {}
    for field, info in spec.params.model_fields.items():
        parameter = signature.parameters.get(field)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            continue
        if info.is_required():
            continue
        default = info.get_default(call_default_factory=True)
        if parameter.default is None and default is not None:
            continue  # None standing for the schema's value
        pairs[field] = (parameter.default, default)
    return pairs


@pytest.mark.parametrize(("kind", "name"), list(_components()))
def test_a_signature_default_is_the_schemas(kind, name):
    for field, (in_signature, in_schema) in both_defaults(kind, name).items():
        assert in_signature == in_schema, (
            f"{kind} {name}: {field} = {in_signature!r} in the signature, {in_schema!r} in the schema"
        )


def test_the_comparison_sees_the_defaults_both_write():
    """FixMatch writes τ, λ_u and T in both places: all three are compared (the check is live)."""
    assert set(both_defaults("ssl", "fixmatch")) == {"threshold", "lambda_u", "temperature"}
