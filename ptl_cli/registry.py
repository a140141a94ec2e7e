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

from ptl_cli.contracts import (
    ensure_no_reserved_params,
    ensure_satisfies,
    factory_call_problem,
    optional_arguments,
)
from ptl_cli.errors import UserError, did_you_mean
from ptl_cli.kinds import KINDS  # re-exported: ``registry.KINDS`` is the same table

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
                f"{KINDS[self.kind].label} {self.name!r} from plugin {self.plugin!r} cannot be "
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
                    f"{where or self.name}: {KINDS[self.kind].label} {self.name!r} takes no "
                    f"parameters, got {keys}"
                )
            return {}
        context = {"name": self.name, **(context or {})}
        checked = validate_model(self.params, values, where or self.name, context=context, prefix=prefix)
        return checked.model_dump()

    def facts(self, values: dict[str, Any] | None = None, where: str = "") -> Any | None:
        """What is known about the component without building it, or None.

        A plugin registers ``facts="module:function"``; ``function(name, params)`` gets the
        validated parameters and returns an object with the attributes its kind's plans read
        (``num_classes``; a dataset's also ``channels`` and ``image_size``), or None when they
        depend on files. Plans (``--dry-run``, and every new run before it trains) compare these,
        so a mismatch fails before anything loads."""
        ref = self.meta.get("facts")
        if not isinstance(ref, str) or ":" not in ref:
            return None
        module, _, attr = ref.partition(":")
        checked = self.validate_params(values, where or self.name)
        return getattr(importlib.import_module(module), attr)(self.name, checked)

    def build(
        self,
        *args: Any,
        params: dict[str, Any] | None = None,
        where: str = "",
        optional: dict[str, Any] | None = None,
        **kw: Any,
    ):
        """Build the component the one way ptl does, and check the result.

        ``params`` are validated (defaults filled in) and passed as keyword arguments, after the
        positional ``args`` of the kind's factory call (``KINDS[kind].factory_call``) and ``kw``;
        of ``optional``, only the arguments the kind passes when the factory accepts them
        (``KINDS[kind].optional_arguments``: an SSL algorithm's set sizes) and that it does accept.
        A factory that cannot take the call, or a result without the members its kind's protocol
        requires, is refused with a one-line error naming the plugin. A workflow's ``params`` is
        its recipe schema, not factory arguments: its factory is called with none.
        """
        entry = KINDS[self.kind]
        what = f"{entry.label} {self.name!r} from plugin {self.plugin!r}"
        checked: dict[str, Any] = {}
        if entry.params_to_factory:
            if self.params is not None:
                ensure_no_reserved_params(self.kind, self.params.model_fields, where or what)
            checked = self.validate_params(params, where)
        if self.pattern:
            kw["name"] = self.name
        factory = self.load_factory()
        call = FactoryCall(
            self.kind,
            factory,
            args,
            {**optional_arguments(self.kind, "factory", factory, optional or {}), **kw, **checked},
        )
        problem = call.problem()
        if problem:
            raise UserError(f"{what}: {problem}")
        return ensure_satisfies(self.kind, call(), what)


@dataclass(frozen=True)
class FactoryCall:
    """One call of a component's factory, as ptl makes it, that can be checked before it is made.

    :meth:`ComponentSpec.build` makes it for runs and commands; :mod:`ptl_cli.testing` makes the
    same call in a plugin's tests and reports what is wrong as a failed assertion instead.
    """

    kind: str
    factory: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def problem(self) -> str | None:
        """Why the call would not bind (see :func:`ptl_cli.contracts.factory_call_problem`)."""
        return factory_call_problem(self.kind, self.factory, self.args, self.kwargs)

    def __call__(self) -> Any:
        return self.factory(*self.args, **self.kwargs)


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
        label = KINDS[self._registry.kind].label
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
        label = KINDS[self.kind].label
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
        return KINDS[self.kind].label

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
        names = [s.name for s in self._specs.values()]
        hint = did_you_mean(name, names + list(self._aliases))  # an alias may be the close match
        if not hint.startswith("did you mean"):
            hint = did_you_mean(name, names)  # the list names each component once, not its aliases
        raise UserError(f"unknown {self.label} {name!r}; {hint}")

    def filter(self, pattern: str) -> list[ComponentSpec]:
        """Specs whose names match a shell-style wildcard (``ptl list models 'conv*'``)."""
        return [s for s in self if fnmatch.fnmatchcase(s.name, pattern)]
