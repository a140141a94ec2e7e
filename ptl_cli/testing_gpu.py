"""A simulated CUDA GPU for machines without one: the GPU paths' tests run in CI.

Nothing here computes real numbers. Tensors on ``cuda:0`` are torch's *fake tensors*
(``FakeTensorMode``): they carry shape, dtype and device, and every operator checks its
arguments as it would on a GPU (mixing a CPU tensor into a CUDA op raises
``FakeTensorDeviceMismatchError``). Three things are added on top:

* **stand-ins for the driver-only runtime** (``torch.cuda.set_device``, ``Stream``, ``Event``,
  ``torch.cuda.stream``, ``Generator("cuda")``, ``pin_memory``, ``synchronize``, the CUDA RNG
  state, autocast's availability check) that check their arguments the way torch 2.14 does: an
  index-less ``set_device(torch.device("cuda"))`` raises its ``ValueError``;
* **a recorder** (a ``TorchDispatchMode``) that lists, with the file and line that caused it,
  every host synchronization (a scalar read: ``.item()``, ``float()``, ``int()``, ``bool()``,
  ``.tolist()``; a data-dependent shape: ``nonzero``, boolean indexing; a blocking copy to or
  from the device), every draw on a CUDA tensor from a CPU generator, and every tensor made on a
  side stream and used on another without ``wait_event``/``wait_stream`` (a race) or
  ``record_stream`` (memory the allocator may hand out again too early). A sync inside
  ``ptl_cli.engine.sync.host_sync(reason)`` is listed with its reason instead of as a defect;
* **a Python backward**: autograd's C++ engine wants a real device context, so
  ``Tensor.backward`` walks the graph in Python instead, calling each node's own backward
  formula (on real CPU tensors the gradients equal the engine's bit for bit; the tests check it).

Use it as a context manager; a model built on the CPU and moved with ``.to("cuda")`` inside it
runs on the fake ``cuda:0``::

    with SimulatedGPU() as gpu:
        model = model.to("cuda")
        ...one training step...
    gpu.assert_clean()   # no device mismatch, CPU generator, race or unexplained host sync

It needs a CUDA build of torch (pip's default wheel; no driver or GPU): :func:`available` says
whether this torch has one. What it cannot show is speed, numerical results and kernels that
only exist on a GPU: those wait for ``benchmarks/gpu_check.py`` on a real one.
"""

from __future__ import annotations

import threading
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ptl_cli.engine.sync import sync_reason

DEVICE = torch.device("cuda", 0)

_TORCH_DIR = str(Path(torch.__file__).parent)
_HERE = str(Path(__file__).resolve())
_THREADING = str(Path(threading.__file__).resolve())

#: operators whose output depends on a value read from the device
_SCALAR_READS = {"aten._local_scalar_dense.default", "aten.is_nonzero.default", "aten.equal.default"}
_DYNAMIC_SHAPES = (
    "aten.nonzero",
    "aten.masked_select",
    "aten._unique",
    "aten.unique",
    "aten.bincount",
    "aten.repeat_interleave.Tensor",
)
#: in-place optimizer kernels fake tensors have no implementation for: nothing to compute here
_NO_FAKE_KERNEL = ("aten._fused_sgd_", "aten._fused_adam_", "aten._fused_adamw_")


def available() -> bool:
    """True when this torch can make fake CUDA tensors (a CUDA build; no driver needed)."""
    return torch.version.cuda is not None and torch.backends.cuda.is_built()


@dataclass(frozen=True)
class Finding:
    """One thing the recorder saw: ``kind`` is ``sync``, ``copy``, ``generator``, ``race`` or ``runtime``."""

    kind: str
    what: str
    where: str
    reason: str | None = None  # set when the code declared the sync (``host_sync(reason)``)

    def __str__(self) -> str:
        why = f" [{self.reason}]" if self.reason else ""
        return f"{self.kind}: {self.what} at {self.where}{why}"


def _caller() -> str:
    """``file:line (function)`` of the innermost frame outside torch, this module and threading."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        name = frame.filename
        if name.startswith(_TORCH_DIR) or name in (_HERE, _THREADING) or "contextlib" in name:
            continue
        return f"{Path(name).name}:{frame.lineno} ({frame.name})"
    return "?"


# -- streams and events -----------------------------------------------------------------------
class _Stream:
    """A CUDA stream stand-in: counts the work queued on it and what it waited for."""

    _count = 0

    def __init__(self, device: Any = None, priority: int = 0, **_: Any) -> None:
        index = _index_of(device)
        _check_index(index)
        _Stream._count += 1
        self.id = _Stream._count
        self.device = torch.device("cuda", index)
        self.work = 0
        self.waited: dict[int, int] = {}  # stream id -> work count that this stream has waited for

    def wait_event(self, event: _Event) -> None:
        if event.stream is not None:
            self.waited[event.stream.id] = max(self.waited.get(event.stream.id, 0), event.work)

    def wait_stream(self, stream: _Stream) -> None:
        self.waited[stream.id] = max(self.waited.get(stream.id, 0), stream.work)

    def record_event(self, event: _Event | None = None) -> _Event:
        event = event or _Event()
        event.record(self)
        return event

    def synchronize(self) -> None:
        _active_recorder().note_sync("stream.synchronize()")

    def query(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<simulated stream {self.id} on {self.device}>"


class _Event:
    """A CUDA event stand-in: remembers which stream recorded it, and how far that stream had got."""

    def __init__(
        self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False
    ) -> None:  # noqa: E501
        self.stream: _Stream | None = None
        self.work = 0

    def record(self, stream: _Stream | None = None) -> None:
        self.stream = stream or _current_stream()
        self.work = self.stream.work

    def wait(self, stream: _Stream | None = None) -> None:
        (stream or _current_stream()).wait_event(self)

    def synchronize(self) -> None:
        _active_recorder().note_sync("event.synchronize()")

    def query(self) -> bool:
        return True

    def elapsed_time(self, other: _Event) -> float:
        _active_recorder().note_sync("event.elapsed_time()")
        return 0.0


_default_streams: dict[int, _Stream] = {}
_local = threading.local()


def _default_stream(device: Any = None) -> _Stream:
    index = _index_of(device)
    if index not in _default_streams:
        _default_streams[index] = _Stream(index)
    return _default_streams[index]


def _current_stream(device: Any = None) -> _Stream:
    stack = getattr(_local, "streams", None)
    return stack[-1] if stack else _default_stream(device)


@contextmanager
def _stream_context(stream: _Stream | None) -> Iterator[None]:
    if stream is None:
        yield
        return
    stack = _local.__dict__.setdefault("streams", [])
    stack.append(stream)
    try:
        yield
    finally:
        stack.pop()


def _index_of(device: Any) -> int:
    if device is None:
        return 0
    if isinstance(device, _Stream):
        return device.device.index
    index = torch.cuda._utils._get_device_index(device, optional=True)
    _check_index(index)
    return index


#: how many simulated devices there are (``SimulatedGPU(devices=N)``)
_count = [1]


def _check_index(index: int) -> None:
    if not 0 <= index < _count[0]:
        raise ValueError(f"Invalid device id {index}: the simulated machine has {_count[0]} device(s)")


# -- the runtime stand-ins -----------------------------------------------------------------------
class _CudaGenerator(torch.Generator):
    """``torch.Generator("cuda")``: a CPU generator underneath that says it lives on ``cuda:0``."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return DEVICE


_RealGenerator = torch.Generator


class _AnyGenerator(type(_RealGenerator)):  # type: ignore[misc]
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _RealGenerator)


class _Generator(_RealGenerator, metaclass=_AnyGenerator):
    """What ``torch.Generator`` is in the simulation: CUDA ones are stand-ins, others real."""

    def __new__(cls, device: Any = "cpu") -> torch.Generator:  # type: ignore[misc]
        if torch.device(device).type == "cuda":
            _index_of(device)
            return _CudaGenerator()
        return _RealGenerator(device=device)


class _GeneratorCheck(TorchFunctionMode):
    """Flags a draw on one device from a generator on another (torch raises on a real GPU).

    A function mode, not a dispatch mode: an operator's dispatch sees a new Python object for
    the generator, so only here is a stand-in CUDA generator still recognisable.
    """

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        generator = kwargs.get("generator")
        if isinstance(generator, _RealGenerator):
            device = kwargs.get("device")
            if device is None:
                tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
                device = tensors[0].device if tensors else torch.device("cpu")
            if torch.device(device).type != generator.device.type:
                name = getattr(func, "__name__", str(func))
                where = generator.device
                self.recorder.add("generator", f"{name} on {device} draws from a generator on {where}")
        return func(*args, **kwargs)


_pinned: dict[int, weakref.ref[torch.Tensor]] = {}


def _pin_memory(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    if self.device.type != "cpu":
        raise RuntimeError(f"cannot pin '{self.device}' memory: only dense CPU tensors can be pinned")
    out = self.clone()
    _pinned[id(out)] = weakref.ref(out)
    return out


def _is_pinned(self: torch.Tensor, *args: Any, **kwargs: Any) -> bool:
    ref = _pinned.get(id(self))
    return ref is not None and ref() is self


def _record_stream(self: torch.Tensor, stream: Any) -> None:
    if not isinstance(stream, _Stream):
        raise TypeError(f"record_stream() expects a CUDA stream, got {type(stream).__name__}")
    if _device_of(self).type != "cuda":
        raise RuntimeError("record_stream: only CUDA tensors are allocated on a stream")
    _active_recorder().recorded.add(id(self))


def _rng_state(device: Any = "cuda") -> torch.Tensor:
    return torch.zeros(16, dtype=torch.uint8)


# -- backward in Python ------------------------------------------------------------------------
def python_backward(
    tensors: Any,
    grad_tensors: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    inputs: Any = None,
    **_: Any,
) -> None:
    """``torch.autograd.backward`` without the C++ engine: each graph node's backward, in order.

    Nodes are visited in topological order (a node runs once every node that feeds it a gradient
    has run); gradients meant for the same input are summed; leaves accumulate into ``.grad``
    (only ``inputs`` when given). Tensor hooks on leaves are not run (ptl's steps register none).
    """
    wanted = None if inputs is None else {id(t) for t in _as_list(inputs)}

    def accumulate(leaf: torch.Tensor, grad: torch.Tensor) -> None:
        if wanted is None or id(leaf) in wanted:
            leaf.grad = grad.detach() if leaf.grad is None else leaf.grad + grad

    _walk(_as_list(tensors), grad_tensors, create_graph, accumulate)


def python_grad(
    outputs: Any,
    inputs: Any,
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool | None = None,
    **_: Any,
) -> tuple[torch.Tensor | None, ...]:
    """``torch.autograd.grad`` for leaf ``inputs``, by the same walk as :func:`python_backward`."""
    leaves = _as_list(inputs)
    found: dict[int, torch.Tensor] = {}

    def collect(leaf: torch.Tensor, grad: torch.Tensor) -> None:
        if any(leaf is t for t in leaves):
            found[id(leaf)] = grad if id(leaf) not in found else found[id(leaf)] + grad

    _walk(_as_list(outputs), grad_outputs, create_graph, collect)
    missing = [i for i, t in enumerate(leaves) if id(t) not in found]
    if missing and not allow_unused:
        raise RuntimeError("One of the differentiated Tensors appears to not have been used in the graph")
    return tuple(found.get(id(t)) for t in leaves)


def _as_list(tensors: Any) -> list[torch.Tensor]:
    return [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)


def _walk(tensors: list[torch.Tensor], grad_tensors: Any, create_graph: bool, leaf_grad: Callable) -> None:
    """Backpropagate from ``tensors``, handing each leaf's summed gradient to ``leaf_grad``."""
    grads = [None] * len(tensors) if grad_tensors is None else _as_list(grad_tensors)
    pending: dict[Any, list[Any]] = {}
    for tensor, grad in zip(tensors, grads, strict=True):
        if tensor.grad_fn is None:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        grad = torch.ones_like(tensor) if grad is None else grad
        _add_grad(pending, tensor.grad_fn, tensor.output_nr, grad)
    # how many gradient messages each node waits for
    waiting: dict[Any, int] = {}
    seen: set[Any] = set()
    stack = [t.grad_fn for t in tensors]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None:
                waiting[child] = waiting.get(child, 0) + 1
                stack.append(child)
    ready = list(dict.fromkeys(t.grad_fn for t in tensors if waiting.get(t.grad_fn, 0) == 0))
    with torch.no_grad() if not create_graph else nullcontext():
        while ready:
            node = ready.pop()
            slots = pending.pop(node, [])
            if hasattr(node, "variable"):  # AccumulateGrad: a leaf
                if slots and slots[0] is not None:
                    leaf_grad(node.variable, slots[0])
                outputs: tuple[Any, ...] = ()
            else:
                count = len(node._input_metadata)
                args = [slots[i] if i < len(slots) else None for i in range(count)]
                result = _apply(node, args) if any(a is not None for a in args) else None
                outputs = result if isinstance(result, tuple) else (result,)
                if result is None:
                    outputs = (None,) * len(node.next_functions)
            for (child, index), grad in zip(node.next_functions, outputs, strict=False):
                if child is None:
                    continue
                if grad is not None:
                    _add_grad(pending, child, index, grad)
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)


def _apply(node: Any, grads: list[Any]) -> Any:
    """One node's backward. A custom ``autograd.Function`` gets zeros for missing gradients (as
    the engine materializes them) and returns one gradient per forward argument, of which the
    engine keeps those of tensor arguments: ptl's functions take their tensors first."""
    if not hasattr(node, "_forward_cls"):
        return node(*grads)
    metadata = node._input_metadata
    full = [
        g if g is not None else torch.zeros(m.shape, dtype=m.dtype, device=m.device)
        for g, m in zip(grads, metadata, strict=True)
    ]
    result = node.apply(*full)
    result = result if isinstance(result, tuple) else (result,)
    return tuple(result[: len(node.next_functions)])


def _add_grad(pending: dict[Any, list[Any]], node: Any, index: int, grad: torch.Tensor) -> None:
    # what the C++ engine's output validation does: reduce a broadcast gradient, match the dtype
    meta = node._input_metadata[index]
    if tuple(grad.shape) != tuple(meta.shape):
        grad = grad.sum_to_size(meta.shape)
    if grad.dtype != meta.dtype:
        grad = grad.to(meta.dtype)
    slots = pending.setdefault(node, [])
    while len(slots) <= index:
        slots.append(None)
    slots[index] = grad if slots[index] is None else slots[index] + grad


def _tensor_backward(
    self: torch.Tensor,
    gradient: Any = None,
    retain_graph: Any = None,
    create_graph: bool = False,
    inputs: Any = None,
) -> None:
    python_backward(self, gradient, retain_graph, create_graph, inputs)


# -- the recorder -----------------------------------------------------------------------------
_recorders: list[Recorder] = []
_LOCK = threading.RLock()


def _active_recorder() -> Recorder:
    return _recorders[-1]


def _is_fake(value: Any) -> bool:
    return isinstance(value, FakeTensor)


def _device_of(value: Any) -> torch.device:
    if _is_fake(value):
        return value.fake_device
    return value.device


@dataclass
class Recorder(TorchDispatchMode):
    """Lists host syncs, cross-device copies, CPU generators in CUDA draws and stream races."""

    findings: list[Finding] = field(default_factory=list)
    produced: dict[int, tuple[Any, int, int]] = field(default_factory=dict)  # id -> (ref, stream, work)
    recorded: set[int] = field(default_factory=set)  # tensors told about the stream that uses them

    def __post_init__(self) -> None:
        super().__init__()

    def add(self, kind: str, what: str) -> None:
        self.findings.append(Finding(kind, what, _caller(), sync_reason()))

    def note_sync(self, what: str) -> None:
        self.add("sync", what)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        with _LOCK:  # fake tensor mode is not thread-safe; the prefetcher's thread uses it too
            return self._dispatch(func, args, kwargs or {})

    def _dispatch(self, func: Any, args: Any, kwargs: Any) -> Any:
        name = str(func)
        flat, _ = tree_flatten((args, kwargs))
        tensors = [a for a in flat if isinstance(a, torch.Tensor)]
        if not any(_is_fake(t) for t in tensors) and not _names_cuda(kwargs):
            with _real():  # only CUDA is simulated: CPU work (data, CPU draws) runs for real
                return func(*args, **kwargs)
        if name in _SCALAR_READS:
            self.note_sync(f"{name.split('.')[1]}: a device value read on the host (.item(), .tolist())")
            return _placeholder(args[0])
        if name.startswith(_DYNAMIC_SHAPES) or (name == "aten.index.Tensor" and _bool_index(args)):
            self.note_sync(f"{name}: an output shape that depends on device values")
            raise HostSyncError(f"{name} at {_caller()}: a data-dependent shape is a host sync")
        if name.startswith(_NO_FAKE_KERNEL):
            return None
        if self._check_copy(name, args, kwargs, tensors):
            return _to_host(name, args)
        stream = _current_stream()
        self._check_streams(name, tensors, stream)
        out = func(*args, **kwargs)
        stream.work += 1
        if stream is not _default_stream():
            for tensor in tree_flatten(out)[0]:
                if isinstance(tensor, torch.Tensor):
                    self.produced[id(tensor)] = (weakref.ref(tensor), stream.id, stream.work)
        return out

    def _check_copy(self, name: str, args: Any, kwargs: Any, tensors: list[torch.Tensor]) -> bool:
        """Record a copy's sync; True for a copy to the host (its values are made up here)."""
        if name == "aten._to_copy.default":
            src, dst = _device_of(args[0]), kwargs.get("device") or _device_of(args[0])
            non_blocking = kwargs.get("non_blocking", False)
        elif name == "aten.copy_.default":
            dst, src = _device_of(args[0]), _device_of(args[1])
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
        else:
            return False
        dst = torch.device(dst)
        if src.type == "cpu" and dst.type == "cuda":
            source = args[0] if name == "aten._to_copy.default" else args[1]
            if source.dim() == 0 and name == "aten.copy_.default":
                return False  # a CPU scalar filled in: a kernel argument, not a copy
            if not (non_blocking and _is_pinned(source)):
                self.note_sync("a blocking host-to-device copy (pageable memory or non_blocking=False)")
        elif src.type == "cuda" and dst.type == "cpu":
            self.note_sync("a device-to-host copy (.cpu(), .to('cpu'), .numpy())")
            return True
        return False

    def _check_streams(self, name: str, tensors: list[torch.Tensor], stream: _Stream) -> None:
        for tensor in tensors:
            hit = self.produced.get(id(tensor))
            if hit is None or hit[0]() is not tensor or hit[1] == stream.id:
                continue
            _, made_on, work = hit
            if stream.waited.get(made_on, 0) < work:
                self.add("race", f"{name} reads a tensor made on stream {made_on} without waiting for it")
            if id(tensor) not in self.recorded:
                self.add(
                    "race",
                    f"{name} uses memory allocated on stream {made_on} without record_stream "
                    "(the allocator may reuse it while this stream still reads it)",
                )
            self.produced.pop(id(tensor), None)


def _real() -> Any:
    """Real tensors inside the block: the fake mode steps aside."""
    return unset_fake_temporarily()


def _names_cuda(kwargs: Any) -> bool:
    device = kwargs.get("device")
    return device is not None and torch.device(device).type == "cuda"


def _to_host(name: str, args: Any) -> torch.Tensor:
    """A device-to-host copy's result: real CPU zeros of the right shape (host code goes on)."""
    if name == "aten.copy_.default":
        return args[0]
    return _real_zeros(args[0])


def _real_zeros(tensor: torch.Tensor) -> torch.Tensor:
    """Real CPU zeros of a (fake) tensor's shape and dtype: there are no values to copy."""
    with _real():
        return torch.zeros(tensor.shape, dtype=tensor.dtype)


def _bool_index(args: Any) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


def _placeholder(tensor: torch.Tensor) -> Any:
    """What a scalar read returns in simulation (there is no value): 1, 1.0 or False."""
    if tensor.dtype == torch.bool:
        return False
    if tensor.is_floating_point():
        return 1.0
    if tensor.is_complex():
        return 1 + 0j
    return 1


class HostSyncError(RuntimeError):
    """A data-dependent shape: the simulation cannot go on without the device's values."""


# -- saving fake tensors ---------------------------------------------------------------------
def _real_copy(value: Any) -> Any:
    """A real CPU tensor of the same shape and dtype (zeros) for a fake one: what torch.save writes."""
    if _is_fake(value):
        if _device_of(value).type == "cuda":
            _active_recorder().note_sync("torch.save copies a device tensor to the host")
        return _real_zeros(value)
    if isinstance(value, dict):
        return type(value)((k, _real_copy(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_real_copy(v) for v in value)
    return value


_kernel = threading.local()


class _FakeMode(FakeTensorMode):
    """Fake tensors that never touch the real CUDA runtime, though ``is_available()`` says yes."""

    @property
    def avoid_device_init(self) -> bool:
        return True

    # Per thread: while one thread runs a fake kernel, tensors in another (the prefetcher's)
    # must still report their device, not "meta".
    @property
    def in_kernel_invocation(self) -> bool:
        return getattr(_kernel, "active", False)

    @in_kernel_invocation.setter
    def in_kernel_invocation(self, value: bool) -> None:
        _kernel.active = value


# -- the simulated GPU -------------------------------------------------------------------------
class SimulatedGPU:
    """Fake ``cuda:0`` for the block: see the module docstring. Re-entrant per instance: no."""

    def __init__(self, devices: int = 1) -> None:
        if not available():
            raise RuntimeError("the simulated GPU needs a CUDA build of torch (pip's default wheel)")
        self.devices = devices
        self.current = 0
        self.recorder = Recorder()
        self.generators = _GeneratorCheck(self.recorder)
        self._stack: ExitStack | None = None

    @property
    def findings(self) -> list[Finding]:
        return self.recorder.findings

    def syncs(self, *, declared: bool | None = None) -> list[Finding]:
        """Host syncs; ``declared=False``: only those outside any ``host_sync(reason)`` block."""
        out = [f for f in self.findings if f.kind == "sync"]
        if declared is None:
            return out
        return [f for f in out if (f.reason is not None) == declared]

    def problems(self) -> list[Finding]:
        """What the tests forbid: undeclared syncs, CPU generators in CUDA draws, races, misuse."""
        return [f for f in self.findings if f.kind != "sync" or f.reason is None]

    def assert_clean(self) -> None:
        problems = self.problems()
        if problems:
            lines = "\n  ".join(str(p) for p in problems)
            raise AssertionError(f"{len(problems)} problem(s) on the simulated GPU:\n  {lines}")

    def clear(self) -> None:
        self.recorder.findings.clear()

    def __enter__(self) -> SimulatedGPU:
        stack = ExitStack()
        self._stack = stack
        quiet = stack.enter_context(warnings.catch_warnings())  # noqa: F841 - restored on exit
        warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
        self.fake = _FakeMode(allow_non_fake_inputs=True)
        patches: list[tuple[Any, str, Any]] = [
            (torch.cuda, "is_available", lambda: True),
            (torch.cuda, "device_count", lambda: self.devices),
            (torch.cuda, "current_device", lambda: self.current),
            (torch.cuda, "set_device", self._set_device),
            (torch.cuda, "is_initialized", lambda: True),
            (torch.cuda, "is_bf16_supported", lambda *a, **k: True),
            (torch.cuda, "get_device_name", lambda *a: "simulated GPU"),
            (torch.cuda, "get_device_capability", lambda *a: (9, 0)),
            (torch.cuda, "synchronize", lambda *a: _active_recorder().note_sync("torch.cuda.synchronize()")),
            (torch.cuda, "Stream", _Stream),
            (torch.cuda, "Event", _Event),
            (torch.cuda, "stream", _stream_context),
            (torch.cuda, "current_stream", _current_stream),
            (torch.cuda, "default_stream", _default_stream),
            (torch.cuda, "manual_seed", lambda seed: None),
            (torch.cuda, "manual_seed_all", lambda seed: None),
            (torch.cuda, "get_rng_state", _rng_state),
            (torch.cuda, "get_rng_state_all", lambda: [_rng_state()]),
            (torch.cuda, "set_rng_state", lambda state, device="cuda": None),
            (torch.cuda, "set_rng_state_all", lambda states: None),
            (torch.cuda, "memory_allocated", lambda *a: 0),
            (torch.cuda, "max_memory_allocated", lambda *a: 0),
            (torch.cuda, "reset_peak_memory_stats", lambda *a: None),
            (torch, "Generator", _Generator),
            (torch.Tensor, "pin_memory", _pin_memory),
            (torch.Tensor, "is_pinned", _is_pinned),
            (torch.Tensor, "backward", _tensor_backward),
            (torch.Tensor, "record_stream", _record_stream),
            (torch.autograd, "backward", python_backward),
            (torch.autograd, "grad", python_grad),
            (torch, "save", self._save),
            (torch, "load", self._load),
            (threading.Thread, "run", self._thread_run(threading.Thread.run)),
        ]
        for owner, name, value in patches:
            stack.callback(setattr, owner, name, getattr(owner, name))
            setattr(owner, name, value)
        _recorders.append(self.recorder)
        stack.callback(_recorders.pop)
        stack.callback(_count.__setitem__, 0, _count[0])
        _count[0] = self.devices
        stack.callback(_default_streams.clear)
        stack.enter_context(self.generators)
        stack.enter_context(self.fake)
        stack.enter_context(self.recorder)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stack is not None
        self._stack.close()
        self._stack = None

    def _set_device(self, device: Any) -> None:
        """As torch 2.14's: an index-less device raises ``ValueError`` (the real one's message)."""
        index = torch.cuda._utils._get_device_index(device)  # the real argument check
        if index >= 0:
            _check_index(index)
            self.current = index

    _real_save = staticmethod(torch.save)

    def _save(self, obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        SimulatedGPU._real_save(_real_copy(obj), f, *args, **kwargs)

    _real_load = staticmethod(torch.load)

    def _load(self, *args: Any, **kwargs: Any) -> Any:
        """Files hold real tensors: loaded as such (torch.load under fake mode would make meta ones)."""
        with _real():
            return SimulatedGPU._real_load(*args, **kwargs)

    def _thread_run(self, run: Callable[[threading.Thread], None]) -> Callable[[threading.Thread], None]:
        """Threads started in the simulation (the prefetcher's) see the fake device too."""
        fake, recorder, generators = self.fake, self.recorder, self.generators

        def wrapped(thread: threading.Thread) -> None:
            with ExitStack() as modes:
                with _LOCK:
                    for mode in (generators, fake, recorder):
                        modes.enter_context(mode)
                run(thread)

        return wrapped
