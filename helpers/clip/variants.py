"""Ablation modifications, each a named flag with its own code; the baseline stays untouched.

``VARIANT`` is ``"baseline"`` or flags joined by ``+`` (``"head_ln+augment"``); the run
name derives from it. Every variant goes through the same resumable trainer and the
same evaluation. The flags:

- ``head_ln``   projection head Linear -> LayerNorm -> GELU -> Dropout(0.1) -> Linear.
- ``head_bn``   projection head Linear -> BatchNorm1d -> GELU -> Linear (an earlier kit's flag).
- ``attn_pool`` learned attention pooling over ResNet50's 7x7 feature map instead of global
                average pooling (a learned query attends over the 49 positions).
- ``augment``   caption-safe augmentation: RandomResizedCrop with a mild scale range (0.7-1)
                and mild brightness/contrast jitter. *No horizontal flips* ("a dog on the left"
                would become wrong) and *no hue jitter* ("a red bus" would become a green one).
- ``optim``     linear warmup (5% of steps), cosine decay, gradient clipping at 1.0 and a
                learnable temperature.
- ``disc_lr``   discriminative learning rates: the pretrained trunk at 0.1x LR, the new head at 1x.
                Only a pretrained trunk has features to protect: with IMAGE_WEIGHTS=None the trunk
                learns at 1x and the run logs why.
- ``freeze_bn`` frozen BatchNorm statistics in the trunk (ImageNet running means/vars kept).
- ``restval``   more data: train2014 plus the ~30k "restval" val2014 images that are in neither
                Karpathy split (cache them with INCLUDE_RESTVAL=True in notebook 01).
- ``temp``      a temperature that can actually learn: ``logit_scale`` gets its own parameter
                group at 100x the base LR (AdamW moves a parameter by about its LR per step, so at
                LR 1e-4 the scale could rise from 14 to at most ~52 in a 10-epoch run), no weight
                decay, and is clamped to [0, ln 100] *after* each step, as open_clip does (a clamp
                inside the forward pass zeroes its gradient, so it could never come back down).
- ``bank``      caption-bank negatives: the image->text term scores each image against its batch's
                captions plus BANK_SIZE cached caption embeddings drawn afresh each step (default
                32,768; 0: all ~414k). Possible only because the text tower is frozen: the cached
                embeddings are exactly what the tower would output now, so the bank is never stale.
                Bank captions of the anchor's own image, and captions in the very same words as
                its caption (cached embeddings at cosine >= 0.999: COCO repeats many captions
                verbatim), are masked, never pushed away. Cost per
                step: one [B, K] x 512 matrix product (docs/PERFORMANCE.md). Caveat: near-identical
                captions of *other* images ("a man riding a wave on a surfboard") stay negatives
                (false negatives); with 32k of 414k captions drawn, few collide. Under DDP each
                process draws its own bank, used by the image->text term of its own images.
- ``bigbatch``  batch 256 (4x more in-batch negatives) with the LR scaled by the square-root rule
                (x sqrt(256 / BATCH_SIZE) = x2 from the lab's 64), the usual rule for Adam-type
                optimizers. Measured (docs/PERFORMANCE.md): ResNet50 at 224 px, fp16 AMP + channels_last,
                batch 256 peaks at 12.4 GiB reserved, under the 14.56 GiB of a Colab T4, so no
                gradient caching is needed; if another GPU cannot hold it, the OOM fallback halves
                the batch and logs it.
- ``hardneg``   VSE++'s max-of-hinges loss (margin 0.2): only the hardest negative per anchor
                counts. The published comparison point (VSE++ 41.3 / 30.3 R@1); combines with
                ``bank`` (bank captions become candidate hardest negatives).

Preset ``best`` = ``optim+disc_lr+temp+bank``: the kit's recommendation, each part for a reason.
``temp`` and ``bank`` attack the two weaknesses of the baseline's loss (a softmax that cannot
sharpen, 63 negatives); ``optim`` (warmup, cosine decay, clipping) keeps the larger effective step
of a learnable temperature stable; ``disc_lr`` protects the pretrained trunk from the new head's
early gradients. Measured on the synthetic set (random trunk, so ``disc_lr`` is inactive; 8 epochs,
5 seeds): val R@1 (i2t + t2i) 0.63-0.73 against the baseline's 0.42-0.60 (tests/test_objectives.py
checks it). Left out, each a one-word entry of VARIANTS for the ablation to judge: ``augment``
(a crop can cut out what the caption names; on the synthetic set ``augment+optim+temp+bank`` fell
back to the baseline's level, 0.43-0.61), ``restval`` (needs INCLUDE_RESTVAL=True in 01;
``best+restval`` adds 30k images when you have it), ``hardneg`` (VSE++ needed a long warm start
without it, and InfoNCE with a bank already weights hard negatives), ``bigbatch`` (a slower step
for negatives the bank already supplies).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..core import markdown
from ..core.flags import BASELINE, EXCLUSIVE, FLAGS, PRESETS, canonical, parse_variant  # noqa: F401  (the variant vocabulary)

TEMP_LR_FACTOR = 100.0  # logit_scale's LR / base LR under ``temp``
BIGBATCH_SIZE = 256
DISC_LR_TRUNK_FACTOR = 0.1
OPTIM_WARMUP_FRACTION = 0.05
OPTIM_GRAD_CLIP = 1.0


# What each flag changes and why it might help: notebook 04 shows this table, the report the rows of the variants run.
CHANGES: dict[str, tuple[str, str]] = {
    'head_ln': (
        'head: Linear → LayerNorm → GELU → Dropout(0.1) → Linear',
        'normalised, regularised projection',
    ),
    'head_bn': (
        'head: Linear → BatchNorm → GELU → Linear',
        "an earlier kit's variant",
    ),
    'attn_pool': (
        'learned attention pooling over the 7×7 map instead of average pooling',
        'keeps *where* things are',
    ),
    'augment': (
        'RandomResizedCrop (scale 0.7–1) + mild brightness/contrast',
        'more views of each image',
    ),
    'optim': (
        '5% linear warmup, cosine decay, gradient clipping 1.0, learnable temperature',
        'smoother optimisation',
    ),
    'disc_lr': (
        'trunk at 0.1× LR, head at 1×',
        'protects the pretrained ImageNet features',
    ),
    'freeze_bn': (
        'trunk BatchNorm statistics frozen',
        'batch statistics of 64 images are noisy',
    ),
    'restval': (
        '+ the ~30k val2014 images in neither Karpathy split',
        'more data (cache them in 01)',
    ),
    'temp': (
        'the temperature learns: `logit_scale` in its own parameter group at 100× LR, no weight decay, clamped to [0, ln 100] '
        'after each step',
        "AdamW moves log(scale) by at most about its LR per step: at LR 1e-4, over a 10-epoch run (~12,900 steps), the scale "
        "could rise from 14 to at most ~52; at 100× LR it can reach CLIP's clamp of 100 within a few hundred steps",
    ),
    'bank': (
        "the image→text term also scores `BANK_SIZE` (32,768) cached captions drawn afresh each step; the image's own captions, "
        "and captions in the very same words, are masked",
        '63 negatives per image become ~32,800; the frozen text tower keeps the bank exact, never stale',
    ),
    'bigbatch': (
        'batch 256, LR × √(256/64) = 2× (square-root rule for Adam)',
        '4× more in-batch negatives; the OOM fallback halves it if the GPU is full',
    ),
    'hardneg': (
        "VSE++'s max-of-hinges loss (margin 0.2): only the hardest negative counts",
        'the published comparison point (VSE++: 41.3 / 30.3 R@1)',
    ),
    'best': (
        'preset: `optim+disc_lr+temp+bank`',
        "the kit's recommendation; reasons (and why `augment` is left out) in `helpers/clip/variants.py`; `best+augment` adds it",
    ),
}


# Where each flag's code lives (dotted names, resolved by helpers.teach.variant_code_markdown): notebook 04 shows the
# code of every variant that runs, as 02 shows the baseline's. Names, not imports: some live in layers above this one.
CODE: dict[str, tuple[str, ...]] = {
    "head_ln": ("helpers.clip.variants.head_ln", "helpers.clip.variants.build_head"),
    "head_bn": ("helpers.clip.variants.head_bn", "helpers.clip.variants.build_head"),
    "attn_pool": ("helpers.clip.variants.AttentionPool2d", "helpers.clip.variants.apply_pooling"),
    "augment": ("helpers.clip.variants.CaptionSafeAugment", "helpers.clip.variants.train_transform"),
    "optim": ("helpers.clip.variants.training_overrides", "helpers.clip.variants.warmup_steps"),
    "disc_lr": ("helpers.clip.variants.lr_multiplier",),
    "freeze_bn": ("helpers.clip.variants.freeze_batchnorm_stats",),
    "restval": ("helpers.training.train_data.with_restval",),
    "temp": (
        "helpers.clip.variants.training_overrides",
        "helpers.clip.variants.lr_multiplier",
        "helpers.clip.model.ClipImageModel.clamp_logit_scale",
    ),
    "bank": ("helpers.training.bank.CaptionBank.draw", "helpers.training.bank.bank_positives", "helpers.clip.loss.clip_loss_with_bank"),
    "bigbatch": ("helpers.clip.variants.training_overrides",),
    "hardneg": ("helpers.clip.loss.max_hinge_loss",),
}


def flags_of(variants: list[str]) -> list[str]:
    """The flags the ``variants`` use (presets expanded), in the order of :data:`CHANGES`."""
    used = set().union(*(parse_variant(v) for v in variants)) if variants else set()
    return [name for name in CHANGES if name in used]


def changes_markdown(variants: list[str] | None = None) -> str:
    """The flags of ``variants`` (all flags and presets when None): what each changes and why it might help."""
    if variants is None:
        names = list(CHANGES)
    else:
        names = [n for n in CHANGES if any(n == v or n in parse_variant(v) for v in variants if v != BASELINE)]
        names += [v for v in variants if v in PRESETS and v not in names]
    rows = [[f"`{name}`", *CHANGES[name]] for name in names]
    return markdown.table(["flag", "what changes", "why it might help"], rows)


# ----------------------------------------------------------------------------- heads
def head_ln(in_dim: int, hidden_dim: int, embed_dim: int, dropout: float = 0.1) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, embed_dim)
    )


def head_bn(in_dim: int, hidden_dim: int, embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))


class AttentionPool2d(nn.Module):
    """Learned attention pooling (as in CLIP's ResNets): the mean token, plus positional
    embeddings, queries all spatial positions; output has the input's channel count."""

    def __init__(self, channels: int, spatial: int = 7, heads: int = 8):
        super().__init__()
        self.positional = nn.Parameter(torch.randn(spatial * spatial + 1, channels) / channels**0.5)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.spatial = spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        pos = self.positional
        if tokens.shape[1] != pos.shape[0]:  # other input sizes: interpolate the positional grid
            grid = pos[1:].T.reshape(1, -1, self.spatial, self.spatial)
            side = math.isqrt(tokens.shape[1] - 1)
            grid = nn.functional.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:1], grid.reshape(pos.shape[1], -1).T])
        tokens = tokens + pos.to(tokens.dtype)
        out, _ = self.attn(tokens[:, :1], tokens, tokens, need_weights=False)
        return out[:, 0]


def build_head(flags: frozenset[str], in_dim: int, hidden_dim: int, embed_dim: int) -> nn.Module | None:
    """The variant's head, or None for the baseline head."""
    if "head_ln" in flags:
        return head_ln(in_dim, hidden_dim, embed_dim)
    if "head_bn" in flags:
        return head_bn(in_dim, hidden_dim, embed_dim)
    return None


def apply_pooling(flags: frozenset[str], trunk: nn.Module, channels: int) -> None:
    """Swap the trunk's global average pooling for attention pooling (``attn_pool``)."""
    if "attn_pool" in flags:
        trunk.avgpool = _AttentionPoolFlatten(AttentionPool2d(channels))


class _AttentionPoolFlatten(nn.Module):
    """ResNet.forward flattens after avgpool; attention pooling already returns [B, C], with a
    trailing [1, 1] view so that flatten is a no-op."""

    def __init__(self, pool: AttentionPool2d):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)[:, :, None, None]


# ----------------------------------------------------------------------------- training
def training_overrides(flags: frozenset[str], batch_size: int, lr: float) -> dict[str, Any]:
    """Config changes a variant implies (``optim``, ``temp``, ``bigbatch``)."""
    out: dict[str, Any] = {}
    if "optim" in flags:
        out.update(lr_schedule="cosine", grad_clip=OPTIM_GRAD_CLIP, learnable_temperature=True)
    if "temp" in flags:
        out.update(learnable_temperature=True)
    if "bigbatch" in flags and batch_size < BIGBATCH_SIZE:
        out.update(batch_size=BIGBATCH_SIZE, lr=lr * math.sqrt(BIGBATCH_SIZE / batch_size))
    return out


def warmup_steps(flags: frozenset[str], configured: int, total_steps: int) -> int:
    if configured or "optim" not in flags:
        return configured
    return max(1, int(OPTIM_WARMUP_FRACTION * total_steps))


DISC_LR_RANDOM_TRUNK = "disc_lr: the trunk starts from random weights (IMAGE_WEIGHTS=None), nothing to protect: it learns at the full LR"


def lr_multiplier(flags: frozenset[str], parameter_name: str, pretrained_trunk: bool = True) -> float:
    """``disc_lr``: a pretrained trunk learns 10x slower than the new head; ``temp``: the logit scale 100x faster."""
    if "temp" in flags and parameter_name == "logit_scale":
        return TEMP_LR_FACTOR
    slow_trunk = "disc_lr" in flags and pretrained_trunk and parameter_name.startswith("trunk.")
    return DISC_LR_TRUNK_FACTOR if slow_trunk else 1.0


def freeze_batchnorm_stats(flags: frozenset[str], model: nn.Module) -> None:
    """``freeze_bn``: keep the trunk's BatchNorm layers in eval mode (running stats frozen)."""
    if "freeze_bn" in flags:
        for module in model.trunk.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


class CaptionSafeAugment:
    """RandomResizedCrop (scale 0.7-1, aspect 3/4-4/3) back to the same size, plus mild
    brightness/contrast jitter, on uint8 CHW tensors. No flips, no hue changes."""

    def __init__(self, scale: tuple[float, float] = (0.7, 1.0), jitter: float = 0.15):
        self.scale, self.jitter = scale, jitter

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import v2

        size = image.shape[-1]
        crop = v2.RandomResizedCrop(size, scale=self.scale, ratio=(3 / 4, 4 / 3), antialias=True)
        color = v2.ColorJitter(brightness=self.jitter, contrast=self.jitter)
        return color(crop(image))


def train_transform(flags: frozenset[str]) -> CaptionSafeAugment | None:
    return CaptionSafeAugment() if "augment" in flags else None
