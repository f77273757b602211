"""Notebook 01's steps: find usable images, split, cache images, cache captions.

Each step writes one documented artifact into ARTIFACTS_DIR (docs/artifacts.md) and
skips itself when that artifact is already there and was built from the same inputs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core import markdown
from ..core.config import Config
from ..core.env import Paths
from ..core.folderlock import FolderLock
from ..core.lab import DATA, ENCODING
from ..core.provenance import source_record, splits_digest, text_tower_id
from ..core.storage import atomic_torch_save, atomic_write_json, read_json, torch_load
from .coco import CaptionTable, DataError, check_layout, load_captions
from .dataset import load_text_embeds
from .image_cache import CachePart, build_image_cache, failures, restore_cache
from .splits import Splits, load_splits, make_splits  # noqa: F401  (load_splits: notebook 01's readers)
from .text_tower import EncodeStats, encode_texts, load_text_tower


@dataclass
class CocoData:
    data_dir: Path
    train: CaptionTable
    val: CaptionTable
    file_bytes: dict[str, dict[int, int]] = field(default_factory=dict)  # folder -> image id -> file size
    _source: dict[str, dict[str, str]] | None = field(default=None, repr=False)

    def table(self, folder: str) -> CaptionTable:
        return self.train if folder == "train2014" else self.val

    def source(self) -> dict[str, dict[str, str]]:
        """What the data is (caption files' sha256, image files): recorded by splits.json and both caches (computed once)."""
        if self._source is None:
            self._source = source_record({"train2014": self.train, "val2014": self.val}, self.file_bytes)
        return self._source


def scan(data_dir: Path) -> CocoData:
    """Load both caption files; keep image ids that have a caption *and* a file on disk."""
    check_layout(data_dir)
    tables, file_bytes = {}, {}
    for folder in ("train2014", "val2014"):
        table = load_captions(data_dir, folder)
        with_caption = set(table.caption_image_ids)
        with os.scandir(data_dir / folder) as entries:
            present = {e.name: e.stat().st_size for e in entries}
        absent = [i for i in with_caption if table.image_files[i] not in present]
        if absent and len(absent) < len(with_caption):
            # normal for coco-subset; worth a line otherwise
            print(f"{folder}: {len(with_caption) - len(absent):,} of {len(with_caption):,} captioned images are on disk")
        table.image_files = {i: f for i, f in table.image_files.items() if i in with_caption and f in present}
        tables[folder] = table
        file_bytes[folder] = {i: present[f] for i, f in table.image_files.items()}
    return CocoData(data_dir, tables["train2014"], tables["val2014"], file_bytes)


def build_splits(cfg: Config, paths: Paths, data: CocoData) -> Splits:
    splits = make_splits(
        sorted(data.train.image_files), sorted(data.val.image_files), cfg.train_images, cfg.val_images, cfg.test_images, cfg.seed
    )
    record = {**splits.to_dict(), "source": data.source()}
    atomic_write_json(paths.splits_path, {**record, "digest": splits_digest(record), "config": cfg.to_dict()})
    return splits


def cache_parts(cfg: Config, data: CocoData, splits: Splits) -> list[CachePart]:
    val_ids = set(splits.val) | set(splits.test) | (set(splits.restval) if cfg.include_restval else set())
    source = data.source()
    return [
        CachePart("train2014", data.data_dir / "train2014", {i: data.train.image_files[i] for i in splits.train}, source["train2014"]),
        CachePart("val2014", data.data_dir / "val2014", {i: data.val.image_files[i] for i in sorted(val_ids)}, source["val2014"]),
    ]


PREPARE_LOCK = "prepare.lock"  # ARTIFACTS_DIR/prepare.lock: one notebook 01 writes the caches of an ARTIFACTS_DIR at a time


def preparing(paths: Paths, step: str) -> FolderLock:
    """The ARTIFACTS_DIR's lock for one of 01's long steps: a second notebook 01 on the same folder stops at once and
    names the first (two used to remove each other's temporary files and end in a raw FileNotFoundError)."""
    advice = "Wait for that notebook 01 to finish: it prepares this same ARTIFACTS_DIR (or stop it), then re-run."
    return FolderLock(paths.artifacts_dir / PREPARE_LOCK, f"notebook 01 ({step})", advice=advice)


def cache_images(
    cfg: Config, paths: Paths, data: CocoData, splits: Splits, workers: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Build the image cache locally, publish it to ARTIFACTS_DIR/image_cache. Returns the manifest."""
    with preparing(paths, "caching images"):
        return _cache_images(cfg, paths, data, splits, workers, progress)


def _cache_images(cfg: Config, paths: Paths, data: CocoData, splits: Splits, workers: int | None, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    manifest = build_image_cache(
        cache_parts(cfg, data, splits),
        paths.cache_dir,
        size=cfg.image_size,
        quality=cfg.cache_quality,
        shard_size=cfg.shard_size,
        workers=workers,
        publish_dir=paths.image_cache_dir,
        progress=progress,
    )
    restore_cache(paths.image_cache_dir, paths.cache_dir, progress=progress, verify=True)
    for part in cache_parts(cfg, data, splits):
        cached = sum(s["count"] for s in manifest["parts"][part.name]["shards"].values())
        if part.files and not cached:
            example = failures({"parts": {part.name: manifest["parts"][part.name]}})[:1]
            raise DataError(
                f"None of the {len(part.files):,} {part.name} images under {part.folder} could be decoded"
                + (f" (e.g. {example[0]['file']}: {example[0]['error']})" if example else "")
                + ". The image files are unreadable: check DATA_DIR and re-download them; re-running 01 alone will not help."
            )
    n = sum(s["count"] for p in manifest["parts"].values() for s in p["shards"].values())
    size = sum(s["bytes"] for p in manifest["parts"].values() for s in p["shards"].values())
    print(f"Image cache: {n:,} images, {markdown.size(size)}, {len(failures(manifest))} skipped ({time.perf_counter() - t0:.1f}s)")
    return manifest


def _digest(ids: list[int]) -> str:
    return hashlib.sha256(torch.tensor(ids, dtype=torch.int64).numpy().tobytes()).hexdigest()[:16]


def _encode_in_parts(
    texts: list[str], tower: Any, cfg: Config, parts_dir: Path, digest: str, stats: EncodeStats, progress: bool
) -> torch.Tensor:
    """Encode in parts of CAPTION_PART_SIZE, each saved as it finishes: a killed run resumes at the next part.

    A part counts only when ``manifest.json`` (written after it) lists it with its size; the
    manifest also pins TEXT_MODEL and the caption ids, so parts of another run are never mixed in.
    """
    from ..core.faults import kill_point
    from ..core.storage import sha256_file

    key = {"model": cfg.text_model, "model_id": text_tower_id(cfg.text_model), "caption_ids_digest": digest,
           "part_size": cfg.caption_part_size, "encoding": cfg.lab.sources(DATA).get(ENCODING)}  # fmt: skip
    manifest_path = parts_dir / "manifest.json"
    try:
        manifest = read_json(manifest_path) if manifest_path.exists() else {}
    except ValueError:  # a damaged parts manifest: its parts cannot be trusted, encode them again
        manifest = {}
    if not isinstance(manifest, dict) or {k: manifest.get(k) for k in key} != key:
        shutil.rmtree(parts_dir, ignore_errors=True)
        manifest = {**key, "parts": {}}
    parts_dir.mkdir(parents=True, exist_ok=True)
    chunks = []
    for k, start in enumerate(range(0, len(texts), cfg.caption_part_size)):
        name = f"part-{k:05d}.pt"
        done = manifest["parts"].get(name)
        if done and (parts_dir / name).exists() and sha256_file(parts_dir / name) == done["sha256"]:  # size alone misses bit flips
            chunks.append(torch_load(parts_dir / name)["embeddings"].float())
            stats.extra["parts_reused"] = stats.extra.get("parts_reused", 0) + 1
            stats.captions += done["count"]
            stats.tokens += done["tokens"]
            stats.tokens_if_padded_to_77 += 77 * done["count"]
            continue
        before = stats.tokens
        emb = encode_texts(  # notebook 01's cell, as its kernel ran it
            cfg.lab, texts[start : start + cfg.caption_part_size], tower, batch_size=cfg.text_batch_size, progress=progress, stats=stats
        )
        part = atomic_torch_save({"embeddings": emb.half()}, parts_dir / name)
        manifest["parts"][name] = {
            "bytes": part.stat().st_size,
            "sha256": sha256_file(part),
            "count": len(emb),
            "tokens": stats.tokens - before,
        }
        atomic_write_json(manifest_path, manifest)
        kill_point("caption_part")
        chunks.append(emb.half().float())
    return torch.cat(chunks) if chunks else torch.empty(0, tower.dim)


def cache_captions(
    cfg: Config, paths: Paths, data: CocoData, splits: Splits, device: str | None = None, progress: bool = True
) -> dict[str, dict[str, Any]]:
    """Encode every caption of the cached images once; write ``{train,val}_text_embeds.pt``.

    Skips a split whose cache exists with the same TEXT_MODEL and caption ids.
    """
    with preparing(paths, "encoding captions"):
        return _cache_captions(cfg, paths, data, splits, device, progress)


def _cache_captions(cfg: Config, paths: Paths, data: CocoData, splits: Splits, device: str | None, progress: bool,
                    ) -> dict[str, dict[str, Any]]:  # fmt: skip
    parts = {p.name: p for p in cache_parts(cfg, data, splits)}
    todo = {}
    summary: dict[str, dict[str, Any]] = {}
    for split, folder in (("train", "train2014"), ("val", "val2014")):
        table = data.table(folder)
        wanted = set(parts[folder].files)
        rows = [r for r, i in enumerate(table.caption_image_ids) if i in wanted]
        caption_ids = [table.caption_ids[r] for r in rows]
        path = paths.text_embeds_path(split)
        if path.exists():
            try:
                old = load_text_embeds(path, expected_model=cfg.text_model)
                same_source = old["config"].get("source") == data.source()[folder]  # another dataset with the same ids: rebuilt
                same_code = (old.get("lab_code") or {}).get(ENCODING) == cfg.lab.sources(DATA).get(ENCODING)  # 01's encode_text
                if old["config"].get("caption_ids_digest") == _digest(caption_ids) and same_source and same_code:
                    if (old.get("lab_code") or {}) != cfg.lab.sources(DATA):  # the Dataset cell edited: 02 and 03 read with it
                        atomic_torch_save({**old, "lab_code": cfg.lab.sources(DATA)}, path)
                        print(f"{path.name}: the dataset cell changed: recorded beside the embeddings (they stay as they are: "
                              "only the caption-encoding cell changes them); a run trained with it is a new run")  # fmt: skip
                    summary[split] = {"captions": len(caption_ids), "skipped": True}
                    continue
                if not same_code and old.get("lab_code"):
                    print(f"{path.name}: the caption-encoding cell changed since it was written: encoding again")
            except RuntimeError as exc:
                warnings.warn(f"Rebuilding {path.name}: {exc}", stacklevel=2)
        todo[split] = (table, rows, caption_ids, path)
    if not todo:
        print("Caption embeddings: up to date, nothing to encode")
        return summary
    tower = load_text_tower(cfg.text_model, device)
    for split, (table, rows, caption_ids, path) in todo.items():
        stats = EncodeStats()
        t0 = time.perf_counter()
        texts = [table.captions[r] for r in rows]
        emb = _encode_in_parts(texts, tower, cfg, paths.artifacts_dir / "text_embeds_parts" / split, _digest(caption_ids), stats, progress)
        seconds = time.perf_counter() - t0
        info = {
            "captions": len(texts),
            "tokens": stats.tokens,
            "tokens_if_padded_to_77": stats.tokens_if_padded_to_77,
            "token_reduction": round(stats.token_reduction, 2),
            "truncated_to_77": stats.truncated,
            "seconds": round(seconds, 2),
            "parts_reused": stats.extra.get("parts_reused", 0),
        }
        atomic_torch_save(
            {
                "embeddings": emb.half(),
                "caption_ids": torch.tensor(caption_ids, dtype=torch.int64),
                "image_ids": torch.tensor([table.caption_image_ids[r] for r in rows], dtype=torch.int64),
                "captions": texts,
                "model": cfg.text_model,
                "model_id": text_tower_id(cfg.text_model),  # the tower by its content (a local folder: its files' digest)
                "normalized": True,
                "lab_code": cfg.lab.sources(DATA),  # notebook 01's cells (encode_text, the Dataset): 02 and 03 read with them
                "config": {
                    **cfg.to_dict(),
                    "split": split,
                    "caption_ids_digest": _digest(caption_ids),
                    "source": data.source()[table.folder],
                    "stats": info,
                },
            },
            path,
        )
        shutil.rmtree(paths.artifacts_dir / "text_embeds_parts" / split, ignore_errors=True)
        if stats.truncated:
            warnings.warn(f"{split}: {stats.truncated} caption(s) longer than 77 tokens were truncated", stacklevel=2)
        summary[split] = info
        parts_root = paths.artifacts_dir / "text_embeds_parts"
        if parts_root.is_dir() and not any(parts_root.iterdir()):
            parts_root.rmdir()  # nothing left to resume: no empty folder stays behind
        print(
            f"{path.name}: {len(texts):,} captions, {stats.tokens:,} tokens ({stats.token_reduction:.1f}x fewer than "
            f"padding to 77), {seconds:.1f}s"
        )
    return summary


def cache_categories(cfg: Config, paths: Paths, data: CocoData, splits: Splits) -> str:
    """Write ``categories_val2014.json``: the COCO categories of every cached val2014 image (03's classification), from
    ``DATA_DIR/annotations/instances_val2014.json``. Prints and returns what it did, or why 03 will skip it."""
    from ..core.provenance import is_synthetic
    from .categories import cache_categories as write

    val = next(p for p in cache_parts(cfg, data, splits) if p.name == "val2014")
    with preparing(paths, "the object categories"):
        line = write(data.data_dir, paths.artifacts_dir, sorted(val.files), data.source()["val2014"], is_synthetic(data.source()))
    print(line)
    return line


def record_data_code(cfg: Config, paths: Paths) -> None:
    """Record notebook 01's lab cells as this kernel ran them in both caption caches, when they differ from the record
    (a Dataset cell edited after the captions were encoded): 02 and 03 read the data with the recorded cells. The
    embeddings are untouched: only the caption-encoding cell changes them, and cache_captions encodes again for it."""
    wanted = cfg.lab.sources(DATA)
    for split in ("train", "val"):
        path = paths.text_embeds_path(split)
        text = load_text_embeds(path, expected_model=cfg.text_model)
        if text.get("lab_code") != wanted:
            if (text.get("lab_code") or {}).get(ENCODING, wanted.get(ENCODING)) != wanted.get(ENCODING):
                raise RuntimeError(f"{path.name} was encoded by another caption-encoding cell: run the caption cell of this notebook again")
            atomic_torch_save({**text, "lab_code": wanted}, path)
            print(f"{path.name}: records the lab cells of this notebook as they ran (the Dataset cell changed)")


def summary_markdown(splits: Splits, manifest: dict[str, Any], captions: dict[str, dict[str, Any]]) -> str:
    """The split sizes and cache contents actually used, as a Markdown table for the notebook."""
    skipped = failures(manifest)
    cached = {name: sum(s["count"] for s in part["shards"].values()) for name, part in manifest["parts"].items()}
    lines = [
        f"**Protocol:** `{splits.protocol}`",
        "",
        markdown.table(
            ["split", "images", "source", "used for"],
            [
                ["train", f"{len(splits.train):,}", "train2014", "training"],
                ["val", f"{len(splits.val):,}", "val2014", "model selection (best epoch)"],
                ["test", f"{len(splits.test):,}", "val2014", "reported Recall@K"],
                ["restval", f"{len(splits.restval):,}", "val2014", "unused (ablation: more data)"],
            ],
            numeric=(1,),
        ),
        "",
        f"- Image cache: {cached.get('train2014', 0):,} train2014 + {cached.get('val2014', 0):,} val2014 images; "
        f"{len(skipped)} skipped as unreadable" + (f" (e.g. {skipped[0]['file']}: {skipped[0]['error']})" if skipped else "") + ".",
    ]
    for split, info in captions.items():
        lines.append(  # one list item per line: Markdown joins plain lines into one paragraph
            f"- Captions ({split}): {info['captions']:,}"
            + (" (cached earlier)" if info.get("skipped") else f", {info['token_reduction']}x fewer tokens than padding to 77")
        )
    return "\n".join(lines)
