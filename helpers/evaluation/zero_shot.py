"""Zero-shot CLIP on the same split: the ceiling users can compare their run against.

The image tower of the CLIP model named by TEXT_MODEL (ViT-B/32 by default) encodes
the same cached 224 px centre crops with the same normalisation CLIP's own
preprocessing uses (shorter side resized to 224, centre crop, CLIP mean/std), so its
``image_embeds`` land in the same text space as the cached caption embeddings.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.artifacts import first_line
from ..data.dataset import normalize_images
from ..data.image_cache import ImageCache
from ..data.text_tower import pretrained


def vision_tower(model_name: str) -> str:
    """Where the image half of TEXT_MODEL lives: the hub's CLIP models hold both towers in one folder; a local tower
    saved as a text model alone keeps its image half in ``vision/`` (the offline tiny tower, helpers.data.synthetic)."""
    from ..data.synthetic import VISION_SUBFOLDER

    local = Path(model_name) / VISION_SUBFOLDER
    return str(local) if local.is_dir() else model_name


@torch.no_grad()
def zero_shot_image_features(
    model_name: str, cache: ImageCache, image_ids: list[int], device: torch.device, batch_size: int = 128, progress: bool = True
) -> torch.Tensor:
    """Unit ``image_embeds`` [N, D] of ``CLIPVisionModelWithProjection`` for the cached images."""
    from tqdm.auto import tqdm
    from transformers import CLIPVisionModelWithProjection

    try:
        vision = pretrained(CLIPVisionModelWithProjection, vision_tower(model_name), "image tower").to(device).eval()
    except (OSError, ValueError, RuntimeError) as exc:  # MissingWeights too: a text model read as an image tower is random
        from ..data.synthetic import VISION_SUBFOLDER

        where = (f"the local folder holds no image tower, in itself or in its {VISION_SUBFOLDER}/ folder"
                 if Path(model_name).is_dir() else "check the name and the internet connection")  # fmt: skip
        raise OSError(
            f"COMPARE_ZERO_SHOT needs the CLIP image tower of TEXT_MODEL={model_name!r}: {where} ({first_line(exc, 200)}). "
            "Or set COMPARE_ZERO_SHOT=False."
        ) from exc
    size = int(vision.config.image_size)
    use_amp = device.type == "cuda"
    out = []
    for start in tqdm(range(0, len(image_ids), batch_size), desc="Zero-shot CLIP images", unit="batch", disable=not progress):
        batch = torch.stack([cache.load_uint8(i) for i in image_ids[start : start + batch_size]])
        x = normalize_images(batch, device)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            emb = vision(pixel_values=x).image_embeds
        out.append(F.normalize(emb.float(), dim=-1).cpu())
    return torch.cat(out)
