"""Every run records what made it; ``runs show`` prints it, ``runs compare`` flags differences, and
a run whose plugin is gone names the distribution to install."""

from __future__ import annotations

import json
import shutil

import torch

from ptl_cli import plugins
from ptl_cli.runs import Run


def test_a_run_records_versions_device_cpu_kernels_and_its_plugins(
    cli, show, demo_site, one_thread, tmp_path, monkeypatch
):
    monkeypatch.setenv("MKL_CBWR", "AVX2")  # a kernel knob (read by MKL at its start: recorded only)
    run = tmp_path / "run"
    code, _, err = cli("demo", "--out", run, "--quiet")
    assert code == 0, err
    made = show(run)["provenance"]
    assert made["ptl"] and made["torch"] == torch.__version__
    assert made["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and made["threads"] == 1
    assert made["device"].startswith("cpu") and made["cuda"] == torch.version.cuda
    assert made["env"] == {"OMP_NUM_THREADS": "1", "MKL_CBWR": "AVX2"}
    used = {(p["kind"], p["name"]): (p["distribution"], p["version"]) for p in made["plugins"]}
    assert used == {
        ("workflows", "demo"): ("ptl-demo", "0.0.1"),
        ("datasets", "fashion-pack"): ("ptl", made["ptl"]),
    }

    code, out, _ = cli("runs", "show", run)
    assert code == 0
    assert f"CPU kernels {made['cpu_capability']}, 1 threads" in out
    assert "workflow demo: plugin ptl-demo from ptl-demo 0.0.1" in out


def test_compare_flags_runs_made_by_other_software_or_hardware(cli, demo_site, one_thread, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        assert cli("demo", "--out", run, "--quiet")[0] == 0
    code, out, _ = cli("runs", "compare", a, b, "--json", "--plot", tmp_path / "c.png")
    assert code == 0 and json.loads(out)["provenance_differences"] == {}  # same process, same everything
    # b as if made elsewhere: another CPU kernel level and thread count
    other = Run(b).info()["provenance"] | {"cpu_capability": "AVX2", "threads": 2}
    Run(b).update(provenance=other)
    code, out, _ = cli("runs", "compare", a, b, "--json", "--plot", tmp_path / "d.png")
    differs = json.loads(out)["provenance_differences"]
    assert differs["cpu_capability"][1] == "AVX2" and differs["threads"] == [1, 2]
    code, out, _ = cli("runs", "compare", a, b, "--plot", tmp_path / "e.png")
    assert "made by different software or hardware (cpu_capability, threads)" in " ".join(out.split())


def test_a_run_whose_plugin_is_gone_names_the_distribution_to_install(cli, demo_site, one_thread, tmp_path):
    run = tmp_path / "run"
    code, _, _ = cli("demo", "--out", run, "--quiet", "--set", "train.stop_at=4")  # interrupted
    assert code == 130
    code, out, _ = cli("runs", "show", run)  # and where a resume would continue: its checkpoint
    assert "at: train step 4" in out and "resume continues from: step 4 (step-000000004.pt)" in out
    shutil.rmtree(demo_site / "ptl_demo-0.0.1.dist-info")  # pip uninstall ptl-demo
    plugins.reset()
    code, _, err = cli("resume", run)
    message = " ".join(err.split())
    assert code == 2 and "Traceback" not in err
    assert "unknown workflow 'demo'" in message and "from the distribution ptl-demo 0.0.1" in message
    assert "pip install 'ptl-demo==0.0.1'" in message
