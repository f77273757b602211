"""Transfer to Flickr30k's 1k test split: the run (and zero-shot CLIP) scored on photos it never trained on.

The model is the one notebook 03 just scored on COCO (its checkpoint, rebuilt with its own lab code); the images and
captions are the prepared set of ``helpers.data.flickr``; Recall@K is notebook 03's lab cell, exactly as on COCO. The
published zero-shot CLIP rows are quoted beside it (never re-measured). Results go to ``runs/<run>/eval_flickr30k.json``
(sealed, with the checkpoint's identity and the prepared set's record: the report shows it only while it scores the
run's current weights) and ``eval_flickr30k.csv``.
"""

from __future__ import annotations

import time
from typing import Any

from ..clip.embed import encode_images
from ..clip.metrics import retrieval_metrics
from ..core.config import Config
from ..core.env import Paths
from ..core.lab import EVALUATION
from ..core.provenance import digest
from ..core.storage import atomic_write_bytes, atomic_write_json
from ..data import flickr
from ..data.dataset import data_code, lab_dataset
from ..store.runs import TRANSFER_SPLIT, seal
from .evaluate import UNITS, EvalData, Reference, Row, edited_note, measured_rows, published_rows, recall_table, results_csv

SPLIT = TRANSFER_SPLIT  # eval_flickr30k.json
PROTOCOL = "Flickr30k 1k test (Karpathy)"

_OPEN_CLIP = (
    "open_clip, `docs/openclip_retrieval_results.csv` (commit 89fb801, row `{row}`); its 'Flickr text retr.' columns are "
    "image→text, its 'Flickr image retr.' columns text→image (CLIP_benchmark's naming)"
)
MARKS = ("†", "‡")  # the footnotes of this table: not the COCO table's asterisks, which the report prints just above
FLICKR_REFERENCES: tuple[Reference, ...] = (
    Reference("OpenAI CLIP ViT-B/32, zero-shot", _OPEN_CLIP.format(row="ViT-B-32,openai"), PROTOCOL, (78.9, 94.9, 98.2, 58.8, 83.6, 90.0)),
    Reference("OpenAI CLIP RN50, zero-shot", _OPEN_CLIP.format(row="RN50,openai"), PROTOCOL, (80.0, 95.0, 97.9, 57.4, 83.2, 90.0)),
)


def evaluate_transfer(cfg: Config, paths: Paths, data: EvalData, progress: bool = True) -> dict[str, Any]:
    """Score the run whose weights ``data`` holds (03's ``result.data``; 04's runs) and zero-shot CLIP (with
    COMPARE_ZERO_SHOT) on Flickr30k's 1k test split; write ``eval_flickr30k.json`` / ``.csv``; return the record."""
    device = next(data.model.parameters()).device
    prepared = flickr.prepare(cfg, paths, data.text, device, progress)
    t0 = time.perf_counter()
    dataset = lab_dataset(data_code(data.text), prepared.cache, prepared.text, prepared.image_ids, mode="eval")
    features = encode_images(data.model, dataset, device, num_workers=cfg.num_workers, progress=progress)
    text_features = prepared.text["embeddings"][dataset.caption_rows].float()
    t2i = dataset.caption_image_index
    metrics = retrieval_metrics(features, text_features, t2i, device=device, lab=cfg.lab)  # 03's cell, as on COCO
    zero_shot = None
    if cfg.compare_zero_shot:
        from .zero_shot import zero_shot_image_features

        zs = zero_shot_image_features(cfg.text_model, prepared.cache, dataset.image_ids, device, progress=progress)
        zero_shot = retrieval_metrics(zs, text_features, t2i, device=device, lab=cfg.lab)
    scored = {"num_images": len(dataset.image_ids), "seen_in_training": 0, "synthetic": bool(prepared.record.get("synthetic")),
              "image_ids_sha256": digest(sorted(dataset.image_ids))}  # fmt: skip
    record = seal({
        "run_name": data.run.name,
        "split": SPLIT,
        "protocol": PROTOCOL,
        "num_images": len(dataset.image_ids),
        "num_captions": len(dataset.caption_rows),
        "checkpoint": data.checkpoint,
        "units": UNITS,
        "metrics": metrics,
        "zero_shot": zero_shot,
        "zero_shot_model": cfg.text_model if zero_shot else None,
        "prepared": prepared.record,  # the source (csv digest, files), image size, text tower and caption cell
        "scored_images": scored,
        "seconds": time.perf_counter() - t0,
        "config": cfg.to_dict(),
        "lab_code": {"digest": cfg.lab.digest(EVALUATION), "edited": cfg.lab.edited(EVALUATION)},
    })
    table = results_csv(cfg, _rows(record))  # 03's lab cell, before anything is written: a slip in it leaves no half result
    atomic_write_json(data.run.eval_json(SPLIT), record)
    atomic_write_bytes(data.run.eval_csv(SPLIT), table)
    return record


def _rows(record: dict[str, Any]) -> list[Row]:
    synthetic = (record.get("scored_images") or {}).get("synthetic")
    images = f"{record['num_images']:,} SYNTHETIC images (not Flickr30k)" if synthetic else f"{record['num_images']:,} images"
    return measured_rows(record, f"this run ({record['run_name']}), trained on COCO", images) + published_rows(FLICKR_REFERENCES, MARKS)


def transfer_markdown(record: dict[str, Any]) -> str:
    """The transfer table: this run and zero-shot CLIP beside the published rows, in %."""
    synthetic = (record.get("scored_images") or {}).get("synthetic")
    lines = ["**SYNTHETIC DATA: a generated Flickr-layout folder (the offline demo), not Flickr30k: these figures test the "
             "pipeline and do not compare with the published rows.**", ""] if synthetic else []  # fmt: skip
    lines += edited_note(record)
    lines += [recall_table(_rows(record)), ""]
    lines.append(
        f"Recall@K in %, {record['num_images']:,} images and {record['num_captions']:,} captions, none seen in training (the run "
        "trained on COCO alone). The published rows are zero-shot CLIP models, quoted, not re-measured."
    )
    for mark, ref in zip(MARKS, FLICKR_REFERENCES):
        lines += ["", f"{mark} {ref.source}."]
    return "\n".join(lines)


TRANSFER_OFF = "Flickr30k transfer: off. FLICKR30K=True also scores this run on Flickr30k's 1k test images (134 MB, downloaded once)."
