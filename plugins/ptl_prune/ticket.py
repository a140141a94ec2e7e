"""Tickets: a pruned random network stored as its seed, 1-bit masks and IteRand's re-draw log
(plus, for pruners that map the kept weights, their mask levels and per-layer gains).

A score-only network is fully determined by how its weights were drawn and which were kept, as
its pruner declares through ``ticket_spec(model)`` (a :class:`ptl_cli.pruning.TicketSpec`; the
built-ins and third-party pruners alike):

* every Conv/Linear weight starts as ``inits.initial_weight(init, shape, seed, layer)``;
* IteRand's e-th re-draw (at step ``t_e``) draws a whole fresh tensor from
  ``inits.redraw_generator(seed, t_e, layer)`` (fresh values first), and some weights take theirs;
* only kept weights matter in the end, so for each kept weight the ticket records which draw
  it holds (0 = initial, e = re-draw e), zlib-compressed: most hold a few small numbers;
* a mask of integer levels (the signed supermask's {−1, 0, 1}, multicoated's {0, …, C}) is stored
  as bit planes, each over the weights the previous one kept: the 1-bit mask ``level != 0`` as
  ever, then ``|level| > c`` over the weights with ``|level| ≥ c`` (c = 1 … max − 1: one plane per
  further coat, nested as the coats are), then the sign of each kept weight when any is negative.
  That is 1 + (share kept) bits a weight for a signed mask; on the quickstarts' masks, 1.50 bits
  (signed, p = 0.5) and 1.38 (three coats), where zlib of one int8 a level took 1.89 and 1.49 and
  bz2 1.77 and 1.31: as small, with no codec, and the 1-bit mask stays the first plane;
* a binarized layer (MPT) stores its gain, one float: the weight is ``gain · sign(W)`` before the
  mask applies (why stored, not recomputed: :class:`ptl_cli.pruning.TicketSpec`).

The file is a ``safetensors`` file (no pickle): tensors ``mask/<layer>`` (bit-packed, 1 bit per
weight), ``source/<layer>`` (compressed draw indices of kept weights), ``level/<layer>/<c>`` and
``sign/<layer>`` (bit planes of levels), ``gain/<layer>`` (a 0-dim float), ``state/<key>`` (all
other state: biases, BatchNorm statistics) and JSON metadata ``ptl_ticket`` (format, seed, weight
distribution, re-draw steps, architecture, layers). A ticket with 1-bit masks only is written as
``ptl-ticket/1``, byte for byte as before levels and gains existed; one that uses them is
``ptl-ticket/2``, so a reader that knows only the first refuses it instead of rebuilding ``W ⊙ m``.
:func:`rebuild_state_dict` regenerates the dense masked weights bit for bit; :func:`load_ticket`
returns the ready plain ``nn.Module``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptl_cli.pruning import TicketSpec
from ptl_prune import inits, supermask

FORMAT_MASKS = "ptl-ticket/1"  # seed, 1-bit masks, re-draws
FORMAT = "ptl-ticket/2"  # and mask levels, gains
FORMATS = (FORMAT_MASKS, FORMAT)
#: the largest |level| a mask may hold (one bit plane per unit: levels are small counts)
MAX_LEVEL = 127
_BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8 tensor of ceil(n / 8) bytes (most significant bit first)."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _BITS).sum(1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``n`` bits as a bool tensor."""
    bits = (packed.view(-1, 1) & _BITS) != 0
    return bits.view(-1)[:n]


def make_ticket(
    model: nn.Module,
    spec: TicketSpec,
    arch: dict[str, Any],
    method: str,
    dense: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of the ticket a pruner declared (``ticket_spec(model)``).

    ``dense`` is the pruner's ``export_dense(model)`` (computed when not given): everything that
    is not a prunable layer's weight is stored from it as is. A declaration that names unknown
    layers, masks of the wrong shape or type, or draws ptl cannot regenerate is a
    :class:`~ptl_cli.errors.UserError` naming the pruner; whether the declaration describes the
    network is checked by rebuilding it (``ptl export`` does so before writing anything).
    """
    if not isinstance(spec, TicketSpec):
        _refuse(method, f"ticket_spec(model) returned {type(spec).__name__}, not ptl_cli.pruning.TicketSpec")
    if spec.weight_init not in inits.WEIGHT_INITS:
        _refuse(
            method,
            f"weight_init {spec.weight_init!r} is not one ptl can redraw ({', '.join(inits.WEIGHT_INITS)})",
        )
    if dense is None:
        dense = supermask.dense_state_dict(model)
    events = [int(step) for step in spec.redraws]
    source_dtype = torch.uint8 if len(events) < 256 else torch.int16
    layers_of_model = supermask.prunable_layers(model)
    unknown = sorted(set(spec.masks) - {name for name, _ in layers_of_model})
    if unknown:
        _refuse(method, f"its masks name layers that are not Conv/Linear layers of the model: {unknown[:3]}")
    unmasked = sorted(set(spec.gains) - set(spec.masks))
    if unmasked:
        _refuse(method, f"it declares gains for layers it declares no mask for: {unmasked[:3]}")
    tensors: dict[str, torch.Tensor] = {}
    layers = []
    weight_keys = set()
    with torch.no_grad():
        for index, (name, module) in enumerate(layers_of_model):
            weight = supermask.original(module)
            shape = list(weight.shape)
            weight_keys.add((f"{name}." if name else "") + "weight")
            declared = spec.masks.get(name)
            layer: dict[str, Any] = {
                "name": name,
                "index": index,
                "shape": shape,
                "pruned": declared is not None,
            }
            layers.append(layer)
            if declared is None:
                continue
            kept = _store_mask(tensors, layer, declared, method)
            gain = spec.gains.get(name)
            if gain is not None:
                tensors[f"gain/{name}"] = _gain(gain, weight.dtype, name, method)
                layer["gain"] = True
            sources = spec.sources.get(name)  # which draw each weight holds (IteRand's re-draws)
            if sources is not None and events:
                sources = sources.detach().cpu()
                if list(sources.shape) != shape or sources.is_floating_point():
                    _refuse(
                        method, f"the sources of layer {name!r} must be an integer tensor of shape {shape}"
                    )
                held = sources[kept]
                if held.numel() and (int(held.min()) < 0 or int(held.max()) > len(events)):
                    _refuse(
                        method, f"the sources of layer {name!r} name draws beyond its {len(events)} re-draws"
                    )
                raw = held.to(source_dtype).numpy().tobytes()
                tensors[f"source/{name}"] = torch.frombuffer(
                    bytearray(zlib.compress(raw, 9)), dtype=torch.uint8
                )
    for key, value in dense.items():
        if key not in weight_keys:
            tensors[f"state/{key}"] = value.detach().cpu().contiguous()
    mapped = any("levels" in layer or "gain" in layer for layer in layers)
    meta = {
        "format": FORMAT if mapped else FORMAT_MASKS,
        "method": method,
        "seed": int(spec.seed),
        "weight_init": spec.weight_init,
        "events": events,
        "source_dtype": str(source_dtype).removeprefix("torch."),
        "arch": arch,
        "layers": layers,
    }
    return tensors, meta


def _store_mask(
    tensors: dict[str, torch.Tensor], layer: dict[str, Any], declared: Any, method: str
) -> torch.Tensor:
    """Write one layer's mask (1 bit a weight; levels as further bit planes), return ``level != 0``.

    A mask of levels only in {0, 1} is stored, and later read, exactly as a bool one."""
    name, shape = layer["name"], layer["shape"]
    if (
        not isinstance(declared, torch.Tensor)
        or list(declared.shape) != shape
        or declared.is_floating_point()
        or declared.is_complex()
    ):
        _refuse(
            method,
            f"the mask of layer {name!r} must be a bool tensor (True = kept) or an integer tensor of "
            f"levels, of shape {shape}",
        )
    declared = declared.detach().cpu()
    if declared.dtype == torch.bool:
        tensors[f"mask/{name}"] = pack_bits(declared)
        return declared
    level = declared.to(torch.int64)
    if level.numel() and int(level.abs().max()) > MAX_LEVEL:
        _refuse(method, f"the mask of layer {name!r} holds levels beyond ±{MAX_LEVEL}")
    magnitude, kept = level.abs().reshape(-1), (level != 0).reshape(-1)
    tensors[f"mask/{name}"] = pack_bits(kept)
    top = int(magnitude.max()) if magnitude.numel() else 0
    signed = bool((level < 0).any())
    if top > 1 or signed:
        for c in range(1, top):  # plane c: which of the weights at |level| >= c go beyond c
            tensors[f"level/{name}/{c}"] = pack_bits(magnitude[magnitude >= c] > c)
        if signed:
            tensors[f"sign/{name}"] = pack_bits(level.reshape(-1)[kept] < 0)
        layer["levels"], layer["signed"] = top, signed
    return kept.view(level.shape)


def _gain(gain: Any, dtype: torch.dtype, name: str, method: str) -> torch.Tensor:
    """A declared gain as the 0-dim tensor of the weight's dtype that the ticket stores."""
    value = gain.detach().cpu() if isinstance(gain, torch.Tensor) else torch.tensor(gain)
    if value.numel() != 1 or not (value.is_floating_point() or value.dtype == torch.int64):
        _refuse(method, f"the gain of layer {name!r} must be one float")
    value = value.reshape(()).to(dtype).contiguous()
    if not bool(torch.isfinite(value)):
        _refuse(method, f"the gain of layer {name!r} is {float(value)}, not a finite number")
    return value


def _refuse(method: str, why: str) -> None:
    from ptl_cli.errors import UserError

    raise UserError(f"pruner {method!r} cannot be exported as a ticket: {why}")


def ticket_bytes(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """The ticket file's content (safetensors, metadata ``ptl_ticket``)."""
    from safetensors.torch import save

    return save(tensors, metadata={"ptl_ticket": json.dumps(meta)})


def save_ticket(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from ptl_cli import atomic

    atomic.write_bytes(path, ticket_bytes(tensors, meta))


def read_ticket(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {}).get("ptl_ticket", "{}"))
    if meta.get("format") not in FORMATS:
        from ptl_cli.errors import UserError

        raise UserError(
            f"{path} is not a ptl ticket ({' or '.join(FORMATS)}); "
            "write one with `ptl export RUN --format ticket`"
        )
    return load_file(str(path)), meta


def rebuild_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The dense masked state dict a ticket describes, regenerated from the seed, and its metadata."""
    tensors, meta = read_ticket(path)
    seed, init, events = meta["seed"], meta["weight_init"], meta["events"]
    dtype = getattr(torch, meta.get("source_dtype", "uint8"))
    out = {key.removeprefix("state/"): value for key, value in tensors.items() if key.startswith("state/")}
    for layer in meta["layers"]:
        name, index, shape = layer["name"], layer["index"], torch.Size(layer["shape"])
        weight = inits.initial_weight(init, shape, seed, index)
        if layer["pruned"]:
            kept = unpack_bits(tensors[f"mask/{name}"], shape.numel())
            packed_sources = tensors.get(f"source/{name}")
            if packed_sources is not None:
                raw = bytearray(zlib.decompress(packed_sources.numpy().tobytes()))
                held = torch.frombuffer(raw, dtype=dtype).long()
                positions = kept.nonzero().squeeze(1)
                flat = weight.view(-1)
                for event in torch.unique(held).tolist():
                    if event == 0:
                        continue
                    gen = inits.redraw_generator(seed, events[event - 1], index)
                    fresh = inits.draw(init, shape, gen).view(-1)
                    where = positions[held == event]
                    flat[where] = fresh[where]
            if layer.get("gain"):
                weight = torch.sign(weight) * tensors[f"gain/{name}"]
            zero = torch.zeros((), dtype=weight.dtype)
            if "levels" in layer:
                level = _levels(tensors, layer, kept).view(shape)
                weight = torch.where(level != 0, weight * level.to(weight.dtype), zero)
            else:
                weight = torch.where(kept.view(shape), weight, zero)
        out[(f"{name}." if name else "") + "weight"] = weight
    return out, meta


def _levels(tensors: dict[str, torch.Tensor], layer: dict[str, Any], kept: torch.Tensor) -> torch.Tensor:
    """A layer's flat int8 levels from its bit planes (the inverse of :func:`_store_mask`)."""
    name = layer["name"]
    level = kept.to(torch.int8)
    positions = kept.nonzero().squeeze(1)  # the kept weights: the sign plane's and plane 1's domain
    at_least = positions  # the weights with |level| >= c, for c = 1, 2, ...
    for c in range(1, layer["levels"]):
        at_least = at_least[unpack_bits(tensors[f"level/{name}/{c}"], at_least.numel())]
        level[at_least] += 1
    if layer["signed"]:
        negative = positions[unpack_bits(tensors[f"sign/{name}"], positions.numel())]
        level[negative] = -level[negative]
    return level


def load_ticket(path: str | Path) -> nn.Module:
    """The plain network (no ptl wrappers) a ticket describes, in eval mode."""
    from ptl_prune.build import build_model

    state, meta = rebuild_state_dict(path)
    model = build_model(meta["arch"])
    model.load_state_dict(state, strict=True)
    return model.eval()
