"""``ptl list ssl``: every registered algorithm, each with a one-line description that names its
paper, so users choose from the list (issue 24's target: USB's 17 algorithms plus supervised)."""

from __future__ import annotations

import json
import re

from ptl_cli import plugins
from ptl_cli.testing import run_ptl

#: "Name (Authors, [venue ]year): what it does" -- e.g. "CoMatch (Li et al., ICCV 2021): ...".
PAPER = re.compile(r"^(?P<name>[^():]+) \((?P<authors>[^(),]+), (?:[^(),]+ )?(?P<year>(?:19|20)\d\d)\): \S")
#: Registered algorithms that are not from a paper.
BASELINES = {"supervised"}


def _listed() -> list[dict]:
    result = run_ptl("list", "ssl", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_lists_every_registered_algorithm_with_its_paper():
    listed = _listed()
    registry = plugins.manager().registry("ssl")
    assert [row["name"] for row in listed] == [spec.name for spec in registry]
    assert len(listed) == len(list(registry)) and {row["name"] for row in listed} >= BASELINES
    for row in listed:
        description = row["description"]
        assert "\n" not in description, row["name"]
        if row["name"] not in BASELINES:
            assert PAPER.match(description), f"{row['name']}: no paper in {description!r}"


def test_the_table_shows_one_row_per_algorithm():
    """The human-readable table: a row starting with each name, its description beside it."""
    result = run_ptl("list", "ssl", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ ") and "│ ssl " in line]
    names = [row.split("│")[1].strip() for row in rows]
    listed = _listed()
    assert names == [row["name"] for row in listed]
    for row, item in zip(rows, listed, strict=True):
        first_words = " ".join(item["description"].split()[:2])
        assert first_words in row, (first_words, row)


def test_the_built_in_algorithms_are_usbs_17_plus_supervised(reference):
    """ptl's names are USB's (``semilearn/algorithms/<name>``), so a USB user finds theirs, and
    the built-in plugin ships every one of them (issue 24's target)."""
    usb = {
        path.name
        for path in reference.package_dir("semilearn").joinpath("algorithms").iterdir()
        if path.is_dir() and path.name not in ("hooks", "utils", "fullysupervised", "__pycache__")
    }
    assert len(usb) == 17
    built_in = {spec.name for spec in plugins.manager().registry("ssl") if spec.plugin == "ssl"}
    assert built_in == usb | BASELINES, built_in ^ (usb | BASELINES)
