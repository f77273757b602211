"""The losses beside the lab's: extra negatives (the caption bank) and VSE++'s max-of-hinges; the lab's own symmetric
InfoNCE, ``clip_loss``, is notebook 02's lab cell. What follows explains it.

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
from dataclasses import dataclass

import torch

CLIP_LOSS_TEXT = "symmetric InfoNCE (`clip_loss`)"  # the report's loss row, unless a variant's loss trains
INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


@torch.no_grad()
def in_batch_hits(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Top-1 hits inside the batch, [image->text, text->image], left on the device (no sync)."""
    sims = image_features.float() @ text_features.float().t()
    labels = torch.arange(sims.shape[0], device=sims.device)
    return torch.stack([(sims.argmax(1) == labels).sum(), (sims.argmax(0) == labels).sum()])



@dataclass(frozen=True)
class Negatives:
    """Extra negative captions for the image->text term (the ``bank`` variant: cached caption embeddings).

    Each image picks its caption among the B batch captions *and* these K: K more negatives per anchor, for the
    price of one [B, K] matrix product. ``is_positive`` ([B, K] bool) marks extra captions of the anchor's own image
    (COCO has ~5 per image) or in its caption's very words: they are left out of the softmax (logit -inf), so an
    image is never pushed away from a caption that describes it. The text->image term stays in-batch: no images here.
    """

    embeddings: torch.Tensor  # [K, D], unit vectors (fp16 on the GPU)
    is_positive: torch.Tensor  # [B, K] bool

    def similarities(self, image_features: torch.Tensor) -> torch.Tensor:
        """[B, K] cosines in float32 (an fp16 product on the GPU; CPUs are faster in fp32)."""
        dtype = self.embeddings.dtype if self.embeddings.is_cuda else torch.float32
        return (image_features.to(dtype) @ self.embeddings.to(dtype).t()).float()

    def logits(self, image_features: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
        return (logit_scale * self.similarities(image_features.float())).masked_fill(self.is_positive, float("-inf"))


VSE_MARGIN = 0.2  # VSE++'s margin (Faghri et al. 2018) on cosine similarities


def max_hinge_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    negatives: Negatives | None = None,
    margin: float = VSE_MARGIN,
) -> torch.Tensor:
    """VSE++'s max-of-hinges loss (``hardneg`` variant): only the *hardest* negative of each anchor counts.

    For image i with caption i: ``[margin - s(i,i) + max_j s(i,j)]_+`` over the other captions j, plus
    the same from the caption's side over the other images. No temperature: the margin sets the
    scale (``logit_scale`` is taken, like every loss, and not used). Averaged over the batch (VSE++ sums; the
    mean keeps the learning rate independent of the batch size). Extra ``negatives`` are candidate hardest
    negatives too.
    """
    img, txt = image_features.float(), text_features.float()
    sims = img @ txt.t()
    positive = sims.diag()
    is_pair = torch.eye(sims.shape[0], dtype=torch.bool, device=sims.device)
    image_to_text = (margin + sims - positive[:, None]).clamp(min=0).masked_fill(is_pair, 0).max(dim=1).values
    text_to_image = (margin + sims - positive[None, :]).clamp(min=0).masked_fill(is_pair, 0).max(dim=0).values
    if negatives is not None:
        extra_cost = (margin + negatives.similarities(img) - positive[:, None]).clamp(min=0).masked_fill(negatives.is_positive, 0)
        image_to_text = torch.maximum(image_to_text, extra_cost.max(dim=1).values)
    return (image_to_text + text_to_image).mean()
