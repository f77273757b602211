"""Report-ready figures, saved atomically as PNG.

Why: students paste these into a lab report, so they get titles, readable fonts and
150 dpi; and a figure that another notebook (05) links to must never be half-written.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

from .provenance import SYNTHETIC_WORDS, synthetic_artifacts
from .storage import atomic_write_bytes


def wrap_caption(text: str, width: int = 30, lines: int = 3) -> str:
    """At most ``lines`` lines of ``width`` characters, broken between words; "…" marks a cut, never mid-word."""
    wrapped = textwrap.wrap(text, width) or [""]
    if len(wrapped) <= lines:
        return "\n".join(wrapped)
    last = textwrap.shorten(" ".join(wrapped[lines - 1 :]), width=width, placeholder=" …")
    return "\n".join([*wrapped[: lines - 1], last])


def footer_for(path: str | Path) -> str | None:
    """``.../runs/<name>/...`` -> ``"run <name>"``: a figure pasted alone still says which run made it."""
    parts = Path(path).parts
    return f"run {parts[parts.index('runs') + 1]}" if "runs" in parts[:-1] and parts.index("runs") + 2 < len(parts) else None


def save_figure(fig: Any, path: str | Path, dpi: int = 150, footer: str | None = None) -> Path:
    """Save as PNG atomically; the run name (from the path, or ``footer``) goes in small print at the bottom right.

    A figure of an ARTIFACTS_DIR made from synthetic data (its splits.json says so) carries a large diagonal mark, so
    a demo figure pasted into a report cannot pass for COCO's."""
    footer = footer or footer_for(path)
    synthetic = synthetic_artifacts(Path(path).parent)
    if synthetic:
        mark_synthetic(fig)
        footer = f"{SYNTHETIC_WORDS} · {footer}" if footer else SYNTHETIC_WORDS
    if footer and not any(t.get_text() == footer for t in fig.texts):
        fig.text(0.995, 0.005, footer, ha="right", va="bottom", fontsize=6, color="0.4")
    buf = io.BytesIO()
    data = {"Description": f"{SYNTHETIC_WORDS}: generated images, not MS COCO"} if synthetic else {}  # for a program
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata=data)
    return atomic_write_bytes(path, buf.getvalue())


def mark_synthetic(fig: Any) -> None:
    """A translucent red "SYNTHETIC DATA" across the figure (once), over the axes and images but leaving them legible."""
    if any(getattr(t, "_clip_lab_mark", False) for t in fig.texts):
        return
    mark = fig.text(0.5, 0.5, f"{SYNTHETIC_WORDS}\nnot MS COCO", ha="center", va="center", rotation=25, fontsize=28,
                    color="tab:red", alpha=0.35, fontweight="bold", zorder=100)  # fmt: skip
    mark._clip_lab_mark = True
