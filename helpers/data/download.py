"""HTTP downloads that resume, and archive extraction that checks before it writes.

Why: COCO's train2014.zip is 13.5 GB and Colab connections drop. A download goes to
``<name>.part`` and resumes with an HTTP Range request; it is renamed only when the
byte count matches the server's. Extraction refuses absolute paths, ``..``
components and links (zip-slip), checks the total size against free disk first, and
relies on zipfile's CRC check of every member as it is read.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from ..core.artifacts import first_line
from ..core.storage import ensure_free_space

USER_AGENT = "clip-coco-lab/1.0"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed after its retries; the message names the URL and what to try."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would escape the target folder, or the archive is damaged."""


def _remote_size(url: str, timeout: float) -> int | None:
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            return int(length) if length is not None else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def download(
    url: str,
    dest: str | os.PathLike,
    expected_size: int | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    progress: bool = True,
    check_space: bool = True,
    url_setting: str = "COCO_URL",
) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``.part`` file. Skips when ``dest`` is complete. ``url_setting``:
    the setting that chose ``url`` (a failure names it)."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and (expected_size is None or dest.stat().st_size == expected_size):
        return dest
    part = dest.with_name(dest.name + ".part")
    total = expected_size or _remote_size(url, timeout)
    if check_space and total:
        have = part.stat().st_size if part.exists() else 0
        ensure_free_space(dest.parent, total - have, f"downloading {dest.name}")
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        if total is not None and have == total:
            break
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                if have and resp.status != 206:  # server ignored Range: start again
                    have = 0
                if total is None:
                    length = resp.headers.get("Content-Length")
                    total = have + int(length) if length is not None else None
                with (
                    open(part, "ab" if have else "wb") as fh,
                    tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar,
                ):
                    while block := resp.read(CHUNK):
                        fh.write(block)
                        bar.update(len(block))
            if total is None or part.stat().st_size == total:
                break
            last_error = DownloadError(f"connection closed at {part.stat().st_size:,} of {total:,} bytes")
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and total is not None and have == total:
                break
            last_error = exc
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                break  # not found / forbidden: retrying will not help
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
                raise
            last_error = exc
        if attempt < retries:
            wait = min(30.0, 0.5 * 2**attempt)
            if progress:  # a stalled network must not look like a hung cell: each failed try says so
                print(f"{dest.name}: try {attempt + 1} of {retries + 1} failed ({first_line(last_error, 100)}); trying again in {wait:g}s")
            time.sleep(wait)
    size = part.stat().st_size if part.exists() else 0
    if total is None or size != total:
        raise DownloadError(
            f"Could not download {url} ({last_error}); got {size:,} of {total or '?'} bytes. "
            f"Re-run the cell to resume where it stopped, or check the network / {url_setting}."
        )
    os.replace(part, dest)
    return dest


def check_zip(zip_path: str | os.PathLike, dest: str | os.PathLike, only: str | tuple[str, ...] | None = None,
              ) -> tuple[list[zipfile.ZipInfo], int]:  # fmt: skip
    """Refuse archives with members outside ``dest`` (absolute, ``..``, links). Returns the members (those under ``only``,
    the ones that will be written) and their total size."""
    dest = Path(dest).resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise UnsafeArchiveError(f"{zip_path} is not a valid zip ({exc}): delete it and re-run to download it again") from exc
    with zf:
        members = [m for m in zf.infolist() if only is None or m.filename.startswith(only)]
    total = 0
    for info in members:
        name = info.filename
        pure = PurePosixPath(name.replace("\\", "/"))
        is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
        if pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":") or is_link:
            raise UnsafeArchiveError(f"{zip_path}: member {name!r} would be written outside {dest}; refusing to extract")
        if not (dest / pure).resolve().is_relative_to(dest):
            raise UnsafeArchiveError(f"{zip_path}: member {name!r} escapes {dest}; refusing to extract")
        total += info.file_size
    return members, total


def extraction_marker(zip_name: str, only: str | tuple[str, ...] | None) -> str:
    """The file name that records a finished extraction of ``zip_name`` (of the members under ``only``)."""
    prefixes = (only,) if isinstance(only, str) else tuple(only or ())
    return f".extracted-{zip_name}" + "".join("-" + p.replace("/", "_") for p in prefixes)


def safe_extract(zip_path: str | os.PathLike, dest: str | os.PathLike, only: str | tuple[str, ...] | None = None,
                 progress: bool = True) -> Path:  # fmt: skip
    """Extract ``zip_path`` into ``dest`` after :func:`check_zip`; ``only`` keeps members under that prefix (or prefixes).

    A marker file records a finished extraction, so a re-run skips it; a kill midway
    re-extracts from the start (members are written through temporary names).
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / extraction_marker(Path(zip_path).name, only)
    if marker.exists():
        return dest
    members, _ = check_zip(zip_path, dest, only)
    members = [m for m in members if not m.is_dir()]
    ensure_free_space(dest, sum(m.file_size for m in members), f"extracting {Path(zip_path).name}")
    with zipfile.ZipFile(zip_path) as zf:
        for info in tqdm(members, desc=f"Extracting {Path(zip_path).name}", unit="file", disable=not progress):
            target = dest / info.filename
            if target.exists() and target.stat().st_size == info.file_size:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            try:
                with zf.open(info) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)  # zipfile verifies the CRC at the end
            except zipfile.BadZipFile as exc:
                tmp.unlink(missing_ok=True)
                raise UnsafeArchiveError(
                    f"{zip_path}: member {info.filename} is damaged ({exc}); delete the zip and re-run to download it again"
                ) from exc
            os.replace(tmp, target)
    marker.write_text("ok\n")
    return dest
