"""Notebook 01's integrity check: random cached images beside one of their captions."""

from __future__ import annotations

import random
from typing import Any

from ..core.figures import wrap_caption
from .image_cache import ImageCache


def pairs_grid(cache: ImageCache, text: dict[str, Any], n: int = 12, seed: int = 0, cols: int = 4, title: str | None = None) -> Any:
    """A grid of random cached images, each with one of its captions: an integrity check by eye."""
    import matplotlib.pyplot as plt

    rows_by_image: dict[int, list[int]] = {}
    for row, image_id in enumerate(text["image_ids"].tolist()):
        if image_id in cache:
            rows_by_image.setdefault(image_id, []).append(row)
    rng = random.Random(seed)
    picks = rng.sample(sorted(rows_by_image), min(n, len(rows_by_image)))
    n_rows = max(1, -(-len(picks) // cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.2 * cols, 4.0 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image_id in zip(axes.flat, picks):
        caption = text["captions"][rng.choice(rows_by_image[image_id])]
        ax.imshow(cache.load_pil(image_id))
        ax.set_title(wrap_caption(caption, 32, 3) + f"\nid {image_id}", fontsize=8)
    fig.suptitle(title or "Random image-caption pairs from the prepared caches", fontsize=12)
    fig.tight_layout()
    return fig
