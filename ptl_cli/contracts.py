"""The shapes of components that plugins provide.

These are :class:`typing.Protocol` classes: a plugin does not inherit from them, it only has to
provide the attributes and methods listed. Images are float tensors in ``[0, 1]`` of shape
``(B, C, H, W)`` unless said otherwise.

Two levels of checking exist. When a workflow builds a component (``spec.build(...)``),
:func:`ensure_satisfies` checks that every member is *present* and that every method accepts
the arguments ptl passes (cheap: signatures are inspected, nothing is called), and names the
plugin and the broken member otherwise. ``ptl_cli.testing.check_<kind>`` goes further in a
plugin's own test suite: output shapes, ``state_dict`` round-trips through a ``weights_only``
checkpoint, resume and determinism.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ptl_cli.errors import UserError
from ptl_cli.kinds import KINDS

if TYPE_CHECKING:  # torch is heavy; contracts must be importable without it
    import torch
    from torch import nn

    from ptl_cli.data.base import DatasetInfo


@runtime_checkable
class Generator(Protocol):
    """A conditional source generator ``G_s(z, y)``."""

    num_classes: int
    image_size: int
    channels: int
    class_names: Sequence[str]

    @property
    def id(self) -> str:
        """Identifies the weights (name + digest): pools are keyed by it."""

    def sample(
        self,
        y: torch.Tensor,
        z: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images for class indices ``y`` (shape ``(B,)``) or probability rows ``(B, K_s)``."""


@runtime_checkable
class SourceClassifier(Protocol):
    """``C_s``: a module giving ``K_s`` logits for images in [0, 1] of any size.

    It applies its own preprocessing (resize, normalization) inside ``forward``.
    """

    num_classes: int
    class_names: Sequence[str]

    @property
    def id(self) -> str: ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SSLAlgorithm(Protocol):
    """A semi-supervised loss over a labeled and an unlabeled batch.

    ``labeled_views``/``unlabeled_views`` name the augmentations the algorithm needs for each
    batch (``"weak"``, ``"strong"``, ``"none"``); the training loop supplies them as a dict of
    normalized batches. An empty ``unlabeled_views`` means "no unlabeled data" (supervised).
    ``state_dict`` goes into checkpoints loaded with ``weights_only=True``: tensors and plain
    Python data only, and everything that changes during training (EMA teachers, adaptive
    thresholds), or a resumed run will differ from an uninterrupted one.

    Algorithms with per-sample state (FlexMatch's pseudo labels) get two more things, each only
    when their signature asks for it (:data:`OPTIONAL_ARGUMENTS`): the factory is also called with
    ``num_labeled=`` and ``num_unlabeled=`` (the sizes of the labeled and the unlabeled set), and
    ``loss`` with ``unlabeled_index=``: the int64 indices, in the unlabeled set, of the samples of
    this (rank's) unlabeled batch, on the batch's device, in the batch's order; likewise
    ``labeled_index=``, the indices in the labeled set of the labeled batch (SimMatch's labeled
    memory bank).

    An algorithm that trains modules of its own on the penultimate features (a projection head)
    has an optional member ``heads(feature_dim) -> {name: nn.Module}``: the loop then trains
    :class:`ptl_cli.engine.heads.WithHeads` of the network and those heads, and
    ``model(x, with_heads=True)`` in ``loss`` gives the logits, the features and each head's
    output (docs/plugins/reference.md).
    """

    labeled_views: tuple[str, ...]
    unlabeled_views: tuple[str, ...]

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """The total loss and named scalars to log (tensors are fine: no host sync needed).

        ``step`` is the 0-based index of this optimizer step and ``total_steps`` the stage's
        length (for ramp-ups); ``model`` may be wrapped (DDP, ``torch.compile``). A ``loss`` that
        declares ``unlabeled_index`` (or ``**kwargs``) also gets the unlabeled samples' indices.
        """

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step with the same ``step`` as :meth:`loss`
        (MeanTeacher updates its teacher here)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Pruner(Protocol):
    """Turns a network into one whose weights are selected (and possibly re-drawn).

    Whatever the pruner adds to the model (scores, masks) should be parameters or buffers of
    the model, so that the model's own state dict checkpoints it; ``state_dict`` holds the rest
    (tensors and plain data only: checkpoints load with ``weights_only=True``).
    """

    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        """Wrap the prunable layers in place and return the model.

        Draw any randomness from ``seed`` (e.g. ``ptl_cli.engine.seeding.generator_for``), not
        from the global RNG: every data-parallel rank, a resumed run and an export rebuild the
        same network from it.
        """

    def trainable_parameters(self, model: nn.Module) -> Iterable[torch.nn.Parameter]:
        """What the optimizer updates: scores for edge-popup, weights for dense SGD."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step, ``step`` = optimizer steps done so far (1 after the
        first). IteRand re-draws pruned weights here; seed such draws from ``(seed, step)``."""

    def sparsity(self, model: nn.Module) -> float:
        """Fraction of prunable weights that are currently pruned (a Python float in [0, 1])."""

    def export_dense(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A plain state dict with masks applied (loads into an unwrapped model)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Workflow(Protocol):
    """A run kind (``prune``, ``transfer``): runs a validated recipe inside a run directory."""

    def plan(self, recipe: Any) -> list[tuple[str, str]]:
        """Rows (what, value) that ``--dry-run`` prints: resolved without loading anything heavy.

        Called before every new run as well, so its checks (names, impossible combinations)
        fail a real run and ``--dry-run`` with the same one-line error, before anything trains.
        """

    def run(self, ctx: Any) -> dict[str, Any]:
        """Run (or resume, when ``ctx.resuming``) and return the final metrics."""

    def results_table(self, run: Any) -> tuple[list[str], list[list[Any]]]:
        """Header and rows of the results table for a finished run."""


@runtime_checkable
class Model(Protocol):
    """A network: in practice any ``torch.nn.Module`` mapping ``(B, C, H, W)`` normalized images to
    ``(B, num_classes)`` logits. Listed as a protocol so that a factory returning something else
    (a tuple, a config) is caught when it is built, not deep inside a training loop."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...


@runtime_checkable
class ImageDataset(Protocol):
    """A labeled image dataset (see :class:`ptl_cli.data.base.ImageDataset`, the usual base class).

    Items are ``(uint8 tensor (C, H, W), int label)``; ``targets`` holds every label up front
    (int64, one per item) so that per-class splits need no pass over the images; ``info`` is a
    :class:`ptl_cli.data.base.DatasetInfo` (name, num_classes, channels, image_size, class_names,
    mean, std) that workflows use to size models and normalize batches.
    """

    info: DatasetInfo
    targets: torch.Tensor

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...


@runtime_checkable
class Logger(Protocol):
    """An experiment tracker fed by the run (rank 0 only); ``metrics.jsonl`` stays the record.

    Each method may raise: the run warns once and goes on without this logger.
    """

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        """Once at the start (and again when resuming): the resolved recipe, flattened to dotted
        keys (``train.lr``) with scalar or string values."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Every record the run logs: finite numbers named ``stage/key`` (``train/loss``), and the
        record's ``step``; stages restart their steps, so each name is its own series."""

    def log_image(self, name: str, path: str) -> None:
        """At the end: each PNG of the report (``curves``), as a file path."""

    def close(self) -> None:
        """When the run ends, however it ends (completed, interrupted, failed)."""


# Views of ``ptl_cli.kinds.KINDS`` (the one table of kinds), by the names plugins and docs use.

#: The protocol a factory of each component kind must return.
PROTOCOLS: dict[str, type] = {name: globals()[kind.protocol] for name, kind in KINDS.items()}

#: How ptl calls the factory of each kind: the documented call (``docs/plugins/reference.md``).
#: ``**params`` are the fields of the component's parameter schema, defaults filled in.
FACTORY_CALLS: dict[str, str] = {name: kind.factory_call for name, kind in KINDS.items()}

#: Keyword arguments ptl passes only to a callable whose signature accepts them (a parameter of
#: that name, or ``**kwargs``), keyed by ``(kind, "factory" or method)``. They extend a contract
#: without breaking plugins written before it: an old factory or ``loss`` is called as before.
OPTIONAL_ARGUMENTS: dict[tuple[str, str], tuple[str, ...]] = {
    (name, member): names for name, kind in KINDS.items() for member, names in kind.optional_arguments.items()
}


def accepts(function: Any, name: str) -> bool:
    """Whether ``function`` can take the keyword argument ``name`` (by name or via ``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return True
    p = parameters.get(name)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def optional_arguments(kind: str, member: str, function: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The items of ``values`` (named in :data:`OPTIONAL_ARGUMENTS` for ``(kind, member)``) that
    ``function`` accepts: what ptl adds to its call of a factory or method."""
    names = _optional(kind, member)
    return {k: v for k, v in values.items() if k in names and accepts(function, k)}


def reserved_problem(kind: str, fields: Iterable[str]) -> str | None:
    """Why a parameter schema with ``fields`` cannot be used: a field named like an argument ptl
    passes to the factory itself (``num_unlabeled``); ``None`` if there is none."""
    clash = sorted(set(fields) & set(_optional(kind, "factory")))
    if clash:
        return f"its parameter schema has a field {clash[0]!r}, a name ptl passes to the factory itself"
    return None


def ensure_no_reserved_params(kind: str, fields: Iterable[str], what: str) -> None:
    """A parameter schema may not use a name ptl passes to the factory itself (``num_unlabeled``)."""
    problem = reserved_problem(kind, fields)
    if problem:
        raise UserError(f"{what}: {problem} (docs/plugins/reference.md); rename the field")


# Dunder members a protocol may require; other private names are typing's own machinery.
_DUNDERS = ("__call__", "__len__", "__getitem__")


def protocol_members(protocol: type) -> dict[str, bool]:
    """The members ``protocol`` requires: name -> whether it must be callable (a method)."""
    members: dict[str, bool] = {}
    for base in reversed(protocol.__mro__):
        if base in (object, Protocol) or not getattr(base, "_is_protocol", False):
            continue
        for name in getattr(base, "__annotations__", {}):
            if not name.startswith("_"):
                members[name] = False
        for name, value in vars(base).items():
            if name.startswith("_") and name not in _DUNDERS:
                continue
            members[name] = inspect.isfunction(value)
    return members


def missing_members(obj: Any, protocol: type) -> list[str]:
    """What ``obj`` lacks to satisfy ``protocol``: missing names, and ``name (not callable)``.

    Members are looked up without running properties or ``__getattr__`` where possible, so the
    check costs nothing and cannot fail because a property raises.
    """
    problems = []
    for name, must_call in protocol_members(protocol).items():
        if name in _DUNDERS:  # Python looks these up on the class (never on its metaclass)
            owner = next((k for k in type(obj).__mro__ if name in vars(k)), None)
            if owner is None or vars(owner)[name] is None:
                problems.append(name)
            continue
        try:
            value = inspect.getattr_static(obj, name)
        except AttributeError:
            if not hasattr(obj, name):  # dynamic attributes (nn.Module, __getattr__) count too
                problems.append(name)
                continue
            value = getattr(obj, name)
        if must_call and not _callable_member(value):
            problems.append(f"{name} (not callable)")
    return problems


def _callable_member(value: Any) -> bool:
    return callable(value) or isinstance(value, (staticmethod, classmethod, property))


def _protocol_call(protocol: type, name: str) -> tuple[list[str], list[str]] | None:
    """How ptl calls method ``name``: required parameters go by position, optional ones by
    keyword (``sample(y, generator=g)``); ``None`` for members that are not plain methods."""
    function = vars(next(k for k in protocol.__mro__ if name in vars(k)))[name]
    if not inspect.isfunction(function):
        return None
    positional, keywords = [], []
    for p in list(inspect.signature(function).parameters.values())[1:]:  # drop self
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty and p.kind is not p.KEYWORD_ONLY:
            positional.append(p.name)
        else:
            keywords.append(p.name)
    return positional, keywords


def signature_problems(obj: Any, protocol: type) -> list[str]:
    """Methods of ``obj`` that cannot be called the way ptl calls them, e.g.
    ``prepare(model) cannot be called as prepare(model, seed)``.

    Only signatures are inspected (nothing is called, no property runs); members found through
    ``__getattr__`` and callables without a signature are not checked.
    """
    problems = []
    for name, must_call in protocol_members(protocol).items():
        call = _protocol_call(protocol, name) if must_call and name not in _DUNDERS else None
        if call is None:
            continue
        try:
            static = inspect.getattr_static(obj, name)
        except AttributeError:
            continue
        if isinstance(static, property):
            continue
        member = (
            getattr(obj, name)
            if isinstance(static, (types.FunctionType, staticmethod, classmethod))
            else static
        )
        try:
            actual = inspect.signature(member)
        except (TypeError, ValueError):  # builtins and C extensions may have none
            continue
        positional, keywords = call
        kind = next((k for k, v in PROTOCOLS.items() if v is protocol), "")
        keywords = [*keywords, *optional_arguments(kind, name, member, dict.fromkeys(_optional(kind, name)))]
        try:
            actual.bind(*positional, **dict.fromkeys(keywords))
        except TypeError:
            expected = ", ".join([*positional, *(f"{k}=..." for k in keywords)])
            problems.append(f"{name}{_plain(actual)} cannot be called as {name}({expected})")
    return problems


def _optional(kind: str, member: str) -> tuple[str, ...]:
    entry = KINDS.get(kind)
    return entry.optional_arguments.get(member, ()) if entry else ()


def _plain(signature: inspect.Signature) -> str:
    """``(model, seed)`` rather than ``(model: 'nn.Module', seed: 'int') -> 'nn.Module'``: short messages."""
    params = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=params, return_annotation=inspect.Signature.empty))


def factory_call_problem(
    kind: str, factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    """Why ``factory(*args, **kwargs)`` would fail to bind (a parameter the schema has and the
    factory lacks, a positional argument ptl passes and it does not take), as the phrase both
    the CLI and :mod:`ptl_cli.testing` report after the component's name; ``None`` if it binds."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        name = getattr(factory, "__qualname__", type(factory).__qualname__)
        call = KINDS[kind].factory_call if kind in KINDS else "factory(...)"
        return (
            f"its factory cannot be called as ptl calls it, {call} "
            f"with params {', '.join(kwargs) or 'none'}: {name}{_plain(signature)}: {exc} "
            "(every field of the parameter schema is passed as a keyword argument)"
        )
    # a near miss of an argument ptl passes only by name (num_unlabeled), unless a schema field
    misses = _argument_near_misses(factory, "its factory", _optional(kind, "factory"), set(kwargs))
    return misses[0] if misses else None


#: Members ptl looks for on a component without requiring them, by kind: name -> the positional
#: arguments ptl calls it with, or ``None`` for an attribute it reads (``docs/plugins/reference.md``).
#: They are found by ``getattr``, so :func:`optional_member_problems` checks them and their near
#: misses: a misspelt optional member would otherwise never be called, and nothing would say so.
OPTIONAL_MEMBERS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "pruners": {
        "before_forward": ("model",),
        "configure": ("steps_per_epoch",),
        "counts": ("model",),
        "sparsity_by_layer": ("model",),
        "ticket_spec": ("model",),
        "search_epochs": ("epochs",),
        "epoch_settings": ("epoch",),
        "method": None,
    },
    "generators": {"classes_are_names": None},
    "classifiers": {"classes_are_names": None},
    "ssl": {"heads": ("feature_dim",)},  # modules trained beside the net: ptl_cli.engine.heads
}

# How close a name must be to a known one (difflib's ratio) to count as its misspelling.
_NEAR_MISS = 0.85


def _near_miss(name: str, known: Iterable[str]) -> str | None:
    """The known name ``name`` is probably a misspelling of, or ``None``."""
    import difflib

    if name in known:
        return None
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=_NEAR_MISS)
    return close[0] if close else None


def _own_public_names(obj: Any) -> set[str]:
    """Public names the component's own classes (not torch's, not builtins) and instance define."""
    names: set[str] = set()
    for klass in type(obj).__mro__:
        if klass.__module__.split(".")[0] not in ("builtins", "torch", "typing", "abc"):
            names.update(vars(klass))
    names.update(getattr(obj, "__dict__", {}))
    return {n for n in names if not n.startswith("_")}


def _has(obj: Any, name: str) -> bool:
    try:
        inspect.getattr_static(obj, name)
        return True
    except AttributeError:
        return hasattr(obj, name)


def optional_member_problems(obj: Any, kind: str) -> list[str]:
    """Optional members ptl would silently never use: a member named like an optional one but not
    quite (``befor_forward``; a required member that is missing is reported as missing), a known
    optional method that cannot be called the way ptl calls it, and a method parameter named like
    an optional argument ptl passes (``unlabelled_index``)."""
    optional = OPTIONAL_MEMBERS.get(kind, {})
    problems = []
    for name in sorted(_own_public_names(obj)) if optional else ():
        meant = _near_miss(name, optional)
        if meant is not None and not _has(obj, meant):
            problems.append(f"{name} (did you mean {meant}? ptl never uses {name})")
    for name, args in optional.items():
        if args is None or not _has(obj, name):
            continue
        member = getattr(obj, name, None)
        try:
            signature = inspect.signature(member)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        try:
            signature.bind(*args)
        except TypeError:
            problems.append(f"{name}{_plain(signature)} cannot be called as {name}({', '.join(args)})")
    for (entry, member), names in OPTIONAL_ARGUMENTS.items():
        if entry != kind or member == "factory" or not _has(obj, member):
            continue
        problems.extend(_argument_near_misses(getattr(obj, member, None), member, names))
    return problems


def _argument_near_misses(
    function: Any, where: str, names: Iterable[str], given: Iterable[str] = ()
) -> list[str]:
    """Parameters of ``function`` (but those in ``given``) named almost like the optional
    arguments ``names``."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return []
    problems = []
    for parameter in set(parameters) - set(given):
        meant = _near_miss(parameter, names)
        if meant is not None:
            problems.append(
                f"{where}'s parameter {parameter} (did you mean {meant}? ptl never passes {parameter})"
            )
    return problems


def describe_problems(obj: Any, protocol: type) -> str:
    """What ``obj`` lacks to satisfy ``protocol``, as one phrase, or ``""`` if nothing."""
    missing = missing_members(obj, protocol)
    calls = signature_problems(obj, protocol)
    kind = next((k for k, v in PROTOCOLS.items() if v is protocol), "")
    calls += optional_member_problems(obj, kind)
    parts = []
    if missing:
        parts.append(f"without {', '.join(missing)}")
    if calls:
        parts.append(f"whose {'; '.join(calls)}")
    return f"a {type(obj).__qualname__} {' and '.join(parts)}" if parts else ""


def ensure_satisfies(kind: str, obj: Any, what: str) -> Any:
    """Return ``obj`` if it has every member of ``kind``'s protocol, each callable the way ptl
    calls it, else raise a one-line :class:`UserError` that names ``what`` (the component and
    its plugin) and what is wrong."""
    protocol = PROTOCOLS.get(kind)
    if protocol is None:
        return obj
    problems = describe_problems(obj, protocol)
    if problems:
        hook = KINDS[kind].hook
        raise UserError(
            f"{what} does not satisfy the {protocol.__name__} contract: its factory returned {problems}; "
            f"see ptl_cli.contracts.{protocol.__name__} and docs/plugins/reference.md#{hook} "
            "(check it with ptl_cli.testing)"
        )
    return obj
