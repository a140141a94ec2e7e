"""The results a reader of a transfer run sees: what was compared, stages apart from the phases
they share, times as a person reads them, and one honest line on what one seed can say."""

from __future__ import annotations

import io

from rich.console import Console

from ptl_cli import plugins, recipes
from ptl_cli.engine.report import print_results, write_report
from ptl_cli.runs import Run
from ptl_transfer import results


def finished_run(tmp_path, accuracies: dict[str, float]) -> Run:
    """A completed run directory with the quickstart's resolved recipe and these stage accuracies."""
    data, _ = recipes.load_raw("transfer-quickstart")
    data = recipes.validate(data, plugins.get("workflows", "transfer").params, "test").data
    run = Run.create("transfer", "transfer-quickstart", data, out=str(tmp_path / "run"))
    metrics = {f"{k.replace('+', '_')}_test_acc": v for k, v in accuracies.items()}
    metrics |= {"scratch_seconds": 116.055, "pp_pool_seconds": 3.2, "pp_pretrain_seconds": 1075.0}
    metrics |= {"pcs_pool_seconds": 12.0, "pp_seconds": 40.0, "labeled": 80}
    run.set_status("completed", metrics=metrics)
    return run


def test_the_title_names_what_was_compared_and_shared_phases_stand_apart(tmp_path):
    run = finished_run(tmp_path, {"scratch": 0.6388, "pp": 0.6512})
    shown = results.results(run)
    assert shown.title.splitlines() == [
        "Transfer to fashion-pack (8 classes, 10 labels per class; 80 labeled images), conv2 (width 0.5), "
        "seed 0",
        "source models: generator biggan, classifier bundled; SSL algorithm fixmatch",
    ]
    stages_table, shared = shown.tables
    assert [r[0] for r in stages_table.rows] == ["scratch", "pp"]  # stages only
    assert stages_table.rows[0][2:] == ["63.9%", "", "1m 56s"]
    assert stages_table.rows[1][2:] == ["65.1%", "+1.2", "40s"]
    assert [r[0] for r in shared.rows] == ["pp-pool", "pp-pretrain", "pcs-pool", "total"]
    assert [r[2] for r in shared.rows] == ["3.2s", "17m 55s", "12s", "20m 46s"]

    console = Console(file=io.StringIO(), width=200)
    print_results(console, shown)
    text = console.file.getvalue()
    assert "phases the stages share" in text and "C_s" not in text and "K_s" not in text
    write_report(run, shown)
    report = (run.path / "report.md").read_text()
    assert "**Transfer to fashion-pack" in report and "| pp-pretrain |" in report and "ptl sweep" in report


def test_the_line_under_the_table_says_whether_one_seed_can_tell(tmp_path):
    close = results.results(
        finished_run(tmp_path / "a", {"scratch": 0.6388, "pssl": 0.6613, "pp+pssl": 0.6462})
    )
    verdict, command = close.notes
    assert verdict.startswith("Best: pssl at 66.1%, 1.5 points above pp+pssl and +2.2 over scratch.")
    assert "One seed cannot separate differences of this size" in verdict
    run = tmp_path / "a" / "run"
    assert command.strip() == (
        f"ptl sweep --recipe {run}/recipe.toml --seeds 0,1,2,3,4 --out run-seeds && ptl sweep show run-seeds"
    )
    tied = results.results(finished_run(tmp_path / "c", {"scratch": 0.664, "kd": 0.66625, "pp": 0.666}))
    assert tied.notes[0].startswith("Best: kd and pp, tied at 66.6%, 0.2 points above scratch. One seed")
    clear = results.results(finished_run(tmp_path / "b", {"scratch": 0.55, "pp+pssl": 0.71}))
    assert clear.notes[0].startswith("Best: pp+pssl at 71.0%, 16.0 points above scratch.")
    assert "This is one seed" in clear.notes[0] and "cannot separate" not in clear.notes[0]


def test_a_pool_taken_from_the_cache_says_so_instead_of_0s(tmp_path):
    run = finished_run(tmp_path, {"scratch": 0.6388, "pp": 0.6512})
    info = run.info()
    run.set_status("completed", metrics={**info["metrics"], "pp_pool_seconds": 0.0})
    shared = results.results(run).tables[1]
    assert [r[2] for r in shared.rows[:3]] == ["cached", "17m 55s", "12s"]  # pcs-pool: made by this run
