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

import itertools

import torch

from ..core.artifacts import RECALL_KEYS  # noqa: F401  (the results files' keys, with the metric that fills them)
from ..core.lab import LabCode, call_yours, came_back


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
    n_img, n_txt = image_features.shape[0], text_features.shape[0]
    i2t, t2i = call_yours(lab, "retrieval_ranks", image_features, text_features, text_to_image, rows, device,
                          check=lambda out: ranks_problem(out, n_img, n_txt))  # fmt: skip
    out = call_yours(lab, "recall_at_k", i2t, t2i, ks, check=lambda out: recall_problem(out, ks))
    return {k: float(v) if k in _needed(ks) else v for k, v in out.items()}  # plain numbers: the records are JSON


def _needed(ks: tuple[int, ...]) -> list[str]:
    """The figures every table and record reads from ``recall_at_k``."""
    return [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in ks] + ["rsum", "i2t_median_rank", "t2i_median_rank"]


def _number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or (torch.is_tensor(value) and value.numel() == 1)


def ranks_problem(out: object, n_img: int, n_txt: int) -> str | None:
    """What is wrong with ``retrieval_ranks``'s return for ``n_img`` images and ``n_txt`` captions (None: nothing): two
    tensors of whole 0-based ranks, one per image and one per caption, each below its number of candidates."""
    if not (isinstance(out, tuple) and len(out) == 2 and all(torch.is_tensor(r) for r in out)):
        return f"{came_back(out)}; the kit needs two tensors: the image->text ranks, then the text->image ranks"
    for side, ranks, queries, candidates in (("image->text", out[0], n_img, n_txt), ("text->image", out[1], n_txt, n_img)):
        if tuple(ranks.shape) != (queries,):
            return f"{side} ranks of shape {tuple(ranks.shape)}; the kit needs one rank per query, of shape ({queries},)"
        if not queries:
            continue
        low, high = float(ranks.min()), float(ranks.max())
        if ranks.is_floating_point() and not bool((ranks == ranks.round()).all()):
            return f"{side} ranks that are not whole numbers (from {low:g} to {high:g}); a rank counts candidates"
        if low < 0 or high >= candidates:
            return (f"{side} ranks from {low:g} to {high:g}; a 0-based rank among {candidates:,} candidates is 0 to "
                    f"{candidates - 1:,} (rank 0: the correct answer scored best)")  # fmt: skip
    return None


def recall_problem(out: object, ks: tuple[int, ...]) -> str | None:
    """What is wrong with ``recall_at_k``'s return (None: nothing): a dict of every figure the tables read, each Recall@K
    a fraction in [0, 1] that never falls as K grows, and rsum their sum."""
    if not isinstance(out, dict):
        return f"{came_back(out)}; the kit needs a dict such as {{'i2t_R@1': 0.42, …, 'rsum': 3.1}}"
    missing = [k for k in _needed(ks) if k not in out]
    if missing:
        return f"a dict without {', '.join(missing)}; the tables and records read them"
    not_numbers = [k for k in _needed(ks) if not _number(out[k])]
    if not_numbers:
        return f"{came_back(out[not_numbers[0]])} as {not_numbers[0]}; each figure is one number (a float, or a 1-element tensor)"
    values = {k: float(out[k]) for k in _needed(ks)}
    for direction in ("i2t", "t2i"):
        recalls = [values[f"{direction}_R@{k}"] for k in ks]
        bad = next((f"{direction}_R@{k} = {v!r}" for k, v in zip(ks, recalls) if not 0 <= v <= 1), None)
        if bad:
            return f"{bad}; Recall@K is a fraction in [0, 1] (the tables show it x 100, in percent)"
        if any(a > b for a, b in itertools.pairwise(recalls)):
            shown = ", ".join(f"R@{k} {v:.4f}" for k, v in zip(ks, recalls))
            return f"{direction} {shown}; a Recall@K cannot fall as K grows (the top 5 hold the top 1)"
    total = sum(values[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks)
    if abs(values["rsum"] - total) > 1e-4:
        return f"rsum {values['rsum']:.4f}; it is the sum of the Recall@K both ways, {total:.4f} here"
    return None


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
