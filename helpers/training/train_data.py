"""What a run trains and validates on: the image cache, the caption embeddings, the two datasets.

Why its own module: the trainer needs one call, and the checks that stop a wrong run before it
starts (the cache's image size against IMAGE_SIZE, the caption cache's TEXT_MODEL, restval
images cached at all) are read here together with the data they guard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..clip.flags import Recipe
from ..core.config import Config, ConfigError
from ..core.env import Paths
from ..core.provenance import check_sources, is_synthetic, run_inputs
from ..data.dataset import lab_dataset, load_text_embeds, with_data_code, with_images_from  # noqa: F401  (with_data_code: notebook 02)
from ..data.image_cache import ImageCache, cached_image_size, failures, restore_cache
from ..data.splits import Splits, load_splits


@dataclass
class TrainingData:
    splits: Splits
    cache: ImageCache
    train_set: Any  # notebook 01's CocoCacheDataset: one item per image, a caption drawn per epoch, the variant's augmentation
    val_set: Any  # one item per image, its first caption
    embed_dim: int  # the caption-embedding width: the projection head's output size
    inputs: dict[str, Any]  # provenance.run_inputs: the digests of what this run trains and selects on

    def facts(self) -> dict[str, Any]:
        """What metrics.json records of the data (the report's section 2)."""
        return {"splits": self.splits.sizes(), "image_size": self.cache.image_size, "cache_quality": self.cache.quality,
                "text_model": self.inputs["text_model"], "skipped_images": len(failures(self.cache.manifest)),
                "synthetic": is_synthetic(self.splits.source)}  # fmt: skip


def at_cache_size(cfg: Config, paths: Paths, log: Callable[[str], None] = print) -> Config:
    """``cfg`` with IMAGE_SIZE read from the image cache: notebook 01 chose the size, and 02 trains at it.

    Only the default (224) is replaced; another IMAGE_SIZE that differs from the cache is kept, and training
    refuses it with the fix. Without a cache, ``cfg`` as it is (training then says to run 01)."""
    size = cached_image_size(paths.image_cache_dir)
    default = Config.__dataclass_fields__["image_size"].default
    if size is None or size == cfg.image_size or cfg.image_size != default:
        return cfg
    log(f"IMAGE_SIZE={size}: the size notebook 01 cached the images at")
    return cfg.replace(image_size=size)


def load_training_data(cfg: Config, paths: Paths, variant: Recipe, progress: bool = True) -> TrainingData:
    """The data of a run of ``cfg``, with what its ``variant`` adds (more images, a train-time transform)."""
    splits = load_splits(paths)
    cache = ImageCache(restore_cache(paths.image_cache_dir, paths.cache_dir, progress=progress))
    if cache.image_size != cfg.image_size:
        raise ConfigError(
            f"IMAGE_SIZE={cfg.image_size}, but the image cache holds {cache.image_size}px images: set "
            f"IMAGE_SIZE={cache.image_size}, or re-run 01_dataset_prep.ipynb with IMAGE_SIZE={cfg.image_size}"
        )
    train_text = load_text_embeds(paths.text_embeds_path("train"), cfg.text_model)
    val_text = load_text_embeds(paths.text_embeds_path("val"), cfg.text_model)
    captions = {"train_text_embeds.pt": ("train2014", train_text), "val_text_embeds.pt": ("val2014", val_text)}
    check_sources(splits.source, cache.manifest["parts"], captions, str(paths.artifacts_dir))  # before the first step
    train_ids = splits.train
    extra = [i for hook in variant.each("extra_train_images") for i in hook(splits, cache)]  # e.g. restval
    if extra:
        train_ids, train_text = train_ids + extra, with_images_from(train_text, val_text, extra)
    transform = variant.single("train_transform")
    # notebook 01's Dataset, as the caption cache recorded it (with_data_code); uint8 images
    train_set = lab_dataset(cfg.lab, cache, train_text, train_ids, "train", cfg.seed, transform=transform and transform())
    val_set = lab_dataset(cfg.lab, cache, val_text, splits.val, "eval", cfg.seed)
    inputs = run_inputs(splits.digest, cache, train_text, val_text, train_ids, splits.val)
    return TrainingData(splits, cache, train_set, val_set, int(train_text["embeddings"].shape[1]), inputs)
