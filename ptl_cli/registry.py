"""Component registries: what plugins register, and name lookups with helpful errors.

A spec records a name, a one-line description, a parameter schema (a pydantic model) and a
factory. Factories may be given as ``"module:attr"`` strings so that registering costs nothing:
the module is imported only when the component is built.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ptl_cli.errors import UserError, did_you_mean

#: Component kinds, each filled by one hook: kind -> (hook name, human label).
KINDS: dict[str, tuple[str, str]] = {
    "models": ("ptl_register_models", "model"),
    "datasets": ("ptl_register_datasets", "dataset"),
    "pruners": ("ptl_register_pruners", "pruner"),
    "ssl": ("ptl_register_ssl_algorithms", "SSL algorithm"),
    "generators": ("ptl_register_generators", "generator"),
    "classifiers": ("ptl_register_classifiers", "source classifier"),
    "workflows": ("ptl_register_workflows", "workflow"),
    "loggers": ("ptl_register_loggers", "logger"),
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]*(:\*)?$")


class SpecError(ValueError):
    """A plugin registered something malformed; the message names the plugin."""


@dataclass(frozen=True)
class ComponentSpec:
    """One registered component.

    ``name`` may end in ``:*`` (e.g. ``torchvision:*``): the spec then serves every name with
    that prefix, and its factory receives the full requested name as ``name=``.
    """

    kind: str
    name: str
    factory: Callable[..., Any] | str
    description: str = ""
    params: type | None = None
    aliases: tuple[str, ...] = ()
    plugin: str = "?"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_pattern(self) -> bool:
        return self.name.endswith(":*")

    @property
    def pattern(self) -> str | None:
        """For a spec resolved through a ``prefix:*`` pattern: that pattern."""
        return self.meta.get("pattern")

    def load_factory(self) -> Callable[..., Any]:
        """Import the factory if it was registered as a ``module:attr`` string."""
        if callable(self.factory):
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise UserError(
                f"{KINDS[self.kind][1]} {self.name!r} from plugin {self.plugin!r} cannot be "
                f"loaded ({self.factory}): {exc}"
            ) from exc

    def validate_params(
        self,
        values: dict[str, Any] | None,
        where: str = "",
        context: dict[str, Any] | None = None,
        prefix: str = "",
    ) -> dict[str, Any]:
        """Check ``values`` against the parameter schema; return them with defaults filled in.

        The schema's validators get ``info.context``: ``name``, the name asked for (for a
        ``prefix:*`` spec the full one, so ``torchvision:resnet5`` can be refused here, before
        anything is built), plus what the caller passes in ``context`` (a model's ``width``).
        ``prefix`` is where the parameters sit in a recipe (``pruner``, ``model.params``): errors
        then name the full key (``pruner.sparsty``).
        """
        from ptl_cli.schema import validate_model

        values = dict(values or {})
        if self.params is None:
            if values:
                keys = ", ".join(sorted(values))
                raise UserError(
                    f"{where or self.name}: {KINDS[self.kind][1]} {self.name!r} takes no "
                    f"parameters, got {keys}"
                )
            return {}
        context = {"name": self.name, **(context or {})}
        checked = validate_model(self.params, values, where or self.name, context=context, prefix=prefix)
        return checked.model_dump()

    def build(self, *args: Any, params: dict[str, Any] | None = None, where: str = "", **kw: Any):
        """Validate ``params``, call the factory with them (plus positional/keyword args), and
        check that the result has the members its kind's protocol requires (naming the plugin)."""
        from ptl_cli.contracts import ensure_factory_accepts, ensure_satisfies

        checked = self.validate_params(params, where)
        if self.pattern:
            kw["name"] = self.name
        what = f"{KINDS[self.kind][1]} {self.name!r} from plugin {self.plugin!r}"
        factory = self.load_factory()
        ensure_factory_accepts(self.kind, factory, args, {**kw, **checked}, what)
        return ensure_satisfies(self.kind, factory(*args, **kw, **checked), what)


class Register:
    """The ``register`` callable a hook receives, bound to one kind and one plugin.

    ``register(name, factory, description="...", params=Schema, aliases=(...), **meta)``
    """

    def __init__(self, registry: Registry, plugin: str) -> None:
        self._registry = registry
        self._plugin = plugin

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any] | str,
        description: str = "",
        params: type | None = None,
        aliases: tuple[str, ...] | list[str] = (),
        **meta: Any,
    ) -> None:
        plugin = self._plugin
        label = KINDS[self._registry.kind][1]
        if not isinstance(name, str) or not _NAME.match(name):
            raise SpecError(
                f"plugin {plugin!r} registered {label} name {name!r}: names are lower-case "
                "letters, digits, '-', '_', '.', optionally ending in ':*'"
            )
        if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
            raise SpecError(
                f"plugin {plugin!r} registered {label} {name!r} with factory {factory!r}: "
                "give a callable or a 'module:attr' string"
            )
        if params is not None and not _is_pydantic_model(params):
            raise SpecError(
                f"plugin {plugin!r} registered {label} {name!r} with params={params!r}: "
                "the parameter schema must be a pydantic BaseModel subclass"
            )
        spec = ComponentSpec(
            kind=self._registry.kind,
            name=name,
            factory=factory,
            description=description.strip().splitlines()[0] if description else "",
            params=params,
            aliases=tuple(aliases),
            plugin=plugin,
            meta=dict(meta),
        )
        self._registry.add(spec)


def _is_pydantic_model(obj: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(obj, type) and issubclass(obj, BaseModel)


@dataclass
class Conflict:
    """Two plugins registered the same name; ``winner`` is what the bare name resolves to."""

    kind: str
    name: str
    winner: str
    loser: str

    def message(self) -> str:
        label = KINDS[self.kind][1]
        return (
            f"{label} {self.name!r} is registered by plugins {self.winner!r} and {self.loser!r}; "
            f"{self.name!r} means {self.winner!r}'s, write '{self.loser}/{self.name}' for the other"
        )


class Registry:
    """All specs of one kind. Built-in plugins lose name clashes to third-party ones."""

    def __init__(self, kind: str, builtin_plugins: frozenset[str] = frozenset()) -> None:
        self.kind = kind
        self._specs: dict[str, ComponentSpec] = {}
        self._qualified: dict[str, ComponentSpec] = {}
        self._aliases: dict[str, str] = {}
        self._builtin = builtin_plugins
        self.conflicts: list[Conflict] = []

    @property
    def label(self) -> str:
        return KINDS[self.kind][1]

    def add(self, spec: ComponentSpec) -> None:
        self._qualified[f"{spec.plugin}/{spec.name}"] = spec
        old = self._specs.get(spec.name)
        if old is not None and old.plugin != spec.plugin:
            # An installed plugin may deliberately replace a built-in; between two third-party
            # plugins the first loaded (alphabetical entry-point order) keeps the name.
            new_wins = old.plugin in self._builtin and spec.plugin not in self._builtin
            winner, loser = (spec, old) if new_wins else (old, spec)
            self.conflicts.append(Conflict(self.kind, spec.name, winner.plugin, loser.plugin))
            self._specs[spec.name] = winner
        else:
            self._specs[spec.name] = spec
        for alias in spec.aliases:
            self._aliases.setdefault(alias, spec.name)

    def __iter__(self) -> Iterator[ComponentSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def get(self, name: str) -> ComponentSpec:
        """Look up ``name`` (exact, alias, ``plugin/name``, or a ``prefix:*`` pattern)."""
        if name in self._specs:
            return self._specs[name]
        if name in self._aliases:
            return self._specs[self._aliases[name]]
        if name in self._qualified:
            return self._qualified[name]
        for spec in self._specs.values():
            if spec.is_pattern and fnmatch.fnmatchcase(name, spec.name) and name != spec.name:
                return replace(spec, name=name, meta={**spec.meta, "pattern": spec.name})
        known = [s.name for s in self._specs.values()] + list(self._aliases)
        raise UserError(f"unknown {self.label} {name!r}; {did_you_mean(name, known)}")

    def filter(self, pattern: str) -> list[ComponentSpec]:
        """Specs whose names match a shell-style wildcard (``ptl list models 'conv*'``)."""
        return [s for s in self if fnmatch.fnmatchcase(s.name, pattern)]
