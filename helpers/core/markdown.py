"""Every Markdown table the kit generates, written one way: cell text escaped, columns aligned as asked.

Why: a cell holding ``|`` (CLIP's ``<|startoftext|>`` token, a caption, a path) splits into two cells,
and GFM renderers silently drop the cells past the header's count. Escaped as ``\\|``, a pipe stays
text, also inside a code span (GFM unescapes table pipes before it parses the cell).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    """One cell's Markdown source: ``|`` escaped, line breaks (which would end the row) as spaces."""
    return " ".join(str(value).split("\n")).replace("|", "\\|")


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]], numeric: Sequence[int] | range = ()) -> str:
    """A GFM table; ``numeric`` columns are right-aligned. Every row must have the header's width."""
    width = len(header)
    for row in rows:
        if len(row) != width:
            raise ValueError(f"a table row has {len(row)} cells, its header {width}: {list(row)!r}")
    align = ["---:" if k in numeric else "---" for k in range(width)]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cell(c) if lines_k != 1 else c for c in line) + " |" for lines_k, line in enumerate(lines))


def duration(seconds: float) -> str:
    """``"0:07"``, ``"12:41"``, ``"1:03:20"``: a time a person reads (m:ss, or h:mm:ss from an hour), never "0.0 min"."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def size(n_bytes: float) -> str:
    """``"2.4 GiB"``, ``"3.1 MiB"``: a size a person reads, in binary units like every memory figure of the kit."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes:.0f} bytes"
