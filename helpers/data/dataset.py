"""Loading the prepared caches, GPU normalisation and loaders tuned for 2 CPU cores, around the lab's Dataset.

The Dataset itself is the lab's code (notebook 01's cell ``dataset``: ``CocoCacheDataset``), recorded in the caption
caches with the caption encoding (:func:`data_code`): notebooks 02 and 03 read the data with the cell that 01 ran.

Why this shape: the image cache holds 224 px JPEGs, so a worker only has to decode a
small JPEG (libjpeg-turbo through torchvision); the result stays uint8 until it is on
the device, where :func:`normalize_images` converts and normalises a whole batch at
once (4x less host-to-device traffic than float32, and no per-image CPU arithmetic).
Caption embeddings come precomputed from ``*_text_embeds.pt``.

Modes:
- ``"train"``: one item per image; its caption is drawn at random *per epoch*, from a
  seed derived from (seed, epoch, image id), so a resumed run sees the same captions;
- ``"eval"``: one item per image with its first caption (fixed);
- ``"captions"``: one item per caption (all captions), for retrieval.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..core.artifacts import load_torch
from ..core.config import Config, with_lab
from ..core.env import Paths, default_num_workers
from ..core.lab import LabCode, YourCodeError, as_your_error, call_yours, came_back
from ..core.provenance import text_tower_id, tower_of

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_CACHE_KEYS = ("embeddings", "caption_ids", "image_ids", "captions", "model", "normalized", "config")


class TextCacheMismatch(RuntimeError):
    """The caption cache was built with another TEXT_MODEL (or is not a caption cache)."""


def data_code(text: dict[str, Any], fallback: LabCode | None = None) -> LabCode:
    """The lab code of a caption cache: notebook 01's cells (the caption encoding, the Dataset) as they ran when it was
    written; an older cache that did not record them reads with the notebooks' (or ``fallback``'s)."""
    return LabCode.from_record(text.get("lab_code"), fallback=fallback)


def with_data_code(cfg: Config, paths: Paths) -> Config:
    """``cfg`` reading the data with notebook 01's lab cells as 01 ran them (the Dataset, the caption encoding): the train
    caption cache records them. Without a cache, ``cfg`` as it is (training then says to run 01)."""
    path = paths.text_embeds_path("train")
    if not path.exists():
        return cfg
    try:
        record = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("lab_code")
    except Exception:  # damaged or foreign: the loader's error names the problem and the fix, when training reads it
        return cfg
    return with_lab(cfg, data_code({"lab_code": record}, fallback=cfg.lab)) if record else cfg


def lab_dataset(lab: LabCode, cache: Any, text: dict[str, Any], image_ids: list[int], *args: Any, **kwargs: Any) -> Any:
    """``lab``'s ``CocoCacheDataset`` (notebook 01's cell) over ``image_ids``, its first item checked: an edit that raises,
    or returns what no batch can be made of, names the cell before training or scoring starts (not deep in a loader, or as
    a fault of the model that received it)."""
    dataset = call_yours(lab, "CocoCacheDataset", cache, text, image_ids, *args, **kwargs)
    try:
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):  # a look at the first item draws nothing a run's randomness would see
            first = dataset[0]
        random.setstate(state)
    except Exception as exc:
        named = as_your_error(exc, "reading the Dataset's first item")
        if named is None:
            raise
        raise named from exc
    problem = _item_problem(first, int(text["embeddings"].shape[1]), normalized=kwargs.get("normalize") is not None)
    if problem:
        raise YourCodeError(f"Your `CocoCacheDataset` ({lab.defining('CocoCacheDataset').where}) returned, for its first item, "
                            f"{problem}")  # fmt: skip
    return dataset


def _item_problem(item: Any, embed_dim: int, normalized: bool) -> str | None:
    """What is wrong with one item of the Dataset (None: nothing): (image [3, H, W] uint8, or float when it normalises;
    caption embedding [embed_dim] float; image id; caption text), as the loaders and the model read it."""
    if not (isinstance(item, (tuple, list)) and len(item) == 4):
        size = f" of {len(item)}" if isinstance(item, (tuple, list)) else ""
        return f"a {type(item).__name__}{size}; the kit needs (image, caption embedding, image id, caption)"
    image, embedding, image_id, caption = item
    wanted = "a float" if normalized else "a uint8"
    if not torch.is_tensor(image) or image.dim() != 3 or image.shape[0] != 3 or (image.dtype == torch.uint8) == normalized:
        return f"{came_back(image)} as the image; the kit needs {wanted} tensor of shape [3, H, W] (the cached pixels)"
    if not torch.is_tensor(embedding) or tuple(embedding.shape) != (embed_dim,) or not embedding.is_floating_point():
        return (f"{came_back(embedding)} as the caption embedding; the kit needs a float tensor of shape ({embed_dim},) "
                "(a caption cache row)")
    if isinstance(image_id, bool) or not isinstance(image_id, int) or not isinstance(caption, str):
        return f"{type(image_id).__name__} and {type(caption).__name__} as the image id and caption; the kit needs an int and a str"
    return None


def load_text_embeds(path: str | Path, expected_model: str | None = None) -> dict[str, Any]:
    """Load a ``*_text_embeds.pt`` (weights_only) and check it came from ``expected_model``."""
    data = load_torch(path, "text_embeds")  # damaged or foreign files: ArtifactError naming the fix
    if expected_model is None:
        return data
    then, now = tower_of(data), text_tower_id(expected_model)  # a local folder: by its files' content
    if then == now:
        return data  # the same tower, wherever its folder is now
    if "model_id" not in data and data["model"] == expected_model:
        raise TextCacheMismatch(
            f"{path} was written by an older version of the kit, which did not record what the local text tower in "
            f"{expected_model} held: re-run 01_dataset_prep.ipynb (it encodes the captions again and records it)."
        )
    if data["model"] == expected_model:
        raise TextCacheMismatch(
            f"{path} was encoded by the text tower in {expected_model} as it was then ({then}), but the folder now holds "
            f"another tower ({now}): its weights or tokenizer files changed. Re-run 01_dataset_prep.ipynb to encode the "
            "captions with the tower it holds now, or put the old tower back."
        )
    raise TextCacheMismatch(
        f"{path} was encoded with TEXT_MODEL={data['model']!r}, but this run uses {expected_model!r}. "
        "Set TEXT_MODEL to match, or re-run 01_dataset_prep.ipynb with the new TEXT_MODEL to rebuild the cache."
    )


def text_embed_width(path: str | Path) -> int:
    """The caption-embedding width (512 for ViT-B/32: the projection head's output size), read from the
    file's tensor metadata: ``mmap=True`` maps the embeddings instead of reading them (~800 MB for train2014)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["embeddings"].shape[1])
    except Exception:  # absent, damaged or foreign: the full loader's error names the problem and the fix
        return int(load_text_embeds(path)["embeddings"].shape[1])


def normalize_images(
    images: torch.Tensor, device: torch.device | str, channels_last: bool = False, dtype: torch.dtype = torch.float32,
    size: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """uint8 [B, 3, H, W] (any device) -> CLIP-normalised float on ``device``; ``size`` (the resolution schedule's): resized
    there to ``size`` x ``size`` (bilinear, antialiased), so a lower training size costs no CPU work and no second cache."""
    x = images.to(device, non_blocking=True).to(dtype).div_(255.0)
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=dtype).view(1, 3, 1, 1)
    x = (x - mean) / std
    if size is not None and size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    num_workers: int | None = None,
    drop_last: bool = False,
    pin_memory: bool | None = None,
    sampler: torch.utils.data.Sampler | None = None,
) -> DataLoader:
    """A DataLoader whose shuffle order is a function of (seed, epoch): resume sees the same order.

    Under DDP pass a DistributedSampler (its own per-epoch seeding replaces ``shuffle``).
    """
    workers = default_num_workers(num_workers)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=generator,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


def with_images_from(train_text: dict[str, Any], other_text: dict[str, Any], image_ids: list[int]) -> dict[str, Any]:
    """``train_text`` plus the captions of ``image_ids`` taken from another split's caption cache (``restval``:
    train2014's captions plus those of the cached val2014 images in neither Karpathy split)."""
    keep = torch.isin(other_text["image_ids"], torch.tensor(image_ids))
    return {
        **train_text,  # the tower (model, model_id) and the train cache's record
        "embeddings": torch.cat([train_text["embeddings"], other_text["embeddings"][keep]]),
        "caption_ids": torch.cat([train_text["caption_ids"], other_text["caption_ids"][keep]]),
        "image_ids": torch.cat([train_text["image_ids"], other_text["image_ids"][keep]]),
        "captions": train_text["captions"] + [c for c, k in zip(other_text["captions"], keep.tolist()) if k],
    }

