"""The report's building blocks: a figure, a section, and the small formatters of its text.

Every value that comes from a run (names, paths, config values, errors) goes through `esc`
before it joins the page; strings built here from trusted pieces are HTML already.
"""
from __future__ import annotations

import datetime as _dt
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReportFigure:
    anchor: str
    title: str  # HTML (trusted: built here)
    caption: str  # HTML (trusted: built here)
    png: bytes
    source: str  # where it came from, plain text

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, from the PNG header."""
        return int.from_bytes(self.png[16:20], "big"), int.from_bytes(self.png[20:24], "big")


@dataclass
class Section:
    anchor: str
    title: str
    body: str = ""  # HTML
    figures: list[ReportFigure] = field(default_factory=list)


def png_bytes(fig) -> bytes:
    """A matplotlib Figure as PNG bytes, exactly as `save_figure` would write it."""
    import matplotlib as mpl

    from leukolearn.report.style import PNG_DPI, RC

    buf = io.BytesIO()
    with mpl.rc_context(RC):
        fig.savefig(buf, format="png", dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.03,
                    facecolor="white")
    return buf.getvalue()


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def para(inner: str) -> str:
    return f"<p>{inner}</p>"


def fmt(v: float, digits: int = 3) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def pm(mean: float, sd: float) -> str:
    """Mean ± s.d. to three decimals; the mean alone when there is no s.d. (one job)."""
    if mean is None or not math.isfinite(mean):
        return "–"
    return fmt(mean) if sd is None or not math.isfinite(sd) else f"{mean:.3f} ± {sd:.3f}"


def fmt_n(v: float) -> str:
    """An image count from the learning curve, rounded up (a fraction of an image is one)."""
    return "∞" if not math.isfinite(v) else f"{math.ceil(v):,}"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def when(iso: str) -> str:
    """An ISO time stamp from the store as "YYYY-MM-DD HH:MM UTC" (unparsable: as stored)."""
    try:
        t = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc)
    return f"{t:%Y-%m-%d %H:%M} UTC"


def rel_path(path: Path, run: Path) -> str:
    """`path` relative to the run directory; one outside it (the shortcut figure beside a
    variant run) as ../name."""
    try:
        return str(path.resolve().relative_to(run.resolve()))
    except ValueError:
        return str(Path("..") / path.name)
