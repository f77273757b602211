"""Atomic, retrying writes to ARTIFACTS_DIR.

Why: Colab kills sessions at any moment and Google Drive's FUSE mount fails now and
then with ``OSError: [Errno 5]``. Every artifact another notebook reads is therefore
written to a temporary file in the same folder and moved into place with
``os.replace``: a reader sees either the old file or the complete new one, never half
of one. Transient ``OSError``s are retried with exponential backoff.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .faults import kill_point

T = TypeVar("T")

# Errors worth retrying: I/O error (Drive's Errno 5), busy, timed out, try again.
_TRANSIENT_ERRNOS = {errno.EIO, errno.EBUSY, errno.ETIMEDOUT, errno.EAGAIN}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class DiskSpaceError(OSError):
    """Raised before a large write when the target filesystem lacks the room."""


def with_retries(fn: Callable[[], T], what: str, attempts: int = 5, base_delay: float = 0.5) -> T:
    """Call ``fn`` and retry transient OSErrors (Errno 5 etc.) with exponential backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except OSError as exc:
            if exc.errno not in _TRANSIENT_ERRNOS or attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1)
            warnings.warn(
                f"{what}: transient {exc.__class__.__name__} ({exc}); retry {attempt}/{attempts - 1} in {delay:.1f}s",
                stacklevel=2,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are ordinary files
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and not isinstance(exc, DiskSpaceError):
            raise disk_full(path) from None
        raise


def disk_full(path: Path) -> DiskSpaceError:
    """The disk filled up while writing ``path``: what is free, what to delete, and that the old version is intact."""
    try:
        free = f"{free_bytes(path.parent) / 1e9:.2f} GB free"
    except OSError:
        free = "free space unknown"
    return DiskSpaceError(
        errno.ENOSPC,
        f"No space left on the disk of {path.parent} while writing {path.name} ({free}). Nothing was replaced: the previous "
        f"{path.name}, if any, is intact. Free space there (run folders you no longer need under ARTIFACTS_DIR/runs, downloaded "
        "COCO zips, on Drive also its trash), then re-run: training resumes after the last saved epoch.",
    )


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, retrying transient errors."""
    path = Path(path)

    def write(fh: io.BufferedWriter) -> None:
        half = len(data) // 2
        fh.write(data[:half])
        fh.flush()
        kill_point(f"write:{path.name}")  # tests: die with a half-written temporary file
        fh.write(data[half:])

    with_retries(lambda: _atomic_write(path, write), f"writing {path}")
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """JSON with sorted keys and a trailing newline, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` into memory, then an atomic write: no half-written checkpoint on disk."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a tensor-only artifact safely (``weights_only=True``), with a clear error when absent."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the notebook that produces it first")
    return with_retries(lambda: torch.load(path, map_location=map_location, weights_only=True), f"reading {path}")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    return with_retries(lambda: json.loads(path.read_text(encoding="utf-8")), f"reading {path}")


def atomic_rename(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """``os.replace(src, dst)`` (atomic: ``dst`` is the old or the new file, never a part), retrying Drive's transient
    I/O errors like every write here."""
    with_retries(lambda: os.replace(src, dst), f"renaming {src} to {Path(dst).name}")
    return Path(dst)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a (large) file to ``dst`` through a temporary name, retrying transient errors."""
    src, dst = Path(src), Path(dst)

    def copy() -> None:
        _atomic_write(dst, lambda fh: _copy_into(src, fh))

    with_retries(copy, f"copying {src} to {dst}")
    return dst


def _copy_into(src: Path, fh: io.BufferedWriter) -> None:
    with open(src, "rb") as in_fh:
        shutil.copyfileobj(in_fh, fh, length=16 << 20)


def sha256_file(path: str | os.PathLike, chunk: int = 16 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the filesystem holding ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def ensure_free_space(path: str | os.PathLike, needed: int, what: str, margin: float = 1.05) -> None:
    """Stop *before* writing when ``needed`` bytes (plus a margin) will not fit under ``path``."""
    free = free_bytes(path)
    if free < needed * margin:
        raise DiskSpaceError(
            errno.ENOSPC,
            f"Not enough free disk for {what}: need about {needed / 1e9:.2f} GB under {path}, "
            f"only {free / 1e9:.2f} GB free. Free some space, point DATA_DIR/ARTIFACTS_DIR at a larger "
            f"disk, or use DATA_SOURCE='coco-subset' with fewer TRAIN_IMAGES.",
        )
