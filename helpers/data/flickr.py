"""Flickr30k's 1k test split (Karpathy's), prepared like COCO: the transfer set of notebook 03.

Why: papers that train on COCO also report retrieval on Flickr30k's 1k test images, photos the model never saw, to show
what carries over. The images and their 5 captions each come from a public Hugging Face dataset that needs no account
(``nlphuji/flickr_1k_test_image_text_retrieval``: ``test_1k_flickr.csv``, ``images_flickr_1k_test.zip``, 134 MB). They
are downloaded once into FLICKR_DIR (local disk, resumable, the archive checked before it is extracted), then prepared
like COCO's: every image decoded once into a small cache at the COCO cache's size, every caption encoded once with
notebook 01's caption cell, into ``ARTIFACTS_DIR/flickr30k/`` (Drive), with a record of what made them
(docs/artifacts.md). A later session reads that record and never downloads again.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.artifacts import first_line
from ..core.config import Config
from ..core.env import Paths
from ..core.lab import ENCODING
from ..core.provenance import digest, is_sealed, seal, text_tower_id, tower_of
from ..core.storage import atomic_torch_save, atomic_write_json, read_json, sha256_file
from .coco import DataError
from .dataset import data_code, load_text_embeds
from .download import DownloadError, download, safe_extract
from .image_cache import CachePart, ImageCache, build_image_cache, cached_image_size, failures
from .text_tower import encode_texts, load_text_tower

CSV_NAME = "test_1k_flickr.csv"
ZIP_NAME = "images_flickr_1k_test.zip"
IMAGES_FOLDER = "images_flickr_1k_test"
RECORD = "flickr30k.json"  # written last: the prepared set counts only once it is there
EXPECTED_IMAGES = 1000
GENERATED = "synthetic"  # the ``source`` column of a generated list (helpers.data.synthetic): every result says so


@dataclass(frozen=True)
class FlickrSplit:
    """The 1k test images: file name and captions per image id (the Flickr photo id, from the file name)."""

    files: dict[int, str]
    captions: dict[int, list[str]]
    csv_sha256: str
    synthetic: bool = False  # the list says it was generated (a ``source`` column, helpers.data.synthetic): results say so


def folder(paths: Paths) -> Path:
    """The prepared set in ARTIFACTS_DIR (Drive): image cache, caption embeddings, record."""
    return paths.artifacts_dir / "flickr30k"


def raw_dir(cfg: Config, paths: Paths) -> Path:
    """Where the download goes: FLICKR_DIR, or beside DATA_DIR on local disk (/content/flickr30k on Colab)."""
    return Path(cfg.flickr_dir) if cfg.flickr_dir else paths.data_dir.parent / "flickr30k"


def read_split(csv_path: Path) -> FlickrSplit:
    """``test_1k_flickr.csv``: one row per image, its file name and its captions (``raw``: a JSON list of 5)."""
    try:
        with csv_path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path} cannot be read ({first_line(exc, 120)}): delete it and re-run to download it again.") from None
    if not rows or not {"filename", "raw"} <= set(rows[0]):
        raise DataError(f"{csv_path} has no 'filename' and 'raw' columns (Flickr30k's 1k test list): delete it and re-run to "
                        "download it again.")  # fmt: skip
    files, captions = {}, {}
    for row in rows:
        name = Path(row["filename"]).name
        image_id = int(Path(name).stem) if Path(name).stem.isdigit() else int(row.get("img_id") or row.get("imgid") or len(files))
        try:
            texts = [" ".join(str(t).split()) for t in json.loads(row["raw"])]
        except ValueError:
            raise DataError(f"{csv_path}: the captions of {name} are not a JSON list: delete the file and re-run.") from None
        files[image_id], captions[image_id] = name, [t for t in texts if t]
    generated = any(str(row.get("source") or "").startswith(GENERATED) for row in rows)
    return FlickrSplit(files, captions, sha256_file(csv_path), generated)


def fetch(cfg: Config, paths: Paths, progress: bool = True) -> tuple[Path, FlickrSplit]:
    """The caption list and the images in the raw folder: what is already there is used (a folder of one's own included);
    what is missing is downloaded (resuming a partial file) and the archive extracted."""
    raw = raw_dir(cfg, paths)
    try:
        csv_path = download(f"{cfg.flickr_url}/{CSV_NAME}", raw / CSV_NAME, progress=progress, url_setting="FLICKR_URL")
        split = read_split(csv_path)
        if _missing(raw, split) and not (raw / f".extracted-{ZIP_NAME}").exists():  # not extracted yet: the archive
            zip_path = download(f"{cfg.flickr_url}/{ZIP_NAME}", raw / ZIP_NAME, progress=progress, url_setting="FLICKR_URL")
            safe_extract(zip_path, raw, progress=progress)
    except DownloadError as exc:
        raise DownloadError(
            f"Flickr30k's 1k test set could not be downloaded into {raw}: {exc} Re-run to resume; or put {CSV_NAME} and "
            f"{IMAGES_FOLDER}/ there yourself (FLICKR_DIR); or set FLICKR30K=False to skip the transfer test."
        ) from None
    images, missing = _images_folder(raw), _missing(raw, split)
    if missing:
        raise DataError(
            f"Flickr30k: {len(missing):,} of the {len(split.files):,} test images are missing from {images} (e.g. "
            f"{', '.join(missing[:3])}): the archive was incomplete or files were removed. Delete {raw / ZIP_NAME} (if any) "
            f"and {raw / ('.extracted-' + ZIP_NAME)}, then re-run to extract it again (it downloads again if needed)."
        )
    if len(split.files) != EXPECTED_IMAGES:
        print(f"Flickr30k: {len(split.files):,} test images listed in {CSV_NAME} (the standard split has {EXPECTED_IMAGES:,}).")
    return images, split


def _missing(raw: Path, split: FlickrSplit) -> list[str]:
    images = _images_folder(raw)
    return sorted(name for name in split.files.values() if not (images / name).is_file())


def _images_folder(raw: Path) -> Path:
    """The extracted images: ``images_flickr_1k_test/`` as the archive holds them, or the raw folder itself."""
    return raw / IMAGES_FOLDER if (raw / IMAGES_FOLDER).is_dir() else raw


@dataclass
class Prepared:
    """The prepared transfer set: its image cache, caption embeddings (the COCO caches' format) and record."""

    cache: ImageCache
    text: dict[str, Any]
    record: dict[str, Any]

    @property
    def image_ids(self) -> list[int]:
        return sorted(self.cache.image_ids)


def prepare(cfg: Config, paths: Paths, coco_text: dict[str, Any], device: torch.device | str = "cpu", progress: bool = True) -> Prepared:
    """The prepared set for the run's image size and text space: read from ARTIFACTS_DIR when its record matches, else
    downloaded (once), cached and encoded, the record written last."""
    out = folder(paths)
    image_size = cached_image_size(paths.image_cache_dir)
    wanted = {"image_size": image_size, "quality": cfg.cache_quality, "text_model_id": tower_of(coco_text),
              "encoding": digest((coco_text.get("lab_code") or {}).get(ENCODING))}  # fmt: skip
    if (out / RECORD).exists():
        try:
            record = read_json(out / RECORD)
            if not is_sealed(record) or record.get("text_sha256") != sha256_file(out / "text_embeds.pt"):  # 5 MB: milliseconds
                print(f"Flickr30k: {RECORD} or the caption embeddings beside it changed after they were prepared: preparing it again.")
            elif {k: record.get(k) for k in wanted} == wanted:
                cache = ImageCache(out / "image_cache")
                if len(cache.image_ids) == record["images"]:
                    return Prepared(cache, load_text_embeds(out / "text_embeds.pt"), record)
                print(f"Flickr30k: the prepared image cache holds {len(cache.image_ids):,} images, not {record['images']:,}: "
                      "preparing it again.")
            else:
                print("Flickr30k: prepared for another image size, text tower or caption cell: preparing it again.")
        except (ValueError, RuntimeError, OSError) as exc:
            print(f"Flickr30k: the prepared set is unreadable ({first_line(exc, 100)}): preparing it again.")
    if text_tower_id(cfg.text_model) != wanted["text_model_id"]:
        raise DataError(f"TEXT_MODEL={cfg.text_model!r} is not the text tower that encoded COCO's captions: Flickr30k's captions "
                        "would land in another text space. Set TEXT_MODEL as in notebook 01.")  # fmt: skip
    t0 = time.perf_counter()
    images, split = fetch(cfg, paths, progress)
    (out / RECORD).unlink(missing_ok=True)  # from here on the folder is being rewritten: not a prepared set until the end
    source = {"csv_sha256": split.csv_sha256, "files": digest(sorted((i, n, (images / n).stat().st_size) for i, n in split.files.items()))}
    part = CachePart("flickr30k-test", images, split.files, source)
    manifest = build_image_cache([part], out / "image_cache", size=image_size, quality=cfg.cache_quality, progress=progress)
    skipped = failures(manifest)
    cache = ImageCache(out / "image_cache")
    ids = [i for i in sorted(split.files) if i in cache]
    captions = [(i, text) for i in ids for text in split.captions[i]]
    tower = load_text_tower(cfg.text_model, device)
    embeddings = encode_texts(data_code(coco_text), [t for _, t in captions], tower, progress=progress)  # notebook 01's cell
    text = {
        "embeddings": embeddings.half(),
        "caption_ids": torch.arange(len(captions), dtype=torch.int64),
        "image_ids": torch.tensor([i for i, _ in captions], dtype=torch.int64),
        "captions": [t for _, t in captions],
        "model": cfg.text_model,
        "model_id": wanted["text_model_id"],
        "normalized": True,
        "lab_code": coco_text.get("lab_code"),  # the cells that encode and read it: the COCO caches' own
        "config": {"split": "flickr30k-test", "source": source},
    }
    atomic_torch_save(text, out / "text_embeds.pt")
    record = {
        **wanted,
        "text_sha256": sha256_file(out / "text_embeds.pt"),  # what a later session reads is what this one encoded
        "source": source,
        "url": cfg.flickr_url,
        "images": len(ids),
        "captions": len(captions),
        "skipped_images": [s["file"] for s in skipped],
        "synthetic": split.synthetic,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(out / RECORD, seal(record))  # written last, sealed: a prepared set, whole and as written
    print(f"Flickr30k 1k test: {len(ids):,} images and {len(captions):,} captions prepared in {record['seconds']:.1f}s "
          f"(ARTIFACTS_DIR/flickr30k/, read from there next time)")  # fmt: skip
    return Prepared(cache, text, record)

