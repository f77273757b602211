"""Evaluating a trained run: embeddings of one split, Recall@K, results files, references.

One embedding per *image* (never one per caption, so a top-k list cannot repeat an
image) and one per *caption* (from the cache, encoded once in notebook 01). The
architecture is rebuilt from the checkpoint's own config. Results go to
``runs/<run>/eval_<split>.json`` and ``.csv`` with the config, split, counts and the
checkpoint's identity (path, epoch, SHA-256).
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..clip.embed import encode_images
from ..clip.metrics import RECALL_KEYS, fold_metrics, retrieval_metrics
from ..core import markdown
from ..core.artifacts import load_json, load_torch
from ..core.config import Config, TrainingDiverged, divergence_advice
from ..core.env import Paths
from ..core.lab import EVALUATION, call_yours
from ..core.provenance import captions_digest, check_inputs, check_sources, is_synthetic, tower_of
from ..core.storage import atomic_write_bytes, atomic_write_json
from ..data.dataset import data_code, lab_dataset, load_text_embeds
from ..data.image_cache import ImageCache, restore_cache
from ..data.splits import Splits, karpathy_ids, load_splits
from ..data.text_tower import display_name
from ..store.runs import RunDir, check_own_best, find_run, load_metrics, load_trained, seal, start_figures, weights_sha256
from .classification import edited_lines, score_categories


@dataclass(frozen=True)
class Reference:
    """A published result, with the exact place it is printed: quoted, never re-measured here."""

    model: str
    source: str
    protocol: str
    recalls: tuple[float, float, float, float, float, float]  # % I->T R@1/5/10, T->I R@1/5/10

    def metrics(self) -> dict[str, float]:
        return dict(zip(RECALL_KEYS, self.recalls))


# Each row is checked against its source. CLIP's paper reports zero-shot COCO retrieval for its
# largest model only; the two CLIP models closest to this kit (ViT-B/32, whose text tower it uses, and
# RN50, its image backbone) come from open_clip's benchmark table (CLIP_benchmark, Karpathy 5k test),
# where "image retrieval" means text->image. COMPARE_ZERO_SHOT=True also measures ViT-B/32 here.
_OPEN_CLIP = (
    "open_clip, `docs/openclip_retrieval_results.csv` (commit 29b90b8, row `{row}`); its 'MSCOCO text retr.' columns are "
    "image→text, its 'MSCOCO image retr.' columns text→image (CLIP_benchmark's naming)"
)
REFERENCES: tuple[Reference, ...] = (
    Reference(
        "OpenAI CLIP ViT-B/32, zero-shot",
        _OPEN_CLIP.format(row="ViT-B-32,openai"),
        "MS-COCO 5k test (Karpathy)",
        (50.1, 75.0, 83.5, 30.4, 55.9, 66.9),
    ),
    Reference(
        "OpenAI CLIP RN50, zero-shot",
        _OPEN_CLIP.format(row="RN50,openai"),
        "MS-COCO 5k test (Karpathy)",
        (48.8, 72.8, 82.1, 28.5, 52.9, 64.6),
    ),
    Reference(
        "CLIP ViT-L/14@336px, zero-shot",
        "Radford et al. 2021, *Learning Transferable Visual Models From Natural Language Supervision*, Table 13",
        "MS-COCO 5k test (Karpathy)",
        (58.4, 81.5, 88.1, 37.8, 62.4, 72.2),
    ),
    # VSE++: the R@1 pair (41.3 image→text, 30.3 text→image, 5K test) was cross-checked on 2026-12-01 against public
    # benchmark listings of the paper; R@5 and R@10 are the paper's 5K rows as first entered, not re-checked since.
    Reference(
        "VSE++ (ResNet-152, fine-tuned, trained on COCO)",
        "Faghri et al. 2018, *VSE++: Improving Visual-Semantic Embeddings with Hard Negatives* (BMVC; arXiv:1707.05612), "
        "MS-COCO results table, 5K test rows",
        "MS-COCO 5k test (Karpathy)",
        (41.3, 71.1, 81.2, 30.3, 59.4, 72.4),
    ),
)
FOLDS_KARPATHY = "five consecutive blocks of 1,000 images in the order of coco2014_karpathy_test_ids.txt (the Karpathy file order)"
FOLDS_SORTED = "five consecutive blocks of 1,000 images in ascending image-id order (not the Karpathy file order: a subset)"


@dataclass
class EvalData:
    """Everything needed to score one split."""

    run: RunDir
    model: nn.Module
    checkpoint: dict[str, Any]
    cache: ImageCache
    text: dict[str, Any]
    dataset: Any  # the lab's CocoCacheDataset (notebook 01's cell, as the caption cache recorded it), eval mode
    split: str
    protocol: str
    scored: dict[str, Any]  # which images were scored and how they relate to training and model selection
    run_inputs: dict[str, Any]  # the digests of the data the run trained on (provenance.run_inputs), checked against now
    source: dict[str, Any] | None = None  # splits.json's source record: what the category labels are checked against

    @property
    def run_dir(self) -> Path:
        return self.run.path


def trained_image_ids(splits: Splits, train_config: dict[str, Any], cache: ImageCache) -> set[int]:
    """Every image the run trained on: train2014's split, plus the images its variant added (restval's)."""
    from ..clip.flags import Recipe

    variant = Recipe.of(str(train_config.get("variant", "baseline")))
    return set(splits.train).union(*(hook(splits, cache) for hook in variant.each("extra_train_images")))


def split_image_ids(splits: Splits, split: str, cache: ImageCache, trained: set[int] | None = None) -> list[int]:
    """The images to score. ``val2014`` leaves out every image the run trained on (a ``restval``
    run trained on ~30k of them): no image a run trained on is ever scored."""
    if split == "test":
        return splits.test
    if split == "val":
        return splits.val
    ids = sorted((set(splits.val) | set(splits.test) | set(splits.restval)) - (trained or set()))
    cached = [i for i in ids if i in cache]
    if len(cached) < len(ids):
        warnings.warn(
            f"EVAL_SPLIT='val2014': only {len(cached):,} of {len(ids):,} val2014 images are cached; "
            "re-run 01_dataset_prep.ipynb with INCLUDE_RESTVAL=True for all of val2014",
            stacklevel=2,
        )
    return cached


def load_eval_data(cfg: Config, paths: Paths, device: torch.device) -> EvalData:
    run = find_run(cfg, paths)
    ckpt_path = run.weights
    model, state = load_trained(ckpt_path, device)
    if run.best.exists() and run.checkpoint.exists():  # best.pt is this run's best epoch, metrics.json or not
        check_own_best(run, load_torch(run.checkpoint, "checkpoint"), kept=state if ckpt_path == run.best else None)
    if run.is_finished():
        load_metrics(run)  # best.pt is the one the run's own summary describes (not copied in), and the summary unedited
    cache = ImageCache(restore_cache(paths.image_cache_dir, paths.cache_dir))
    text = load_text_embeds(paths.text_embeds_path("val"), cfg.text_model)
    splits = load_splits(paths)
    check_sources(splits.source, cache.manifest["parts"], {"val_text_embeds.pt": ("val2014", text)}, str(paths.artifacts_dir))
    trained = trained_image_ids(splits, state["config"], cache)
    ids = split_image_ids(splits, cfg.eval_split, cache, trained)
    if cfg.eval_split == "test" and splits.protocol == "karpathy-5k":
        position = {image_id: k for k, image_id in enumerate(karpathy_ids("test"))}
        ids = sorted(ids, key=position.__getitem__)  # the standard order: the 1k folds are the standard folds
    check_inputs(
        state.get("inputs"),
        {"splits": splits.digest, "image_size": cache.image_size, "text_model": tower_of(text),
         "val_images": cache.digest(splits.val), "val_captions": captions_digest(text, splits.val)},
        f"Run {run.name} ({ckpt_path})", f"the current data artifacts in {paths.artifacts_dir}",
        f"Scoring it on them would measure another model than the one trained. Re-run 01_dataset_prep.ipynb with the settings "
        f"this run's data was made with, or retrain on the current data: 02_train_clip.ipynb with FORCE_RETRAIN=True "
        f"(RUN_NAME={run.name!r}).",
    )  # fmt: skip
    dataset = lab_dataset(data_code(text), cache, text, ids, mode="eval")  # notebook 01's Dataset, as 01 ran it
    checkpoint = {
        "path": str(ckpt_path), "epoch": state["epoch"], "sha256": weights_sha256(ckpt_path), "arch": state["arch"],
        "config": state["config"],
    }  # fmt: skip
    scored_ids = dataset.image_ids
    excluded = sorted(set(splits.val) | set(splits.test) | set(splits.restval)) if cfg.eval_split == "val2014" else []
    scored = {
        "num_images": len(scored_ids),
        "image_ids_sha256": hashlib.sha256(",".join(map(str, sorted(scored_ids))).encode()).hexdigest(),
        "seen_in_training": len(trained.intersection(scored_ids)),  # 0 by construction; recorded so a reader can check
        "excluded_because_trained_on": len(trained.intersection(excluded)),
        "used_for_model_selection": len(set(splits.val).intersection(scored_ids)),
        "synthetic": is_synthetic(splits.source),  # generated images (the demo's): every table made from it says so
    }
    if scored["seen_in_training"]:
        raise RuntimeError(f"{scored['seen_in_training']} image(s) of EVAL_SPLIT={cfg.eval_split!r} were trained on: not scoring them")
    return EvalData(run, model, checkpoint, cache, text, dataset, cfg.eval_split, splits.protocol, scored, state["inputs"], splits.source)


@dataclass
class EvalResult:
    data: EvalData
    image_features: torch.Tensor  # [N_img, D], unit
    text_features: torch.Tensor  # [N_txt, D], unit, captions of the split's images
    text_to_image: torch.Tensor  # [N_txt] row of each caption's image
    caption_rows: list[int]  # rows into the text cache
    metrics: dict[str, float]
    metrics_1k: dict[str, float] | None
    zero_shot: dict[str, float] | None
    record: dict[str, Any]
    tower: Any = None  # the text tower the classification loaded (03's live queries reuse it), or None

    @property
    def classification(self) -> dict[str, Any]:
        """The classification over COCO's categories (``{"skipped": why}`` when there was none to score)."""
        return self.record.get("classification") or {"skipped": "not scored"}


def evaluate(cfg: Config, paths: Paths, device: str | torch.device | None = None, progress: bool = True) -> EvalResult:
    """Score the run's best checkpoint on EVAL_SPLIT; write eval_<split>.json/.csv into the run folder."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = load_eval_data(cfg, paths, device)
    t0 = time.perf_counter()
    image_features = encode_images(data.model, data.dataset, device, num_workers=cfg.num_workers, progress=progress)
    if not torch.isfinite(image_features).all():
        raise TrainingDiverged(
            f"Run {data.run.name} ({data.checkpoint['path']}, epoch {data.checkpoint['epoch']}) gives non-finite image features "
            f"(NaN/inf): its weights diverged and no Recall@K of them means anything. {divergence_advice(data.checkpoint['config'])} "
            f"Then retrain: 02_train_clip.ipynb with FORCE_RETRAIN=True (RUN_NAME={data.run.name!r})."
        )
    rows = data.dataset.caption_rows
    text_features = data.text["embeddings"][rows].float()
    t2i = data.dataset.caption_image_index
    metrics = retrieval_metrics(image_features, text_features, t2i, device=device, lab=cfg.lab)  # 03's cells, as its kernel ran them
    metrics_1k = fold_metrics(image_features, text_features, t2i, device=device, lab=cfg.lab) if len(image_features) >= 5000 else None
    karpathy_order = data.split == "test" and data.protocol == "karpathy-5k"
    zero_shot, zs = None, None
    if cfg.compare_zero_shot:
        from .zero_shot import zero_shot_image_features

        zs = zero_shot_image_features(cfg.text_model, data.cache, data.dataset.image_ids, device, progress=progress)
        zero_shot = retrieval_metrics(zs, text_features, t2i, device=device, lab=cfg.lab)
    classification, tower = score_categories(cfg, data, image_features, zs, paths.artifacts_dir, device)
    record = {
        "run_name": data.run.name,
        "split": data.split,
        "protocol": data.protocol,
        "num_images": len(image_features),
        "num_captions": len(rows),
        "checkpoint": data.checkpoint,
        "units": UNITS,
        "metrics": metrics,
        "metrics_1k": metrics_1k,
        "folds_1k": (FOLDS_KARPATHY if karpathy_order else FOLDS_SORTED) if metrics_1k else None,
        "scored_images": data.scored,
        "zero_shot": zero_shot,
        "zero_shot_model": cfg.text_model if zero_shot else None,
        "classification": classification,  # over COCO's object categories (instances_val2014.json), or why skipped
        "seconds": time.perf_counter() - t0,
        "config": cfg.to_dict(),
        "train_config": load_json(data.run.config, "config") if data.run.config.exists() else None,
        "lab_code": {"digest": cfg.lab.digest(EVALUATION), "edited": cfg.lab.edited(EVALUATION)},  # the cells that scored it
        "inputs": {
            "run": data.run_inputs,
            "scored_images": data.cache.digest(data.dataset.image_ids),
            "scored_captions": captions_digest(data.text, data.dataset.image_ids),
        },
    }
    record = seal(record)  # a hand edit of the figures is noticed by every reader (runs.load_eval)
    table = results_csv(cfg, _rows(record))  # 03's lab cell, before anything is written: a slip in it leaves no half result
    atomic_write_json(data.run.eval_json(data.split), record)
    atomic_write_bytes(data.run.eval_csv(data.split), table)
    start_figures(data.run, data.split, record)
    return EvalResult(data, image_features, text_features, t2i, rows, metrics, metrics_1k, zero_shot, record, tower)


def results_csv(cfg: Config, rows: list[Row]) -> bytes:
    """The text of ``eval_<split>.csv``, written by 03's lab cell ``results-csv`` (as its kernel ran it)."""
    check = lambda out: None if isinstance(out, str) else f"a {type(out).__name__}; the kit writes the text it returns, a str"  # noqa: E731
    return call_yours(cfg.lab, "results_csv", rows, check=check).encode()


UNITS = "fractions: each Recall@K in [0, 1], rsum in [0, 6] (eval_<split>.csv and every table: x 100, in percent)"


Row = tuple[str, str, dict[str, float]]  # (model, protocol, Recall@K in %): a row of a results table and its CSV


def percent(metrics: dict[str, float]) -> dict[str, float]:
    """The six Recall@K of a record (fractions) in %."""
    return {k: 100 * metrics[k] for k in RECALL_KEYS}


def measured_rows(record: dict[str, Any], run_label: str, images: str) -> list[Row]:
    """This run's row and, when it was measured, zero-shot CLIP's, on the images ``images`` names."""
    protocol = f"{record['split']}: {images}"
    if edited_note(record):  # the CSV travels without the note above the table: its rows say it too
        protocol += "; Recall@K by your edited cell recall-at-k"
    out = [(run_label, protocol, percent(record["metrics"]))]
    if record.get("zero_shot"):
        out.append((f"zero-shot {display_name(record['zero_shot_model'])} (measured here)", protocol, percent(record["zero_shot"])))
    return out


def published_rows(references: tuple[Reference, ...], marks: tuple[str, ...]) -> list[Row]:
    return [(f"{ref.model} [published{mark}, not re-measured]", ref.protocol, ref.metrics()) for mark, ref in zip(marks, references)]


def recall_table(rows: list[Row]) -> str:
    """Rows of Recall@K (in %) as a Markdown table, both directions and rsum."""
    header = ["model", "protocol", "I→T R@1", "R@5", "R@10", "T→I R@1", "R@5", "R@10", "rsum"]
    cells = [[name, protocol, *(f"{rec[k]:.1f}" for k in RECALL_KEYS), f"{sum(rec.values()):.1f}"] for name, protocol, rec in rows]
    return markdown.table(header, cells, numeric=range(2, 9))


MARKS = tuple("*" * k for k in range(1, len(REFERENCES) + 1))  # the footnotes of the COCO table


def _rows(record: dict[str, Any]) -> list[Row]:
    """(model, protocol, recalls in %) rows: this run, its 1k folds, zero-shot, then published references."""
    n = record["num_images"]
    images = f"{n:,} SYNTHETIC images (not COCO)" if synthetic_record(record) else f"{n:,} images"
    out = measured_rows(record, f"this run ({record['run_name']})", images)
    if record.get("metrics_1k"):
        out.insert(1, (f"this run ({record['run_name']})", "1k (mean of 5 folds)", percent(record["metrics_1k"])))
    return out + published_rows(REFERENCES, MARKS)


def synthetic_record(record: dict[str, Any]) -> bool:
    """Whether an eval record scored synthetic images (its own record; 03 of an older kit recorded nothing: not)."""
    return bool((record.get("scored_images") or {}).get("synthetic"))


SYNTHETIC_NOTE = (
    "**SYNTHETIC DATA: these figures come from generated images of coloured shapes (the offline demo), not MS COCO "
    "2014. They show that the pipeline runs, not how well a model retrieves; they do not compare with the published rows.**"
)


def edited_note(record: dict[str, Any], cells: tuple[str, ...] = ("03:recall-at-k",)) -> list[str]:
    """The note for a results table scored by the student's edited cell(s) among ``cells`` (none when run as shipped)."""
    return edited_lines([key for key in (record.get("lab_code") or {}).get("edited") or {} if key in cells])


def results_markdown(record: dict[str, Any]) -> str:
    """Our Recall@K beside the published references, in %."""
    lines = [SYNTHETIC_NOTE, ""] if synthetic_record(record) else []
    lines += edited_note(record)
    lines += [recall_table(_rows(record))]
    m = record["metrics"]
    lines += [
        "",
        f"Recall@K in %; rsum is the sum of the six Recall@K, out of 600. "
        f"Median rank: image→text {m['i2t_median_rank']:.0f}, text→image {m['t2i_median_rank']:.0f}. "
        f"Split protocol: `{record['protocol']}`; {record['num_captions']:,} captions. "
        "Published figures are quoted, not re-measured; they compare only when this run's protocol is `karpathy-5k` "
        "on the test split. In open_clip's and CLIP_benchmark's tables \"image retrieval\" means text→image and "
        "\"text retrieval\" image→text. `COMPARE_ZERO_SHOT=True` measures zero-shot CLIP (the image tower of TEXT_MODEL) "
        "here, on the same images.",
    ]
    if record.get("folds_1k"):
        lines.append(f"The 1k figure is the mean over {record['folds_1k']}.")
    scored = record.get("scored_images")
    if scored:
        lines.append(
            f"Scored images: {scored['num_images']:,}; seen in training: {scored['seen_in_training']}"
            + (f" ({scored['excluded_because_trained_on']:,} trained-on images left out)" if scored["excluded_because_trained_on"] else "")
            + (f"; {scored['used_for_model_selection']:,} of them chose the best epoch (val)" if scored["used_for_model_selection"] else "")
            + "."
        )
    for mark, ref in zip(MARKS, REFERENCES):  # each footnote its own paragraph: plain lines would merge into one
        lines += ["", f"{mark} {ref.source}."]
    return "\n".join(lines)
