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
    try:
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timing chatter
            coco = COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path} is not a valid COCO captions file ({exc.__class__.__name__}: {exc}). "
            "It may be truncated: delete it and re-run the data-acquisition step to fetch it again."
        ) from exc
    if "images" not in coco.dataset or "annotations" not in coco.dataset:
        raise DataError(f"{path} lacks 'images' or 'annotations': it is not a COCO captions file. Delete it and re-download.")

    table = CaptionTable(
        folder=folder,
        image_files={int(i): img["file_name"] for i, img in coco.imgs.items()},
        coco_urls={int(i): img.get("coco_url", "") for i, img in coco.imgs.items()},
    )
    empty = unknown = 0
    for ann in sorted(coco.dataset["annotations"], key=lambda a: a["id"]):
        image_id = int(ann["image_id"])
        text = " ".join(str(ann.get("caption", "")).split())
        if image_id not in table.image_files:
            unknown += 1
            continue
        if not text:
            empty += 1
            continue
        table.caption_ids.append(int(ann["id"]))
        table.caption_image_ids.append(image_id)
        table.captions.append(text)
    table.dropped = {"empty_caption": empty, "unknown_image": unknown}
    for reason, count in table.dropped.items():
        if count:
            warnings.warn(f"{path.name}: dropped {count} caption(s): {reason.replace('_', ' ')}", stacklevel=2)
    return table


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
