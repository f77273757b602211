"""What a run trains and validates on: the image cache, the caption embeddings, the two datasets.

Why its own module: the trainer needs one call, and the checks that stop a wrong run before it
starts (the cache's image size against IMAGE_SIZE, the caption cache's TEXT_MODEL, restval
images cached at all) are read here together with the data they guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..clip.variants import train_transform
from ..core.config import Config, ConfigError
from ..core.env import Paths
from ..core.provenance import run_inputs
from ..data.dataset import CocoCacheDataset, load_text_embeds
from ..data.image_cache import ImageCache, restore_cache
from ..data.splits import Splits, load_splits


@dataclass
class TrainingData:
    splits: Splits
    cache: ImageCache
    train_set: CocoCacheDataset  # one item per image, a random caption per epoch, augmented when the variant says so
    val_set: CocoCacheDataset  # one item per image, its first caption
    embed_dim: int  # the caption-embedding width: the projection head's output size
    inputs: dict[str, Any]  # provenance.run_inputs: the digests of what this run trains and selects on


def load_training_data(cfg: Config, paths: Paths, flags: set[str], progress: bool = True) -> TrainingData:
    splits = load_splits(paths)
    cache = ImageCache(restore_cache(paths.image_cache_dir, paths.cache_dir, progress=progress))
    if cache.image_size != cfg.image_size:
        raise ConfigError(
            f"IMAGE_SIZE={cfg.image_size}, but the image cache holds {cache.image_size}px images: set "
            f"IMAGE_SIZE={cache.image_size}, or re-run 01_dataset_prep.ipynb with IMAGE_SIZE={cfg.image_size}"
        )
    train_text = load_text_embeds(paths.text_embeds_path("train"), cfg.text_model)
    val_text = load_text_embeds(paths.text_embeds_path("val"), cfg.text_model)
    train_ids = splits.train
    if "restval" in flags:
        restval = [i for i in splits.restval if i in cache]
        train_ids, train_text = train_ids + restval, with_restval(train_text, val_text, restval)
    train_set = CocoCacheDataset(cache, train_text, train_ids, "train", cfg.seed, normalize=False, transform=train_transform(flags))
    val_set = CocoCacheDataset(cache, val_text, splits.val, "eval", cfg.seed, normalize=False)
    inputs = run_inputs(splits.digest, cache, train_text, val_text, train_ids, splits.val)
    return TrainingData(splits, cache, train_set, val_set, int(train_text["embeddings"].shape[1]), inputs)


def with_restval(train_text: dict[str, Any], val_text: dict[str, Any], restval: list[int]) -> dict[str, Any]:
    """``restval`` variant: train2014's captions plus those of the cached val2014 images in neither Karpathy split."""
    if not restval:
        raise ConfigError(
            "VARIANT includes 'restval', but no restval images are cached: re-run 01_dataset_prep.ipynb with INCLUDE_RESTVAL=True"
        )
    keep = torch.isin(val_text["image_ids"], torch.tensor(restval))
    return {
        "model": train_text["model"],
        "embeddings": torch.cat([train_text["embeddings"], val_text["embeddings"][keep]]),
        "caption_ids": torch.cat([train_text["caption_ids"], val_text["caption_ids"][keep]]),
        "image_ids": torch.cat([train_text["image_ids"], val_text["image_ids"][keep]]),
        "captions": train_text["captions"] + [c for c, k in zip(val_text["captions"], keep.tolist()) if k],
    }
