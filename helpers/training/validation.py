"""The end-of-epoch check on the val split: the figures that pick the best epoch.

Why val and never test: ``best.pt`` is chosen by the val rsum (sum of Recall@1/5/10 in both
directions); the test split stays unseen until notebook 03 reports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset  # the lab's CocoCacheDataset (notebook 01's cell)

from ..clip.embed import encode_images
from ..clip.metrics import NonFiniteFeatures, retrieval_metrics
from ..core.config import Config, TrainingDiverged


def validate_epoch(model: Any, val_set: Dataset, device: torch.device, batch_size: int, cfg: Config,
                   loss_fn: Callable[..., torch.Tensor], where: str) -> dict[str, Any]:  # fmt: skip
    """The val figures of an epoch (``where``: "Run X, epoch 3"); non-finite features stop the run before the epoch is
    saved (never best.pt), with what to change."""
    from .recovery import advice

    try:
        return validate(model, val_set, device, batch_size, cfg.amp, cfg.num_workers, loss_fn)
    except NonFiniteFeatures as exc:
        raise TrainingDiverged(
            f"{where}: {exc} (at validation). The epoch is not saved; best.pt keeps the last good epoch. {advice(cfg)} "
            "Then re-run with FORCE_RETRAIN=True."
        ) from None


@torch.no_grad()
def validate(
    model: Any, val_set: Dataset, device: torch.device, batch_size: int, amp: bool, num_workers: int,
    loss_fn: Callable[..., torch.Tensor],
) -> dict[str, Any]:
    """``val_loss`` (the run's own loss: one fixed caption per image, batches of ``batch_size``, no extra negatives)
    and val Recall@K over all captions."""
    t0 = time.perf_counter()
    image_features = encode_images(model, val_set, device, batch_size, amp, num_workers)
    first_caption = torch.stack([val_set.embeddings[val_set.caption_row(i)].float() for i in range(len(val_set))])
    scale = model.scale().float().cpu()
    losses = []
    for start in range(0, len(image_features), batch_size):
        chunk = slice(start, start + batch_size)
        if image_features[chunk].shape[0] > 1:
            losses.append((loss_fn(image_features[chunk].cpu(), first_caption[chunk], scale, None).item(), image_features[chunk].shape[0]))
    val_loss = sum(v * n for v, n in losses) / max(1, sum(n for _, n in losses))
    text_features = val_set.embeddings[val_set.caption_rows].float()
    metrics = retrieval_metrics(image_features, text_features, val_set.caption_image_index, device=device)
    return {"val_loss": val_loss, **{f"val_{k}": v for k, v in metrics.items()}, "val_seconds": time.perf_counter() - t0}
