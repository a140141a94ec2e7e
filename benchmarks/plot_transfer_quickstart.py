"""Draw the transfer quickstart's recorded 3-seed results as ``docs/transfer_quickstart.png``.

Nothing is trained: the numbers are read from the two "seeds 0 / 1 / 2" tables under
"### Quickstart, 3 seeds" in docs/transfer.md (written by ``benchmarks/transfer_quickstart_seeds.py``),
so the picture README shows and the tables it summarizes cannot disagree. Each stage gets its
three seeds as dots and its mean ± std as a marker, the BigGAN and DDPM generators side by side,
and the real-unlabeled-images ceiling as a line.

    python benchmarks/plot_transfer_quickstart.py [--out docs/transfer_quickstart.png]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "### Quickstart, 3 seeds"
#: The tables' stage wording -> the short names the CLI prints.
STAGES = {
    "scratch": "scratch",
    "KD": "kd",
    "PP, then": "pp",
    "P-SSL (": "pssl",
    "PP + P-SSL": "pp+pssl",
    "ceiling": "ceiling",
}


def tables(doc: Path) -> list[dict[str, list[float]]]:
    """Each "seeds 0 / 1 / 2" table of the section as {stage: [seed 0, seed 1, seed 2]}."""
    text = doc.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n#### ", start)
    found: list[dict[str, list[float]]] = []
    current: dict[str, list[float]] | None = None
    for line in text[start:end].splitlines():
        if line.startswith("| stage |") and "seeds 0 / 1 / 2" in line:
            current = {}
            found.append(current)
            continue
        if current is None or not line.startswith("| ") or line.startswith("|---"):
            if not line.startswith("|"):
                current = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        label = cells[0].replace("*", "")
        name = next((short for words, short in STAGES.items() if label.startswith(words)), None)
        if name is None:
            raise SystemExit(f"{doc}: unknown stage row {label!r}")
        current[name] = [float(x) for x in re.findall(r"\d\.\d+", cells[2])]
    if len(found) != 2:
        raise SystemExit(f"{doc}: expected two per-seed tables under {SECTION!r}, found {len(found)}")
    return found


def plot(biggan: dict[str, list[float]], ddpm: dict[str, list[float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    stages = ["scratch", "kd", "pp", "pssl", "pp+pssl"]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for shift, (label, data, color) in enumerate(
        [("BigGAN source", biggan, "tab:blue"), ("DDPM source", ddpm, "tab:orange")]
    ):
        for i, stage in enumerate(stages):
            seeds = np.array(data[stage]) * 100
            x = i + (shift - 0.5) * 0.3
            ax.errorbar(
                x, seeds.mean(), seeds.std(ddof=1), color=color, marker="D", markersize=6, capsize=4,
                label=label if i == 0 else None,
            )  # fmt: skip
            ax.scatter([x + 0.07] * len(seeds), seeds, color=color, s=10, alpha=0.6, zorder=3)
    ceiling = np.array(biggan["ceiling"]) * 100
    ax.axhline(ceiling.mean(), color="grey", linestyle="--", linewidth=1)
    words = "ceiling: FixMatch on real unlabeled images"
    ax.text(-0.4, ceiling.mean() + 0.15, words, fontsize=8, color="grey")
    ax.set_xticks(range(len(stages)), stages)
    ax.set_ylim(63.5, 70.5)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("ptl transfer quickstart: mean ± std over 3 seeds (dots: each seed)", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "transfer.md")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "transfer_quickstart.png")
    args = parser.parse_args()
    biggan, ddpm = tables(args.doc)
    plot(biggan, ddpm, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
