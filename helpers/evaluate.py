"""Evaluating a trained run: embeddings of one split, Recall@K, results files, references.

One embedding per *image* (never one per caption, so a top-k list cannot repeat an
image) and one per *caption* (from the cache, encoded once in notebook 01). The
architecture is rebuilt from the checkpoint's own config. Results go to
``runs/<run>/eval_<split>.json`` and ``.csv`` with the config, split, counts and the
checkpoint's identity (path, epoch, SHA-256).
"""

from __future__ import annotations

import csv
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .artifacts import load_json
from .config import Config
from .dataset import CocoCacheDataset, load_text_embeds
from .embed import encode_images
from .env import Paths
from .image_cache import ImageCache, restore_cache
from .metrics import RECALL_KEYS, fold_metrics, retrieval_metrics
from .model import ClipImageModel
from .prepare import load_splits
from .splits import Splits
from .storage import atomic_write_bytes, atomic_write_json, sha256_file
from .train import load_trained, run_name_for

# Published 5k-test figures (%), I->T R@1/5/10 | T->I R@1/5/10. Quoted, not re-measured here.
REFERENCES: dict[str, dict[str, float]] = {
    "CLIP ViT-B/32 zero-shot (Radford et al. 2021)": dict(zip(
        ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"), (50.1, 75.0, 83.5, 30.4, 55.9, 66.9))),
    "CLIP RN50 zero-shot (Radford et al. 2021)": dict(zip(
        ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"), (48.8, 72.8, 82.1, 28.5, 52.9, 64.6))),
    "VSE++ ResNet-152, trained on COCO (Faghri et al. 2018)": dict(zip(
        ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"), (41.3, 71.1, 81.2, 30.3, 59.4, 72.4))),
}  # fmt: skip


def find_run(cfg: Config, paths: Paths) -> Path:
    """RUN_NAME if set; else the run the same settings would train; else the latest finished run."""
    if cfg.run_name:
        run = paths.runs_dir / cfg.run_name
        if not run.is_dir():
            known = sorted(p.name for p in paths.runs_dir.glob("*") if p.is_dir()) if paths.runs_dir.exists() else []
            raise FileNotFoundError(f"No run {cfg.run_name!r} in {paths.runs_dir}. Known runs: {known or 'none'}. Run 02_train_clip.ipynb.")
        return run
    default = paths.runs_dir / run_name_for(cfg)
    if (default / "best.pt").exists():
        return default
    finished = sorted(paths.runs_dir.glob("*/best.pt"), key=lambda p: p.stat().st_mtime) if paths.runs_dir.exists() else []
    if not finished:
        raise FileNotFoundError(f"No trained run in {paths.runs_dir}: run 02_train_clip.ipynb first (same ARTIFACTS_DIR)")
    print(f"RUN_NAME=None: using the most recent run, {finished[-1].parent.name}")
    return finished[-1].parent


@dataclass
class EvalData:
    """Everything needed to score one split."""

    run_dir: Path
    model: ClipImageModel
    checkpoint: dict[str, Any]
    cache: ImageCache
    text: dict[str, Any]
    dataset: CocoCacheDataset  # eval mode: one item per image
    split: str
    protocol: str


def split_image_ids(splits: Splits, split: str, cache: ImageCache) -> list[int]:
    if split == "test":
        return splits.test
    if split == "val":
        return splits.val
    ids = sorted(set(splits.val) | set(splits.test) | set(splits.restval))
    cached = [i for i in ids if i in cache]
    if len(cached) < len(ids):
        warnings.warn(
            f"EVAL_SPLIT='val2014': only {len(cached):,} of {len(ids):,} val2014 images are cached; "
            "re-run 01_dataset_prep.ipynb with INCLUDE_RESTVAL=True for all of val2014",
            stacklevel=2,
        )
    return cached


def load_eval_data(cfg: Config, paths: Paths, device: torch.device) -> EvalData:
    run_dir = find_run(cfg, paths)
    ckpt_path = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "checkpoint.pt"
    model, state = load_trained(ckpt_path, device)
    cache = ImageCache(restore_cache(paths.image_cache_dir, paths.cache_dir))
    text = load_text_embeds(paths.text_embeds_path("val"), cfg.text_model)
    splits = load_splits(paths)
    ids = split_image_ids(splits, cfg.eval_split, cache)
    dataset = CocoCacheDataset(cache, text, ids, mode="eval", normalize=False)
    checkpoint = {"path": str(ckpt_path), "epoch": state["epoch"], "sha256": sha256_file(ckpt_path), "arch": state["arch"]}
    return EvalData(run_dir, model, checkpoint, cache, text, dataset, cfg.eval_split, splits.protocol)


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


def evaluate(cfg: Config, paths: Paths, device: str | torch.device | None = None, progress: bool = True) -> EvalResult:
    """Score the run's best checkpoint on EVAL_SPLIT; write eval_<split>.json/.csv into the run folder."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = load_eval_data(cfg, paths, device)
    t0 = time.perf_counter()
    image_features = encode_images(data.model, data.dataset, device, num_workers=cfg.num_workers, progress=progress)
    rows = data.dataset.caption_rows
    text_features = data.text["embeddings"][rows].float()
    t2i = data.dataset.caption_image_index
    metrics = retrieval_metrics(image_features, text_features, t2i, device=device)
    metrics_1k = fold_metrics(image_features, text_features, t2i, device=device) if len(image_features) >= 5000 else None
    zero_shot = None
    if cfg.compare_zero_shot:
        from .zero_shot import zero_shot_image_features

        zs = zero_shot_image_features(cfg.text_model, data.cache, data.dataset.image_ids, device, progress=progress)
        zero_shot = retrieval_metrics(zs, text_features, t2i, device=device)
    record = {
        "run_name": data.run_dir.name,
        "split": data.split,
        "protocol": data.protocol,
        "num_images": len(image_features),
        "num_captions": len(rows),
        "checkpoint": data.checkpoint,
        "metrics": metrics,
        "metrics_1k": metrics_1k,
        "zero_shot": zero_shot,
        "zero_shot_model": cfg.text_model if zero_shot else None,
        "seconds": time.perf_counter() - t0,
        "config": cfg.to_dict(),
        "train_config": load_json(data.run_dir / "config.json", "config") if (data.run_dir / "config.json").exists() else None,
    }
    atomic_write_json(data.run_dir / f"eval_{data.split}.json", record)
    atomic_write_bytes(data.run_dir / f"eval_{data.split}.csv", results_csv(record).encode())
    return EvalResult(data, image_features, text_features, t2i, rows, metrics, metrics_1k, zero_shot, record)


def _rows(record: dict[str, Any]) -> list[tuple[str, str, dict[str, float]]]:
    """(model, protocol, recalls in %) rows: this run, its 1k folds, zero-shot, then published references."""
    n = record["num_images"]
    pct = lambda m: {k: 100 * m[k] for k in RECALL_KEYS}  # noqa: E731
    out = [(f"this run ({record['run_name']})", f"{record['split']}: {n:,} images", pct(record["metrics"]))]
    if record.get("metrics_1k"):
        out.append((f"this run ({record['run_name']})", "1k (mean of 5 folds)", pct(record["metrics_1k"])))
    if record.get("zero_shot"):
        out.append((f"zero-shot {record['zero_shot_model']} (measured here)", f"{record['split']}: {n:,} images", pct(record["zero_shot"])))
    for name, ref in REFERENCES.items():
        out.append((name + " [published, not re-measured]", "Karpathy 5k test", ref))
    return out


def results_csv(record: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "protocol", *[k.replace("@", "_at_") + "_pct" for k in RECALL_KEYS], "rsum_pct"])
    for name, protocol, rec in _rows(record):
        writer.writerow([name, protocol, *[f"{rec[k]:.2f}" for k in RECALL_KEYS], f"{sum(rec.values()):.2f}"])
    return buf.getvalue()


def results_markdown(record: dict[str, Any]) -> str:
    """Our Recall@K beside the published references, in %."""
    lines = [
        "| model | protocol | I→T R@1 | R@5 | R@10 | T→I R@1 | R@5 | R@10 | rsum |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, protocol, rec in _rows(record):
        cells = " | ".join(f"{rec[k]:.1f}" for k in RECALL_KEYS)
        lines.append(f"| {name} | {protocol} | {cells} | {sum(rec.values()):.1f} |")
    m = record["metrics"]
    lines += [
        "",
        f"Median rank: image→text {m['i2t_median_rank']:.0f}, text→image {m['t2i_median_rank']:.0f}. "
        f"Split protocol: `{record['protocol']}`; {record['num_captions']:,} captions. "
        "Published figures are quoted from the papers (Karpathy 5k test) and were not re-measured; they compare "
        "only when this run's protocol is `karpathy-5k` on the test split.",
    ]
    return "\n".join(lines)
