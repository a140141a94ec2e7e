"""Which phases a transfer run executes, in what order, and where each one's steps are counted.

The user picks *stages* (``scratch, kd, pp, pssl, pp+pssl``: the rows of the results table);
a run executes *phases*: the stages plus what they need (the PP pool and pre-training before
``pp`` and ``pp+pssl``, the PCS pool before ``pssl`` and ``pp+pssl``). Each phase has a fixed
salt, so a stage draws the same random numbers whether it runs alone or after the others, and
a global step offset, so checkpoint files of successive phases sort in execution order.
Pure Python: ``--dry-run`` uses it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Every phase in execution order, with its fixed salt (never renumber: it seeds the phase).
PHASES: dict[str, int] = {
    "scratch": 1,
    "kd": 2,
    "pp-pool": 3,
    "pp-pretrain": 4,
    "pp": 5,
    "pcs-pool": 6,
    "pssl": 7,
    "pp+pssl": 8,
}

#: The stages a user can ask for, in execution order: the phases that train a target network and
#: report a test accuracy (the recipe's ``stages`` are checked against these).
STAGES: tuple[str, ...] = ("scratch", "kd", "pp", "pssl", "pp+pssl")

#: Each phase in plain words (the results table, ``--dry-run``); docs/transfer.md gives the paper's
#: names (C_s, K_s, PCS) beside them.
DESCRIPTIONS = {
    "scratch": "labeled images only",
    "kd": "+ distillation from the source classifier",
    "pp": "pre-trained on generated images, then fine-tuned",
    "pssl": "+ generated look-alikes as unlabeled data (SSL)",
    "pp+pssl": "pre-trained, then SSL on look-alikes: the full method",
    "pp-pool": "generate images of the source classes",
    "pp-pretrain": "pre-train on them (used by pp, pp+pssl)",
    "pcs-pool": "generate look-alikes of the labeled images (used by pssl, pp+pssl)",
}


def describe(name: str, ssl: str | None = None) -> str:
    """``name``'s plain words, with the SSL algorithm's name in place of "SSL" when it is known
    (the results table and the plan say "fixmatch on look-alikes")."""
    words = DESCRIPTIONS[name]
    return words.replace("(SSL)", f"({ssl})").replace("SSL on", f"{ssl} on") if ssl else words


@dataclass(frozen=True)
class Phase:
    name: str
    salt: int
    steps: int
    offset: int  # global step at which the phase starts (checkpoint file numbering)


def metric_key(stage: str, quantity: str = "test_acc") -> str:
    """The run's final-metrics key of ``quantity`` for ``stage``: ``("pp+pssl", "seconds")`` ->
    ``pp_pssl_seconds`` (``test_acc``, ``seconds`` and ``pseudo_label_max_share`` are reported)."""
    return f"{stage.replace('+', '_').replace('-', '_')}_{quantity}"


def phases(recipe: Any) -> list[Phase]:
    """The phases ``recipe`` runs, in order, with their step counts and offsets."""
    wanted = set(recipe.stages)
    needed = set(wanted)
    if wanted & {"pp", "pp+pssl"}:
        needed.add("pp-pretrain")
        if recipe.pp.mode == "pool":
            needed.add("pp-pool")
    if wanted & {"pssl", "pp+pssl"} and recipe.ssl.unlabeled == "pseudo":
        needed.add("pcs-pool")  # (the real-images control needs no pool)
    steps = {name: (recipe.train.steps if name in STAGES else 0) for name in PHASES}
    steps["pp-pretrain"] = recipe.pp.train.steps
    out, offset = [], 0
    for name, salt in PHASES.items():
        if name in needed:
            out.append(Phase(name, salt, steps[name], offset))
            offset += steps[name]
    return out


def final_stage(stages: list[str]) -> str:
    """The stage whose accuracy is the run's ``test_acc``: the most complete method run."""
    for name in ("pp+pssl", "pssl", "pp", "kd", "scratch"):
        if name in stages:
            return name
    raise ValueError("no stage")
