"""COCO's object categories of each evaluated image: the labels of 03's zero-shot classification.

Why: section 2.4 asks which of a list of classes matches an image. COCO's own object annotations
(``instances_val2014.json``, in the annotations zip 01 already downloads) say which of its 80 categories each val2014
image holds, so that question is scored over the whole test split instead of shown on a few images. Notebook 01 reads
the 160 MB file once and keeps only what 03 needs, per cached val2014 image, in ``ARTIFACTS_DIR/categories_val2014.json``
(docs/artifacts.md): the category names, the category ids of each image, the file's sha256 and the caption source it
was made beside, which 03 checks against ``splits.json`` before it scores (another dataset's labels are never used).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.provenance import is_sealed, seal
from ..core.storage import atomic_write_json, read_json, sha256_file

INSTANCES_FILE = "instances_val2014.json"
ARTIFACT = "categories_val2014.json"
FORMAT = 1
HOW_TO_GET = (
    f"it comes with COCO's annotations_trainval2014.zip: re-run 01_dataset_prep.ipynb (DATA_SOURCE 'coco', 'coco-subset' or "
    f"'kaggle' fetch it), or put {INSTANCES_FILE} into DATA_DIR/annotations/ and re-run 01"
)


def instances_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "annotations" / INSTANCES_FILE


def artifact_path(artifacts_dir: str | Path) -> Path:
    return Path(artifacts_dir) / ARTIFACT


def cache_categories(data_dir: str | Path, artifacts_dir: str | Path, image_ids: list[int], captions_source: dict[str, Any],
                     synthetic: bool) -> str:  # fmt: skip
    """Write ``categories_val2014.json`` for ``image_ids`` (the cached val2014 images); return a line saying what happened.

    Skipped when the artifact already describes the same file and images; without an instances file nothing is written
    (an artifact of other data is removed, so 03 never scores against it) and the line says how to get one."""
    source = instances_path(data_dir)
    target = artifact_path(artifacts_dir)
    if not source.exists():
        target.unlink(missing_ok=True)
        return f"No {INSTANCES_FILE} in {source.parent}: notebook 03 will skip the classification over COCO's categories ({HOW_TO_GET})."
    digest = sha256_file(source)
    wanted = sorted(image_ids)
    if target.exists():
        try:
            old = read_json(target)
            same = old.get("sha256") == digest and old.get("captions_source") == captions_source
            if is_sealed(old) and same and sorted(map(int, old["labels"])) == wanted:
                return f"{ARTIFACT}: up to date ({len(old['categories'])} categories, {len(wanted):,} images)"
        except (ValueError, KeyError, TypeError):
            pass  # unreadable: written again below
    try:
        doc = json.loads(source.read_text())
        categories = sorted(({"id": int(c["id"]), "name": str(c["name"])} for c in doc["categories"]), key=lambda c: c["id"])
        pairs = [(int(a["image_id"]), int(a["category_id"])) for a in doc["annotations"]]
    except (ValueError, KeyError, TypeError) as exc:
        target.unlink(missing_ok=True)
        return f"{source} is not a COCO instances file ({type(exc).__name__}: {exc}): classification skipped in 03; {HOW_TO_GET}."
    known = {c["id"] for c in categories}
    labels: dict[int, set[int]] = {i: set() for i in wanted}
    for image_id, category_id in pairs:
        if image_id in labels and category_id in known:
            labels[image_id].add(category_id)
    record = {
        "format": FORMAT,
        "file": INSTANCES_FILE,
        "sha256": digest,
        "captions_source": captions_source,  # splits.json's val2014 source: the labels belong to these images
        "synthetic": synthetic,
        "categories": categories,
        "labels": {str(i): sorted(labels[i]) for i in wanted},  # image id -> its category ids ([]: no object annotated)
    }
    atomic_write_json(target, seal(record))  # sealed: an edited label is noticed by 03, which then scores none
    unlabeled = sum(1 for v in labels.values() if not v)
    return (f"{ARTIFACT}: {len(categories)} categories over {len(wanted):,} val2014 images "
            f"({unlabeled:,} with no annotated object), from {INSTANCES_FILE}")  # fmt: skip


@dataclass(frozen=True)
class Categories:
    """The category names and each image's categories, as a boolean matrix for any list of images."""

    names: list[str]
    ids: list[int]
    labels: dict[int, list[int]]  # image id -> category ids
    sha256: str
    synthetic: bool = False  # generated shapes' categories (helpers.data.synthetic), not COCO's

    def matrix(self, image_ids: list[int]) -> torch.Tensor:
        """[len(image_ids), len(names)] bool: whether each image holds each category."""
        column = {category_id: k for k, category_id in enumerate(self.ids)}
        out = torch.zeros(len(image_ids), len(self.ids), dtype=torch.bool)
        for row, image_id in enumerate(image_ids):
            for category_id in self.labels.get(image_id, []):
                out[row, column[category_id]] = True
        return out


def load_categories(artifacts_dir: str | Path, captions_source: dict[str, Any] | None, image_ids: list[int]) -> Categories | str:
    """The categories of ``image_ids``, or the sentence that says why there are none (03 prints it and goes on)."""
    path = artifact_path(artifacts_dir)
    if not path.exists():
        return f"No {ARTIFACT} in ARTIFACTS_DIR, so no image has its COCO categories: {HOW_TO_GET}."
    try:
        record = read_json(path)
        labels = {int(k): [int(c) for c in v] for k, v in record["labels"].items()}
        names, ids = [c["name"] for c in record["categories"]], [int(c["id"]) for c in record["categories"]]
    except (ValueError, KeyError, TypeError) as exc:
        return f"{ARTIFACT} is unreadable ({type(exc).__name__}: {exc}): re-run 01_dataset_prep.ipynb to write it again."
    if not is_sealed(record):
        return (f"{ARTIFACT} was changed after notebook 01 wrote it (or it is from an older kit, without its seal): its labels "
                "are not used. Re-run 01_dataset_prep.ipynb to write it again (seconds).")
    if captions_source is not None and record.get("captions_source") != captions_source:
        return f"{ARTIFACT} was made beside other data than splits.json describes: re-run 01_dataset_prep.ipynb on the current data."
    missing = [i for i in image_ids if i not in labels]
    if missing:
        return (f"{ARTIFACT} has no categories for {len(missing):,} of the {len(image_ids):,} images scored (e.g. image "
                f"{missing[0]}): re-run 01_dataset_prep.ipynb, which writes them for every cached val2014 image.")
    return Categories(names, ids, labels, record.get("sha256", ""), bool(record.get("synthetic")))
