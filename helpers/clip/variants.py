"""The built-in modifications: one record each (helpers/clip/flags.py), the baseline untouched.

``VARIANT`` is ``"baseline"`` or names joined by ``+`` (``"head_ln+augment"``); the run
name derives from it. Every variant goes through the same resumable trainer and the
same evaluation, which read only the records registered at the end of this file: adding a
modification is one ``register(...)`` call (and a test), here or in notebook 04's
``student-modification`` cell. The built-ins:

- ``head_ln``   projection head Linear -> LayerNorm -> GELU -> Dropout(0.1) -> Linear (its code: notebook 04's lab
                cell ``head-ln``, the handout's own modification).
- ``head_bn``   projection head Linear -> BatchNorm1d -> GELU -> Linear (an earlier kit's flag).
- ``attn_pool`` learned attention pooling over ResNet50's 7x7 feature map instead of global
                average pooling (a learned query attends over the 49 positions).
- ``augment``   (its code: notebook 04's lab cell ``augment``) caption-safe augmentation: RandomResizedCrop with a mild scale range (0.7-1)
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
- ``lowres``    the resolution schedule (helpers/core/resolution.py): the first 60% of the epochs at
                160 px, the next 20% at 192 px, the last at 224 px, each resized on the GPU from the
                cached 224 px images; validation and evaluation stay at 224 px. About 0.65x the
                pixels of a 10-epoch run. TRAIN_SIZES gives any other schedule, with or without it.

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
for negatives the bank already supplies), ``lowres`` (its evidence is ImageNet classification
trained with random-resized crops, FFCV and Touvron et al. 2019: no published figure gives its cost
in Recall@K for retrieval into a frozen text space, so ``best`` buys no speed with an unmeasured
loss; the ``lowres`` ablation measures it, and ``best+lowres`` takes it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..core import markdown, resolution
from ..core.config import ConfigError
from ..core.lab import LabCode, LabHook
from ..data.dataset import with_images_from
from .bank import CaptionBank, bank_positives
from .flags import BASELINE, UnknownVariant, Variant, canonical, parse_variant, records, register, source_of  # noqa: F401  (the vocabulary)
from .loss import Negatives, max_hinge_loss

TEMP_LR_FACTOR = 100.0  # logit_scale's LR / base LR under ``temp``
BIGBATCH_SIZE = 256
DISC_LR_TRUNK_FACTOR = 0.1
OPTIM_WARMUP_FRACTION = 0.05
OPTIM_GRAD_CLIP = 1.0


# ----------------------------------------------------------------------------- heads and pooling
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


# ----------------------------------------------------------------------------- training
def optim_overrides(settings: dict[str, Any]) -> dict[str, Any]:
    return {"lr_schedule": "cosine", "grad_clip": OPTIM_GRAD_CLIP, "learnable_temperature": True}


def optim_warmup(total_steps: int) -> int:
    return max(1, int(OPTIM_WARMUP_FRACTION * total_steps))


def temp_overrides(settings: dict[str, Any]) -> dict[str, Any]:
    return {"learnable_temperature": True}


def temp_lr_multiplier(parameter_name: str, pretrained_trunk: bool) -> float:
    """The logit scale learns 100x faster than the rest."""
    return TEMP_LR_FACTOR if parameter_name == "logit_scale" else 1.0


def bigbatch_overrides(settings: dict[str, Any]) -> dict[str, Any]:
    """Batch 256 with the LR scaled by the square-root rule (Adam-type optimizers)."""
    batch_size, lr = settings["batch_size"], settings["lr"]
    return {"batch_size": BIGBATCH_SIZE, "lr": lr * math.sqrt(BIGBATCH_SIZE / batch_size)} if batch_size < BIGBATCH_SIZE else {}


def lowres_overrides(settings: dict[str, Any]) -> dict[str, Any]:
    """The resolution schedule for this run's EPOCHS (helpers/core/resolution.py), unless TRAIN_SIZES names one."""
    return {} if settings["train_sizes"] else {"train_sizes": resolution.ramp(settings["epochs"], settings["image_size"])}


DISC_LR_RANDOM_TRUNK = "disc_lr: the trunk starts from random weights (IMAGE_WEIGHTS=None), nothing to protect: it learns at the full LR"


def disc_lr_multiplier(parameter_name: str, pretrained_trunk: bool) -> float:
    """A pretrained trunk learns 10x slower than the new head."""
    return DISC_LR_TRUNK_FACTOR if pretrained_trunk and parameter_name.startswith("trunk.") else 1.0


def disc_lr_notes(settings: dict[str, Any]) -> list[str]:
    return [DISC_LR_RANDOM_TRUNK] if settings.get("image_weights") is None else []


def freeze_batchnorm_stats(model: nn.Module) -> None:
    """Keep the trunk's BatchNorm layers in eval mode (running stats frozen)."""
    for module in model.trunk.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def restval_images(splits: Any, cache: Any) -> list[int]:
    """The cached val2014 images in neither Karpathy split: trained on with their captions (with_images_from)."""
    restval = [i for i in splits.restval if i in cache]
    if not restval:
        raise ConfigError(
            "VARIANT includes 'restval', but no restval images are cached: re-run 01_dataset_prep.ipynb with INCLUDE_RESTVAL=True"
        )
    return restval


def caption_bank(train_set: Any, settings: dict[str, Any], rank: int) -> CaptionBank:
    """BANK_SIZE cached training captions per step (0: all of them); each process draws its own."""
    return CaptionBank(train_set, settings["bank_size"], settings["seed"], rank)


# ----------------------------------------------------------------------------- the records
register(
    "head_ln", "head: Linear → LayerNorm → GELU → Dropout(0.1) → Linear", "normalised, regularised projection",
    head=LabHook("head_ln"), builtin=True,  # notebook 04's lab cell `head-ln`
)
register("head_bn", "head: Linear → BatchNorm → GELU → Linear", "an earlier kit's variant", head=head_bn, builtin=True)
register(
    "attn_pool", "learned attention pooling over the 7×7 map instead of average pooling", "keeps *where* things are",
    pooling=AttentionPool2d, builtin=True,
)
register(
    "augment", "RandomResizedCrop (scale 0.7–1) + mild brightness/contrast", "more views of each image",
    train_transform=LabHook("CaptionSafeAugment"), builtin=True,  # notebook 04's lab cell `augment`
)
register(
    "optim", "5% linear warmup, cosine decay, gradient clipping 1.0, learnable temperature", "smoother optimisation",
    overrides=optim_overrides, warmup=optim_warmup, builtin=True,
)
register(
    "disc_lr", "trunk at 0.1× LR, head at 1×", "protects the pretrained ImageNet features",
    lr_multiplier=disc_lr_multiplier, notes=disc_lr_notes, code=(disc_lr_multiplier,), builtin=True,
)
register(
    "freeze_bn", "trunk BatchNorm statistics frozen", "batch statistics of 64 images are noisy",
    on_train_mode=freeze_batchnorm_stats, builtin=True,
)
register(
    "restval", "+ the ~30k val2014 images in neither Karpathy split", "more data (cache them in 01)",
    extra_train_images=restval_images, code=(restval_images, with_images_from), builtin=True,
)
register(
    "temp",
    "the temperature learns: `logit_scale` in its own parameter group at 100× LR, no weight decay, clamped to [0, ln 100] "
    "after each step",
    "AdamW moves log(scale) by at most about its LR per step: at LR 1e-4, over a 10-epoch run (~12,900 steps), the scale "
    "could rise from 14 to at most ~52; at 100× LR it can reach CLIP's clamp of 100 within a few hundred steps",
    overrides=temp_overrides, lr_multiplier=temp_lr_multiplier,
    code=(temp_overrides, temp_lr_multiplier), builtin=True,
)
register(
    "bank",
    "the image→text term also scores `BANK_SIZE` (32,768) cached captions drawn afresh each step; the image's own captions, "
    "and captions in the very same words, are masked",
    "63 negatives per image become ~32,800; the frozen text tower keeps the bank exact, never stale",
    negatives=caption_bank, negatives_text="image→text also over a caption bank", settings=("bank_size",),
    code=(caption_bank, CaptionBank.draw, CaptionBank.rows, bank_positives, Negatives.logits), builtin=True,
)
register(
    "bigbatch", "batch 256, LR × √(256/64) = 2× (square-root rule for Adam)",
    "4× more in-batch negatives; the OOM fallback halves it if the GPU is full",
    overrides=bigbatch_overrides, builtin=True,
)
register(
    "hardneg", "VSE++'s max-of-hinges loss (margin 0.2): only the hardest negative counts",
    "the published comparison point (VSE++: 41.3 / 30.3 R@1)",
    loss=max_hinge_loss, loss_text="VSE++ max-of-hinges (margin 0.2)", builtin=True,
)
register(
    "lowres",
    "the first 60% of the epochs train at 160 px, the next 20% at 192 px, the last at 224 px (made on the GPU from the "
    "cached images); validation and evaluation stay at 224 px",
    "about 0.65× the pixels of a 10-epoch run: a compute-bound T4 trains it in about two thirds of the time (FFCV's "
    "ResNet-50 configs train at 160-192 px; Touvron et al. 2019 test above the training size)",
    overrides=lowres_overrides, code=(lowres_overrides, resolution.ramp, resolution.size_at), builtin=True,
)
register(
    "best", "preset: `optim+disc_lr+temp+bank`",
    "the kit's recommendation; reasons (and why `augment` and `lowres` are left out) in `helpers/clip/variants.py`; "
    "`best+augment` adds it",
    combines=("optim", "disc_lr", "temp", "bank"), builtin=True,
)  # fmt: skip


# ----------------------------------------------------------------------------- what notebook 04 and the report show
def flags_of(variants: list[str]) -> list[str]:
    """The records the ``variants`` use (presets expanded), in the order of ``variants`` (within one variant, its
    canonical spelling's): the one order of notebook 04 and the report. A name this kernel does not know (a student's
    modification, read back by notebook 05 from ablation.json) keeps its place."""
    return list(dict.fromkeys(name for v in variants for name in _parts(v)))


def _parts(variant: str) -> list[str]:
    try:
        return [name for name in canonical(variant).split("+") if name != BASELINE]
    except UnknownVariant:  # registered in another kernel: its parts as written, each known one expanded
        return [name for part in variant.split("+") for name in _parts(part)] if "+" in variant else [variant]


def changes_markdown(variants: list[str] | None = None) -> str:
    """The records of ``variants`` (every record when None): what each changes and why it might help."""
    known = records()
    names = list(known) if variants is None else [n for n in flags_of(variants) if n in known]
    names += [v for v in variants or [] if v in known and known[v].combines]
    rows = [[f"`{name}`" + ("" if known[name].builtin else " (yours)"), known[name].changes, known[name].why] for name in names]
    return markdown.table(["variant", "what changes", "why it might help"], rows)


def describe(variants: list[str], lab: LabCode | None = None) -> dict[str, dict[str, str]]:
    """Per record the ``variants`` use: its text and its code as Markdown, as it trains now (kept in ablation.json, so
    the report shows a student's modification after the kernel that defined it is gone); ``lab``: the study's lab
    code, whose cells (notebook 04's) are the code of the handout's modifications."""
    known = records()
    return {
        name: {"changes": known[name].changes, "why": known[name].why, "code": code_markdown([name], lab), "builtin": known[name].builtin}
        for name in flags_of(variants)
        if name in known
    }


def code_markdown(variants: list[str], lab: LabCode | None = None) -> str:
    """The code of every record the ``variants`` use, each under its name; a function two records share is shown once
    and named again at the second. Nothing is copied: it is the source that trains (a lab cell of notebook 04 as
    ``lab``, the study's lab code, holds it)."""
    shown: dict[str, str] = {}
    parts = []
    for name in (n for n in flags_of(variants) if n in records()):
        parts.append(f"#### `{name}`")
        for obj in records()[name].code:
            if isinstance(obj, LabHook):
                cell = (lab or LabCode.shipped()).defining(obj.name)
                parts.append(f"{cell.where}\n\n```python\n{cell.source.rstrip()}\n```")
                continue
            where = _where(obj)
            if where in shown:
                parts.append(f"`{where.rsplit('.', 1)[-1]}`: shown above, under `{shown[where]}`.")
                continue
            parts.append(f"`{where}`\n\n```python\n{source_of(obj)}\n```")
            shown[where] = name
    return "\n\n".join(parts) if parts else "No variant beside the baseline: the baseline's code is shown in notebook 02."


def _where(obj: Any) -> str:
    module = getattr(obj, "__module__", "") or ""
    where = "your cell" if module == "__main__" else module
    return f"{where}.{getattr(obj, '__qualname__', repr(obj))}"
