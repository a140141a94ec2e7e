"""``--dry-run``: resolve a transfer recipe into readable rows without loading anything heavy.

Every component name is looked up and its parameters are validated against the plugin's
schema (both cheap: hooks and pydantic only), so a paper-scale recipe that names weights this
machine does not have still plans, and a typo fails here rather than an hour into a run: the
plan is made before every new run too (the KD, PP and P-SSL stages load their components only
after the scratch stage has trained).
"""

from __future__ import annotations

from typing import Any

from ptl_cli import plugins
from ptl_cli.errors import UserError
from ptl_transfer import stages


def _component(
    kind: str, name: str, params: dict[str, Any], where: str, context: dict[str, Any] | None = None
) -> str:
    checked = plugins.get(kind, name).validate_params(params, where, context)
    shown = ", ".join(f"{k}={v!r}" for k, v in checked.items() if v is not None)
    return f"{name} ({shown})" if shown else name


def _check_classes(t: Any) -> None:
    """Target classes the dataset lacks, when its class count is known without its files."""
    facts = plugins.get("datasets", t.dataset).facts(t.params, "[target]")
    bad = [c for c in t.classes if facts and not 0 <= c < facts.num_classes]
    if bad:  # the words of ptl_transfer.target.build_dataset, which checks the loaded data
        raise UserError(f"[target] classes: {t.dataset} has classes 0..{facts.num_classes - 1}, not {bad[0]}")


def _target_files(t: Any) -> str | None:
    """Where the target's files are and whether they are there, for a dataset whose plugin can
    tell without reading them (``files=`` in its registration: a dataset placed by hand). Raises
    when the run cannot get them (``--download`` of a dataset nothing can download)."""
    import importlib

    from ptl_cli.data.locations import data_dir

    spec = plugins.get("datasets", t.dataset)
    ref = spec.meta.get("files")
    if not isinstance(ref, str) or ":" not in ref:
        return None
    module, _, attr = ref.partition(":")
    params = spec.validate_params(t.params, "[target]")
    return getattr(importlib.import_module(module), attr)(spec.name, params, data_dir(t.data_dir), t.download)


def _check_source_classes(s: Any) -> None:
    """Source models that both take their classes as a ``classes`` setting (a text-to-image
    generator and CLIP) must be given the same one, and models whose class counts are known
    without loading them (their plugins' ``facts``) the same count, or PCS conditions on other
    classes than C_s scores (caught here before the scratch stage trains; the built models are
    compared too)."""
    g, c = s.generator, s.classifier
    g_spec, c_spec = plugins.get("generators", g.name), plugins.get("classifiers", c.name)
    gen = g_spec.validate_params(g.params, "[source.generator]")
    cls = c_spec.validate_params(c.params, "[source.classifier]")
    if "classes" in gen and "classes" in cls and gen["classes"] != cls["classes"]:
        raise UserError(
            f"[source]: the generator's classes {_short(gen['classes'])} and the classifier's "
            f"{_short(cls['classes'])} differ; give [source.generator] and [source.classifier] the same "
            "`classes`"
        )
    g_facts = g_spec.facts(g.params, "[source.generator]")
    c_facts = c_spec.facts(c.params, "[source.classifier]")
    if g_facts and c_facts and g_facts.num_classes != c_facts.num_classes:
        from ptl_transfer.sources import class_count_mismatch

        error = class_count_mismatch(g.name, g_facts.num_classes, c.name, c_facts.num_classes)
        raise UserError(f"{error} (give both the same weights set)")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_head(r: Any) -> None:
    """KD and PP give the target network a second head: it needs an ``nn.Linear`` one. Known
    without building it for torchvision's networks (the stages used to fail after scratch)."""
    swapping = [s for s in r.stages if s in ("kd", "pp", "pp+pssl")]
    if swapping and r.model.arch.startswith("torchvision:"):
        from ptl_models.tv_catalog import lacks_linear_head

        if lacks_linear_head(r.model.arch):
            raise UserError(
                f"[model] {r.model.arch} has no nn.Linear head; stage {swapping[0]} needs one to swap "
                "(choose another architecture, or run only scratch and pssl)"
            )


def _check_world(r: Any) -> None:
    """Under torchrun, batches the processes cannot share (the PP one is met only after the
    scratch and KD stages have trained)."""
    from ptl_cli.engine.distributed import from_env, local_batch_size

    info = from_env()
    local_batch_size(r.train.batch_size, info, "train.batch_size")
    if set(r.stages) & {"pp", "pp+pssl"}:
        local_batch_size(r.pp.train.batch_size, info, "pp.train.batch_size")


def plan(recipe: Any) -> list[tuple[str, str]]:
    r = recipe
    _check_world(r)
    s, t, m = r.source, r.target, r.model
    rows: list[tuple[str, str]] = [("stages", ", ".join(r.stages))]
    for phase in stages.phases(r):
        steps = f"{phase.steps} steps" if phase.steps else "generation"
        rows.append((f"  {phase.name}", f"{steps}: {stages.describe(phase.name, r.ssl.name)}"))
    rows.append(
        (
            "source generator",
            _component("generators", s.generator.name, s.generator.params, "[source.generator]"),
        )
    )
    rows.append(
        (
            "source classifier",
            _component("classifiers", s.classifier.name, s.classifier.params, "[source.classifier]"),
        )
    )
    _check_source_classes(s)
    dataset = _component("datasets", t.dataset, t.params, "[target]")
    _check_classes(t)
    classes = f", classes {t.classes}" if t.classes else ""
    labels = f"{t.labels_per_class} labels per class" if t.labels_per_class else "every image labeled"
    rows.append(("target", f"{dataset}{classes}; {labels} (split seed {t.split_seed})"))
    files = _target_files(t)
    if files:
        rows.append(("target data", files))
    arch = _component("models", m.arch, m.params, "[model]", {"width": m.width})
    _check_head(r)
    rows.append(("target architecture", f"{arch}, width {m.width}"))
    ssl = _component("ssl", r.ssl.name, r.ssl.params, "[ssl]")
    names = set(r.stages)
    if names & {"pssl", "pp+pssl"}:
        rows.append(("SSL", f"{ssl}, B={r.train.batch_size}, μ={r.ssl.mu}"))
    o = r.train
    rows.append(
        (
            "target training",
            f"{o.steps} steps, SGD lr {o.lr} momentum {o.momentum} nesterov {o.nesterov} wd {o.weight_decay} "
            f"(none on BN/bias), cos({o.cosine_cycles:.4g}·πt/T), EMA {o.ema_decay}",
        )
    )
    if names & {"pp", "pp+pssl"}:
        p = r.pp
        size = f"{p.samples} samples, seed {p.seed}" if p.mode == "pool" else "generated each step"
        rows.append(
            ("PP", f"{p.mode}: {size}; {p.train.steps} steps, batch {p.train.batch_size}, lr {p.train.lr}")
        )
    if names & {"pssl", "pp+pssl"}:
        c = r.pcs
        top = f", top-{c.top_k}" if c.top_k else ""
        rows.append(("PCS", f"M={c.per_image} per labeled image, T={c.temperature}{top}, seed {c.seed}"))
    if "kd" in names:
        rows.append(("KD", f"{r.kd.mode}, T={r.kd.temperature}, weight {r.kd.weight}"))
    rows.append(("pools", str(r.pool.root())))
    from ptl_transfer.lanes import describe

    rows.append(("processes", describe(r)))
    c = r.compute
    rows.append(("compute", f"device {c.device}, {c.precision}, seed {r.seed}"))
    return rows
