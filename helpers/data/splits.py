"""Train / val / test splits, following the standard Karpathy protocol when possible.

Why: published COCO retrieval numbers (CLIP, VSE++) use the Karpathy 5k test split of
val2014; peers' numbers did not compare because each made up its own split. Model
selection uses the disjoint Karpathy 5k val split, never the test split. The id lists
ship in ``helpers/data/``. When the data holds none of those ids (synthetic data, an
arbitrary subset), val2014 is split deterministically instead and ``protocol`` says so.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ID_LISTS_DIR = Path(__file__).parent  # the Karpathy id lists sit beside this module, in helpers/data/
KARPATHY_SIZE = 5000


def karpathy_ids(split: str) -> list[int]:
    """The 5,000 COCO image ids of the Karpathy ``"val"`` or ``"test"`` split."""
    if split not in ("val", "test"):
        raise ValueError(f"Karpathy split must be 'val' or 'test', not {split!r}")
    text = (ID_LISTS_DIR / f"coco2014_karpathy_{split}_ids.txt").read_text()
    return [int(line) for line in text.split()]


@dataclass
class Splits:
    protocol: str  # "karpathy-5k" | "karpathy-subset" | "deterministic"
    train: list[int]
    val: list[int]
    test: list[int]
    restval: list[int]  # val2014 images in neither val nor test
    digest: str = ""  # provenance.splits_digest of the splits.json it was read from ("" before it is written)
    source: dict[str, dict[str, str]] | None = None  # per COCO folder: its caption file and image files (provenance.source_record)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test), "restval": len(self.restval)}

    def to_dict(self) -> dict[str, object]:
        return {"protocol": self.protocol, "train": self.train, "val": self.val, "test": self.test, "restval": self.restval}

    @classmethod
    def from_dict(cls, d: dict) -> Splits:
        return cls(protocol=d["protocol"], train=list(d["train"]), val=list(d["val"]), test=list(d["test"]), restval=list(d["restval"]))

    def describe(self) -> str:
        s = self.sizes()
        return (
            f"protocol={self.protocol}: train {s['train']:,} images (train2014), val {s['val']:,} (model selection), "
            f"test {s['test']:,} (reporting), restval {s['restval']:,} unused val2014 images"
        )


def load_splits(paths: Any) -> Splits:
    """``splits.json`` (notebook 01) of ``paths`` (an ``env.Paths``), shape-checked by the one artifact loader."""
    from ..core.artifacts import load_json
    from ..core.provenance import splits_digest

    record = load_json(paths.splits_path, "splits")
    splits = Splits.from_dict(record)
    splits.digest = splits_digest(record)  # from the content, so a hand-edited file is a different split
    splits.source = record.get("source")
    return splits


def _seeded_subset(ids: list[int], n: int | None, seed: int) -> list[int]:
    ids = sorted(ids)
    if n is None or n >= len(ids):
        return ids
    return sorted(random.Random(seed).sample(ids, n))


def make_splits(
    train_available: list[int],
    val2014_available: list[int],
    train_images: int | None = None,
    val_images: int | None = None,
    test_images: int | None = None,
    seed: int = 0,
) -> Splits:
    """Build the splits from the image ids that actually exist (image file and >= 1 caption)."""
    if not train_available:
        raise ValueError("No usable train2014 images (image file + caption): check DATA_DIR/train2014 and captions_train2014.json")
    if len(val2014_available) < 2:
        raise ValueError("Fewer than 2 usable val2014 images: need at least one for val and one for test")
    train = _seeded_subset(train_available, train_images, seed)
    available = set(val2014_available)
    k_val = [i for i in karpathy_ids("val") if i in available]
    k_test = [i for i in karpathy_ids("test") if i in available]
    if k_val and k_test:
        val = _seeded_subset(k_val, val_images, seed)
        test = _seeded_subset(k_test, test_images, seed + 1)
        full = len(val) == KARPATHY_SIZE and len(test) == KARPATHY_SIZE
        protocol = "karpathy-5k" if full else "karpathy-subset"
    else:
        order = sorted(available)
        random.Random(seed).shuffle(order)
        n_val = val_images if val_images is not None else min(KARPATHY_SIZE, len(order) // 2)
        n_test = test_images if test_images is not None else min(KARPATHY_SIZE, len(order) - n_val)
        if n_val + n_test > len(order):
            raise ValueError(f"VAL_IMAGES={n_val} + TEST_IMAGES={n_test} exceed the {len(order)} usable val2014 images: lower them")
        val, test = sorted(order[:n_val]), sorted(order[n_val : n_val + n_test])
        protocol = "deterministic"
    used = set(val) | set(test)
    if protocol != "deterministic":  # restval is defined against the full Karpathy lists
        used |= set(karpathy_ids("val")) | set(karpathy_ids("test"))
    restval = sorted(i for i in available if i not in used)
    return Splits(protocol=protocol, train=train, val=val, test=test, restval=restval)
