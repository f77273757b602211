"""Recall@K for image-text retrieval, chunked on the device, at any scale.

Why chunked: all of val2014 is 40,504 images x ~202k captions; the full float32
similarity matrix would take 31 GiB. Here only one chunk of rows is ever materialised
(``chunk_size`` x the other side), on the GPU when there is one, so memory stays
bounded and nothing is sorted on the CPU.

The ranking and Recall@K themselves are the lab's code: notebook 03's cell ``recall-at-k`` defines
``retrieval_ranks`` and ``recall_at_k`` (helpers/core/lab.py). This module is what surrounds them: the checks on
the inputs, the chunk size that fits the memory budget, the device, and the 1k protocol's folds.

Definitions (the standard COCO protocol):
- image->text: an image's rank is the number of *other* captions scoring at least as
  high as its best-scoring own caption; a hit at K when that rank < K (ANY of its
  captions in the top K).
- text->image: a caption's rank is the number of other images scoring at least as high
  as its own image; a hit at K when rank < K.
Ties count against the query, so a collapsed model (all scores equal) gets ~0, not 100%.
A caption's own score is taken from the very same matrix product as the scores it is compared
with (never recomputed element-wise: the two differ in the last bits, and ties then fall either
way). Non-finite features (a diverged model) are refused: NaN compares False, which would count
every query as a hit. Ranks reported are 1-based (rank 1 = top).
"""

from __future__ import annotations

import torch

from ..core.artifacts import RECALL_KEYS  # noqa: F401  (the results files' keys, with the metric that fills them)
from ..core.lab import LabCode


class NonFiniteFeatures(ValueError):
    """Image or text features hold NaN or infinity: no ranking of them means anything."""


BYTES_PER_SCORE = 14  # float32 scores + a masked copy + three boolean masks, per element of a chunk


def _rows_per_chunk(chunk_size: int | None, other_side: int, memory_budget: int) -> int:
    if chunk_size is not None:
        return chunk_size
    return max(1, min(8192, memory_budget // (BYTES_PER_SCORE * max(1, other_side))))


@torch.no_grad()
def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
    memory_budget: int = 1 << 30,
    lab: LabCode | None = None,
) -> dict[str, float]:
    """Recall@K (fractions in [0, 1]) both ways, mean/median rank and rsum, by ``lab``'s ``retrieval_ranks`` and
    ``recall_at_k`` (notebook 03's cell as 03's kernel ran it; by default as the notebook holds it).

    ``image_features`` [N_img, D] and ``text_features`` [N_txt, D] are L2-normalised;
    ``text_to_image[j]`` is the row of caption j's image. Images may have any number of
    captions (at least one each for image->text to be defined). ``chunk_size`` rows
    are scored at a time; by default as many as fit in ``memory_budget`` bytes.
    """
    text_to_image = torch.as_tensor(text_to_image, dtype=torch.long)
    if text_features.shape[0] != text_to_image.shape[0]:
        raise ValueError(f"{text_features.shape[0]} captions but {text_to_image.shape[0]} text_to_image entries")
    if text_to_image.numel() and (text_to_image.min() < 0 or text_to_image.max() >= image_features.shape[0]):
        raise ValueError("text_to_image holds rows outside the image features")
    for side, features in (("image", image_features), ("text", text_features)):
        if not torch.isfinite(features).all():
            bad = int((~torch.isfinite(features)).any(dim=1).sum())
            raise NonFiniteFeatures(f"{bad} of {features.shape[0]} {side} features hold NaN or infinity: the model diverged")
    counts = torch.bincount(text_to_image, minlength=image_features.shape[0])
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} image(s) have no caption: drop them before computing Recall@K")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    lab = lab or LabCode.shipped()
    rows = _rows_per_chunk(chunk_size, text_features.shape[0], memory_budget)
    i2t, t2i = lab.retrieval_ranks(image_features, text_features, text_to_image, rows, device)
    return lab.recall_at_k(i2t, t2i, ks)


def fold_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    fold_size: int = 1000,
    folds: int = 5,
    **kwargs,
) -> dict[str, float]:
    """The "1k" protocol: mean of :func:`retrieval_metrics` over ``folds`` disjoint folds of ``fold_size`` images."""
    text_to_image = torch.as_tensor(text_to_image, dtype=torch.long)
    if image_features.shape[0] < fold_size * folds:
        raise ValueError(f"the 1k protocol needs {fold_size * folds} images, got {image_features.shape[0]}")
    results = []
    for f in range(folds):
        lo, hi = f * fold_size, (f + 1) * fold_size
        mask = (text_to_image >= lo) & (text_to_image < hi)
        results.append(retrieval_metrics(image_features[lo:hi], text_features[mask], text_to_image[mask] - lo, **kwargs))
    return {k: sum(r[k] for r in results) / folds for k in results[0]}
