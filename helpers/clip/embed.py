"""Image embeddings of a whole split, and the mixed-precision choice: shared by training and evaluation.

Validation during training and the final evaluation must embed images the same way
(same normalisation, precision and memory format), so both call :func:`encode_images`.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset  # the lab's CocoCacheDataset (notebook 01's cell)

from ..data.dataset import make_loader, normalize_images


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 on GPUs with native support (Ampere+), fp16 (+ GradScaler) on older ones such as the T4; None on CPU."""
    if not enabled or device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


@torch.no_grad()
def encode_images(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device,
    batch_size: int = 128,
    amp: bool = True,
    num_workers: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Unit embeddings [N_images, D] (float32, CPU) of an eval-mode dataset, in its order."""
    from tqdm.auto import tqdm

    model.eval()
    dtype = amp_dtype(device, amp)
    channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)  # in place; a no-op for a model already converted
    out = []
    for images, *_ in tqdm(
        make_loader(dataset, batch_size, False, num_workers=num_workers), desc="Encoding images", unit="batch", disable=not progress
    ):
        x = normalize_images(images, device, channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out.append(model.encode_image(x).float().cpu())
    return torch.cat(out)
