"""Reading COCO 2014 captions (through pycocotools) into plain tables.

Why a wrapper: pycocotools fails deep inside ``json`` on a truncated file and with a
bare ``FileNotFoundError`` on a wrong folder. Here both name the fix. Captions are
cleaned once (whitespace collapsed); empty captions and captions of unknown images
are dropped with a counted warning, never silently.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..core.storage import sha256_file

SPLIT_FOLDERS = ("train2014", "val2014")


class DataError(RuntimeError):
    """The data on disk is missing or malformed. The message says what to do."""


@dataclass
class CaptionTable:
    """Captions of one COCO folder (train2014 or val2014)."""

    folder: str
    image_files: dict[int, str]  # image_id -> file name
    coco_urls: dict[int, str]  # image_id -> single-image download URL
    caption_ids: list[int] = field(default_factory=list)
    caption_image_ids: list[int] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    annotations_sha256: str = ""  # of the caption file read: the source every later artifact records
    synthetic: bool = False  # the file says it was generated (helpers.data.synthetic): every result made from it says so

    def captions_by_image(self) -> dict[int, list[int]]:
        """image_id -> row indices into ``captions``."""
        out: dict[int, list[int]] = {}
        for row, image_id in enumerate(self.caption_image_ids):
            out.setdefault(image_id, []).append(row)
        return out


def annotation_path(data_dir: Path, folder: str) -> Path:
    return Path(data_dir) / "annotations" / f"captions_{folder}.json"


def load_captions(data_dir: str | Path, folder: str) -> CaptionTable:
    """Load ``annotations/captions_<folder>.json`` with pycocotools and clean the captions."""
    path = annotation_path(Path(data_dir), folder)
    if not path.exists():
        raise DataError(
            f"No {path.name} under {Path(data_dir) / 'annotations'}: set DATA_DIR to a folder in COCO 2014 layout "
            f"(train2014/, val2014/, annotations/captions_*2014.json) or let DATA_SOURCE='coco' download it."
        )
    coco = _read_coco(path)
    table = CaptionTable(
        folder=folder,
        annotations_sha256=sha256_file(path),
        image_files={int(i): img["file_name"] for i, img in coco.imgs.items()},
        coco_urls={int(i): img.get("coco_url", "") for i, img in coco.imgs.items()},
        synthetic=is_generated(coco.dataset.get("info")),
    )
    dropped: dict[str, list[int]] = {"empty_caption": [], "unknown_image": [], "non_text_caption": []}
    for ann in sorted(coco.dataset["annotations"], key=lambda a: a.get("id", 0)):
        image_id, caption = ann.get("image_id"), ann.get("caption")
        if not isinstance(caption, str):  # None, a number or a list would be encoded as the text "None", "12345" ...
            dropped["non_text_caption"].append(ann.get("id"))
            continue
        text = " ".join(caption.split())
        if not isinstance(image_id, int) or image_id not in table.image_files:
            dropped["unknown_image"].append(ann.get("id"))
            continue
        if not text:
            dropped["empty_caption"].append(ann.get("id"))
            continue
        table.caption_ids.append(int(ann["id"]))
        table.caption_image_ids.append(image_id)
        table.captions.append(text)
    table.dropped = {reason: len(ids) for reason, ids in dropped.items()}
    for reason, ids in dropped.items():
        if ids:
            warnings.warn(
                f"{path.name}: dropped {len(ids)} caption(s): {reason.replace('_', ' ')} (annotation ids {_some(ids)})", stacklevel=2
            )
    return table


def is_generated(info: object) -> bool:
    """A caption file's ``info`` names generated data: ``"synthetic": true`` (this kit's generator) or a description
    that says "synthetic" (the generator of earlier versions). COCO's own files say neither."""
    if not isinstance(info, dict):
        return False
    return info.get("synthetic") is True or "synthetic" in str(info.get("description", "")).lower()


def _some(ids: list, n: int = 5) -> str:
    return ", ".join(map(str, ids[:n])) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _read_coco(path: Path):  # -> pycocotools.coco.COCO
    """Parse and shape-check the JSON first, then index it with pycocotools (which asserts on anything odd)."""
    from pycocotools.coco import COCO

    fix = "It may be truncated or not a COCO file: delete it and re-run the data-acquisition step to fetch it again."
    try:
        with open(path, "rb") as fh:
            raw = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a valid COCO captions file ({exc.__class__.__name__}: {exc}). {fix}") from None
    expected = "a JSON object with 'images' and 'annotations' lists"
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not a COCO captions file: expected {expected}, found a JSON {type(raw).__name__}. {fix}")
    if not isinstance(raw.get("images"), list) or not isinstance(raw.get("annotations"), list):
        raise DataError(f"{path} lacks 'images' or 'annotations': it is not a COCO captions file (expected {expected}). {fix}")
    bad = [img for img in raw["images"] if not isinstance(img, dict) or not isinstance(img.get("id"), int) or "file_name" not in img]
    if bad:
        raise DataError(f"{path}: {len(bad)} image record(s) lack an integer 'id' or a 'file_name', e.g. {str(bad[0])[:120]}. {fix}")
    if any(not isinstance(a, dict) for a in raw["annotations"]):
        raise DataError(f"{path}: 'annotations' must be a list of objects. {fix}")
    raw["images"] = _unique_images(path, raw["images"])
    coco = COCO()
    coco.dataset = raw
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timing chatter
        coco.createIndex()
    return coco


def _unique_images(path: Path, images: list[dict]) -> list[dict]:
    """Duplicate image ids: identical records are merged (counted); conflicting ones are refused.

    pycocotools would keep the last record silently, so an id could be cached with another
    image's pixels under its own captions.
    """
    first: dict[int, dict] = {}
    repeated: list[int] = []
    conflicting: list[int] = []
    for img in images:
        seen = first.setdefault(img["id"], img)
        if seen is not img:
            (repeated if seen.get("file_name") == img.get("file_name") else conflicting).append(img["id"])
    if conflicting:
        raise DataError(
            f"{path}: image id(s) {_some(sorted(set(conflicting)))} appear more than once with different file names, so their "
            "captions cannot be matched to pixels. Fix or re-download the annotation file."
        )
    if repeated:
        warnings.warn(f"{path.name}: {len(repeated)} duplicate image record(s) merged (ids {_some(sorted(set(repeated)))})", stacklevel=3)
    return list(first.values())


def check_layout(data_dir: str | Path) -> None:
    """Fail early, naming the fix, when DATA_DIR is not in COCO 2014 layout."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"DATA_DIR={data_dir} does not exist: set DATA_DIR to your COCO 2014 folder, or choose "
            "DATA_SOURCE='coco' / 'coco-subset' / 'kaggle' to download it there."
        )
    missing = [f for f in SPLIT_FOLDERS if not (data_dir / f).is_dir()]
    missing += [
        annotation_path(data_dir, f).relative_to(data_dir).as_posix() for f in SPLIT_FOLDERS if not annotation_path(data_dir, f).exists()
    ]
    if missing:
        raise DataError(
            f"DATA_DIR={data_dir} is not in COCO 2014 layout: missing {', '.join(missing)}. Expected train2014/, "
            "val2014/ and annotations/captions_{train,val}2014.json; fix DATA_DIR or pick another DATA_SOURCE."
        )
