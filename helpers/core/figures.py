"""Report-ready figures, saved atomically as PNG.

Why: students paste these into a lab report, so they get titles, readable fonts and
150 dpi; and a figure that another notebook (05) links to must never be half-written.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

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
    """Save as PNG atomically; the run name (from the path, or ``footer``) goes in small print at the bottom right."""
    footer = footer or footer_for(path)
    if footer and not any(t.get_text() == footer for t in fig.texts):
        fig.text(0.995, 0.005, footer, ha="right", va="bottom", fontsize=6, color="0.4")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())
