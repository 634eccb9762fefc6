"""The look shared by every figure: journal column widths, one colour per meaning, fonts,
and one way to save (PNG at 200 dpi and SVG, byte-stable across reruns).

Figures are built without pyplot (`new_figure`): nothing enters pyplot's global figure
list, so there is nothing to close and nothing leaks between calls. Sizes fit a journal
column (3.5 in single, 7 in double), every font is at least 9 pt, and colours come from
the Okabe-Ito palette (safe for colour-vision deficiency, readable in greyscale).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

from leukolearn.files import atomic_write

SINGLE_COLUMN_IN = 3.5
DOUBLE_COLUMN_IN = 7.0
PNG_DPI = 200

# Okabe-Ito colours, one meaning each across all figures.
COLORS = {
    "ours": "#0072B2",  # blue: this reproduction (boxes, mean ROC, training loss)
    "val": "#E69F00",  # orange: validation loss
    "paper": "#D55E00",  # vermillion: values reported by the paper; best-epoch marker
    "chance": "0.45",
    "fold": "0.72",
}

RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.8,
    "lines.linewidth": 1.5,
    "svg.hashsalt": "leukolearn",  # stable ids in the SVG, so reruns give identical files
}


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """Write `fig` to out_dir/stem.png (200 dpi) and out_dir/stem.svg; return both paths."""
    if not stem or Path(stem).name != stem:
        raise ValueError(f"stem must be a bare file name without a folder, got {stem!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, metadata in (("png", None), ("svg", {"Date": None})):
        with mpl.rc_context(RC):
            paths.append(atomic_write(out_dir / f"{stem}.{fmt}", lambda tmp: fig.savefig(
                tmp, format=fmt, dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.03,
                metadata=metadata, facecolor="white")))
    return paths
