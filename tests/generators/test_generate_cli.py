"""``ptl generate`` writes a labeled PNG grid, with soft-conditioned rows; bad input is one line."""

from __future__ import annotations

import pytest
from PIL import Image

from ptl_cli.cli import main


def _ptl(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_generate_writes_a_labeled_grid_with_soft_rows(tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = _ptl(
        "generate", "--generator", "biggan", "--classes", "0,1,3", "--soft", "1:0.5,3:0.5",
        "--per-class", "4", "--classifier", "bundled", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    assert "4 rows × 4" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert height == 4 * 58 + 2 and width > 4 * 58  # four rows of 56-px cells, label column


def test_generate_with_the_diffusers_generator(tmp_path):
    out = tmp_path / "ddpm.png"
    assert (
        _ptl("generate", "-g", "diffusers", "-p", "steps=3", "--classes", "2", "-n", "2", "--out", str(out))
        == 0
    )
    assert out.stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--soft", "1:0.5,3:0.4"), "sum to 1"),
        (("--soft", "9:1.0"), "class:weight pairs"),
        (("--classes", "7"), "not in 0..3"),  # the bundled coarse model has 4 classes
        (("-p", "truncation=2"), "truncation"),
    ],
)
def test_generate_rejects_bad_input_in_one_line(tmp_path, capsys, args, message):
    assert _ptl("generate", "-g", "biggan", "--out", str(tmp_path / "x.png"), *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
