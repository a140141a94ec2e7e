"""Tickets: a pruned random network stored as its seed, 1-bit masks and IteRand's re-draw log.

A score-only network is fully determined by how its weights were drawn and which were kept, as
its pruner declares through ``ticket_spec(model)`` (a :class:`ptl_cli.pruning.TicketSpec`; the
built-ins and third-party pruners alike):

* every Conv/Linear weight starts as ``inits.initial_weight(init, shape, seed, layer)``;
* IteRand's e-th re-draw (at step ``t_e``) draws a whole fresh tensor from
  ``inits.redraw_generator(seed, t_e, layer)`` (fresh values first), and some weights take theirs;
* only kept weights matter in the end, so for each kept weight the ticket records which draw
  it holds (0 = initial, e = re-draw e), zlib-compressed: most hold a few small numbers.

The file is a ``safetensors`` file (no pickle): tensors ``mask/<layer>`` (bit-packed, 1 bit per
weight), ``source/<layer>`` (compressed draw indices of kept weights), ``state/<key>`` (all other
state: biases, BatchNorm statistics) and JSON metadata ``ptl_ticket`` (format, seed, weight
distribution, re-draw steps, architecture, layers). :func:`rebuild_state_dict` regenerates the
dense masked weights bit for bit; :func:`load_ticket` returns the ready plain ``nn.Module``.
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

FORMAT = "ptl-ticket/1"
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
    tensors: dict[str, torch.Tensor] = {}
    layers = []
    weight_keys = set()
    with torch.no_grad():
        for index, (name, module) in enumerate(layers_of_model):
            shape = list(supermask.original(module).shape)
            weight_keys.add((f"{name}." if name else "") + "weight")
            kept = spec.masks.get(name)
            layers.append({"name": name, "index": index, "shape": shape, "pruned": kept is not None})
            if kept is None:
                continue
            if not isinstance(kept, torch.Tensor) or kept.dtype != torch.bool or list(kept.shape) != shape:
                _refuse(method, f"the mask of layer {name!r} must be a bool tensor of shape {shape}")
            kept = kept.detach().cpu()
            tensors[f"mask/{name}"] = pack_bits(kept)
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
    meta = {
        "format": FORMAT,
        "method": method,
        "seed": int(spec.seed),
        "weight_init": spec.weight_init,
        "events": events,
        "source_dtype": str(source_dtype).removeprefix("torch."),
        "arch": arch,
        "layers": layers,
    }
    return tensors, meta


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
    if meta.get("format") != FORMAT:
        from ptl_cli.errors import UserError

        raise UserError(
            f"{path} is not a ptl ticket ({FORMAT}); write one with `ptl export RUN --format ticket`"
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
            weight = torch.where(kept.view(shape), weight, torch.zeros((), dtype=weight.dtype))
        out[(f"{name}." if name else "") + "weight"] = weight
    return out, meta


def load_ticket(path: str | Path) -> nn.Module:
    """The plain network (no ptl wrappers) a ticket describes, in eval mode."""
    from ptl_prune.build import build_model

    state, meta = rebuild_state_dict(path)
    model = build_model(meta["arch"])
    model.load_state_dict(state, strict=True)
    return model.eval()
