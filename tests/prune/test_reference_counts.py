"""The kept counts ``benchmarks/multicoated_reference.py`` compares: ptl's ``round(p·n)`` per coat
against the multicoated code's ``1 + floor(p·(n - 1))``. docs/prune.md claims they agree wherever
``p·n`` is whole (so the two codes can be compared bit for bit there) and are one apart elsewhere."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ptl_prune import supermask
from ptl_prune.multicoated import Multicoated

from .conftest import build

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "multicoated_reference.py"


def _reference_pruned():
    spec = importlib.util.spec_from_file_location("multicoated_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_pruned


def test_coat_counts_match_the_reference_where_p_n_is_whole_and_not_elsewhere():
    reference_pruned = _reference_pruned()
    coats = (0.5, 0.75, 0.875)  # every Conv-2 layer's n is a multiple of 16
    model = Multicoated(sparsity=coats[0], coat_sparsity=coats[1:]).prepare(build("conv2", width=0.25), 0)
    layers = list(supermask.masked_layers(model))
    assert len(layers) == 5
    for _, _, _, mask in layers:
        n = mask.scores.numel()
        assert [mask.pruned, *mask.coat_pruned] == [reference_pruned(n, p) for p in coats]
    # the default second coat on the first convolution's 144 weights: 132.65 rounds up, the
    # reference's 1 + floor(0.9212·143) = 132
    assert supermask.num_pruned(144, 0.9212) == 133
    assert reference_pruned(144, 0.9212) == 132
