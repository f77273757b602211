"""What each artifact was made from, as short digests: recorded when it is written, compared when it is read.

Why: a changed setting, a rebuilt cache or a re-drawn split used to be combined silently with a run made
before the change (a 64 px run scored on 96 px images, a model scored against another text space, test
images that had picked the best epoch). The chain is

    raw data -> splits.json, image cache, caption caches -> run -> evaluations -> ablation, report

and every link records the digests of the links it was made from:

- ``splits.json``: ``source``, the annotation files' sha256 and the list of image files (id, name, size);
- the image cache: a CRC32 per image in each shard's index, so the digest of any set of images is a
  hash of their (id, CRC32, length) rows, computed from the index in milliseconds, never by rehashing
  the 2.5 GB of shards;
- the caption caches: the text model, caption ids and caption texts of the rows a run uses;
- a run (``checkpoint.pt``, ``best.pt``, ``metrics.json``): :func:`run_inputs`;
- an evaluation: the run's inputs plus the digests of what it scored.

A reader compares stored digests with :func:`check_inputs`; a mismatch is a :class:`ProvenanceMismatch`
that names both artifacts, what differs, and the notebook or setting that fixes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .artifacts import ArtifactError
from .lab import ENCODING


class ProvenanceMismatch(ArtifactError):
    """Two artifacts that do not belong together: one was made from inputs the other no longer matches."""


def digest(value: Any) -> str:
    """16 hex digits of the sha256 of ``value`` as canonical JSON (plain types) or raw bytes."""
    data = value if isinstance(value, bytes) else json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with ``seal``: the digest of the rest, so that a hand edit (or a merge of two versions) is noticed."""
    body = {k: v for k, v in record.items() if k != "seal"}
    return {**body, "seal": digest(body)}


def is_sealed(record: dict[str, Any]) -> bool:
    """Whether ``record`` carries its seal and the seal matches the rest. A record without one is not sealed: every
    record the kit writes is sealed, so a missing seal means a tool or a hand removed it. The seal guards against
    accidents (an edit, a merge, a file from elsewhere), not a person forging on purpose (docs/artifacts.md)."""
    return "seal" in record and record.get("seal") == digest({k: v for k, v in record.items() if k != "seal"})


# A local text tower is known by its content, not its path: the files that make its weights, config and tokenizer.
TOWER_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")
TOWER_DIGEST_FILE = ".clip_lab_tower_digest.json"  # the digest of the folder state it was computed for (a memo)
_TOWER_IDS: dict[tuple[Any, ...], str] = {}


def text_tower_id(name: str) -> str:
    """What identifies a text tower: a hub id as it is; a local folder (``save_pretrained``) as ``local:<digest>`` of its
    weight, config and tokenizer files, so that a folder overwritten in place with another tower is another tower, and
    the same tower under another path is the same.

    Computed once per folder state: the files' names, sizes and modification times select a memo (in this process,
    and in a small file in the folder when it is writable), never by rehashing the weights on every read.
    """
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return name
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in TOWER_FILE_SUFFIXES and p.name != TOWER_DIGEST_FILE)
    stats = [p.stat() for p in files]
    state = tuple((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns) for p, st in zip(files, stats))
    key = (str(folder.resolve()), state)
    if key in _TOWER_IDS:
        return _TOWER_IDS[key]
    memo = folder / TOWER_DIGEST_FILE
    try:
        stored = json.loads(memo.read_text())
        known = stored["id"] if stored.get("state") == [list(s) for s in state] else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        known = None
    if known is None:
        h = hashlib.sha256()
        for path, (relative, size, _) in zip(files, state):
            h.update(f"{relative}:{size}:".encode())
            with path.open("rb") as f:
                for block in iter(lambda f=f: f.read(1 << 22), b""):
                    h.update(block)
        known = f"local:{h.hexdigest()[:16]}"
        try:
            memo.write_text(json.dumps({"id": known, "state": state}))
        except OSError:
            pass  # a read-only folder (a Kaggle input): computed again next time
    _TOWER_IDS[key] = known
    return known


def tower_of(text: dict[str, Any]) -> str:
    """The text tower a caption cache was encoded by: its ``model_id`` (a caption cache of an older kit: its name)."""
    return str(text.get("model_id", text["model"]))


def source_record(tables: dict[str, Any], file_bytes: dict[str, dict[int, int]]) -> dict[str, dict[str, Any]]:
    """Per COCO folder: the sha256 of its caption file and a digest of its usable images (id, file name, size); and
    ``synthetic: True`` where the caption file says it was generated (real COCO's record is unchanged by that key)."""
    out: dict[str, dict[str, Any]] = {}
    for folder, table in tables.items():
        sizes = file_bytes.get(folder, {})
        files = sorted((i, name, sizes.get(i, -1)) for i, name in table.image_files.items())
        out[folder] = {"annotations_sha256": table.annotations_sha256, "images": digest(files)}
        if getattr(table, "synthetic", False):
            out[folder]["synthetic"] = True
    return out


SYNTHETIC_WORDS = "SYNTHETIC DATA"  # the mark on every figure, table and report made from generated images


def is_synthetic(source: dict[str, Any] | None) -> bool:
    """Whether a ``source`` record (splits.json's, a cache's) names generated data: its provenance, not a setting."""
    return any(isinstance(part, dict) and part.get("synthetic") is True for part in (source or {}).values())


def synthetic_artifacts(path: str | Path) -> bool:
    """Whether the ARTIFACTS_DIR holding ``path`` (the nearest folder above it with a ``splits.json``) was made from
    synthetic data. A figure, CSV or report knows what it shows from where it is written, so no caller can forget it."""
    path = Path(path)
    for folder in (path, *path.parents):
        record_path = folder / "splits.json"
        if record_path.is_file():
            try:
                return is_synthetic(json.loads(record_path.read_text()).get("source"))
            except (OSError, ValueError, AttributeError):
                return False  # a damaged splits.json is reported by its own reader
    return False


def splits_digest(record: dict[str, Any]) -> str:
    """The identity of a ``splits.json``: its protocol, its five id lists and the source it was drawn from."""
    keys = ("protocol", "train", "val", "test", "restval", "source")
    return digest({k: record.get(k) for k in keys})


def captions_digest(text: dict[str, Any], image_ids: list[int] | set[int]) -> str:
    """The text model, caption ids and caption texts of the captions of ``image_ids`` in a caption cache.

    Equal digests mean the same captions encoded by the same tower and the same caption-encoding cell (notebook 01's, as
    the cache records it; a cache of an older kit recorded none): the same text space for those images.
    """
    wanted = torch.tensor(sorted(image_ids), dtype=torch.int64)
    rows = torch.isin(text["image_ids"], wanted).nonzero().flatten()
    order = rows[torch.argsort(text["caption_ids"][rows])]
    h = hashlib.sha256(tower_of(text).encode())  # the tower by its content
    h.update(text["caption_ids"][order].numpy().tobytes())
    h.update("\n".join(text["captions"][r] for r in order.tolist()).encode())
    encoding = (text.get("lab_code") or {}).get(ENCODING)
    if encoding is not None:
        h.update(encoding.encode())
    return h.hexdigest()[:16]


def images_digest(rows: np.ndarray, image_size: int, quality: int) -> str:
    """Digest of cached images from their index rows ``[n, 2]`` (CRC32, length), sorted by image id."""
    h = hashlib.sha256(f"{image_size}:{quality}:".encode())
    h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def run_inputs(splits: str, cache: Any, train_text: dict[str, Any], val_text: dict[str, Any],
               train_ids: list[int], val_ids: list[int]) -> dict[str, Any]:  # fmt: skip
    """What a run trains and selects on: the splits (their digest), the train and val images, and their captions."""
    return {
        "splits": splits,
        "image_size": cache.image_size,
        "text_model": tower_of(train_text),
        "train_images": cache.digest(train_ids),
        "val_images": cache.digest(val_ids),
        "train_captions": captions_digest(train_text, train_ids),
        "val_captions": captions_digest(val_text, val_ids),
    }


INPUT_NAMES = {
    "splits": "splits.json (the split lists)",
    "image_size": "the image cache's image size",
    "text_model": "the caption caches' text model",
    "train_images": "the cached train images",
    "val_images": "the cached val images",
    "train_captions": "train_text_embeds.pt (the train captions)",
    "val_captions": "val_text_embeds.pt (the val captions)",
}


def differences(stored: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between two input records, in words (a record of an older kit version: everything)."""
    if not stored:
        return ["it records no input digests (made by an older version of the kit)"]
    return [
        f"{INPUT_NAMES.get(k, k)}: {stored.get(k)!r} then, {current.get(k)!r} now"
        for k in current
        if k in INPUT_NAMES and stored.get(k) != current[k]
    ]


def check_sources(splits_source: dict[str, Any] | None, cache_parts: dict[str, Any], caption_caches: dict[str, dict[str, Any]],
                  where: str) -> None:  # fmt: skip
    """Refuse data artifacts made from different COCO files: every image-cache part and caption cache must record the
    source that ``splits.json`` was drawn from (a cache copied in from another project has the same ids, not the same
    images or captions). Checked by a new run before its first step and by 03 before it scores: from stored records."""
    if not splits_source:
        raise ProvenanceMismatch(f"splits.json in {where} records no source (an older kit): re-run 01_dataset_prep.ipynb")
    problems = []
    for folder, part in cache_parts.items():
        if part.get("source") is None:
            problems.append(f"the image cache's {folder} part records no source (an older kit)")
        elif part["source"] != splits_source.get(folder):
            problems.append(f"the image cache's {folder} images were cached from other files than splits.json was drawn from")
    for name, (folder, text) in caption_caches.items():
        if (text.get("config") or {}).get("source") != splits_source.get(folder):
            problems.append(f"{name} was encoded from another caption file than splits.json was drawn from")
    if problems:
        raise ProvenanceMismatch(
            f"The data artifacts in {where} do not belong together: {'; '.join(problems)}. A cache copied in from another "
            "project has the same image ids but not the same images or captions. Re-run 01_dataset_prep.ipynb here: it "
            "rebuilds what does not match (and records the sources of an older cache in seconds)."
        )


def check_inputs(stored: dict[str, Any] | None, current: dict[str, Any], artifact: str, against: str, fix: str) -> None:
    """Raise :class:`ProvenanceMismatch` when ``artifact`` (its record ``stored``) was made from other inputs
    than ``against`` (``current``): both named, the differences listed, ``fix`` said."""
    diff = differences(stored, current)
    if diff:
        raise ProvenanceMismatch(f"{artifact} was made from other data than {against}: {'; '.join(diff)}. {fix}")
