"""The CLIP objective: symmetric InfoNCE over in-batch negatives.

Intuition. A batch holds B matching (image, caption) pairs. Each image is an
*anchor*; its own caption is the *positive*; the other B-1 captions in the batch are
*negatives*. The loss is a B-way classification "which caption is mine?" over cosine
similarities, and the same again from each caption's side ("which image is mine?");
the two cross-entropies are averaged. Minimising it pulls matching pairs together and
pushes every non-matching pair apart: the whole batch supplies the contrast.

Temperature. Cosine similarities live in [-1, 1], far too flat for a softmax, so
they are multiplied by ``logit_scale = 1 / tau``. A small tau (CLIP starts at 0.07,
scale ~14.3) sharpens the softmax: the loss concentrates on the hardest negatives.
Too small and training becomes unstable; too large and all negatives look alike.
CLIP learns ``log(1/tau)`` and clamps the scale at 100.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """``logit_scale * image @ text.T`` for L2-normalised features; row i is image i."""
    return logit_scale * image_features @ text_features.t()


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE: mean of image->text and text->image cross-entropy; pair i is the positive."""
    logits = clip_logits(image_features.float(), text_features.float(), logit_scale)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


@torch.no_grad()
def in_batch_hits(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Top-1 hits inside the batch, [image->text, text->image], left on the device (no sync)."""
    sims = image_features.float() @ text_features.float().t()
    labels = torch.arange(sims.shape[0], device=sims.device)
    return torch.stack([(sims.argmax(1) == labels).sum(), (sims.argmax(0) == labels).sum()])


def in_batch_accuracy(image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[float, float]:
    """Top-1 retrieval accuracy inside the batch: (image->text, text->image)."""
    i2t, t2i = (in_batch_hits(image_features, text_features).float() / image_features.shape[0]).tolist()
    return i2t, t2i
