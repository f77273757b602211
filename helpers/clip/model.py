"""The trainable image tower: torchvision ResNet50 + projection head into CLIP's text space.

What trains and why. The text tower (CLIP ViT-B/32's) stays frozen: its caption
embeddings were computed once in notebook 01 and serve as fixed targets, so the
image tower learns to *land in an existing, well-structured text space*. That needs
no text gradients (cheap), keeps live text queries compatible with the cached
captions, and cannot collapse the text side. The ResNet50 trunk (ImageNet weights)
and the new projection head both train; the head maps the 2048-d pooled features
through Linear -> GELU -> Linear into the 512-d text space. The temperature is
either fixed (tau = 0.07) or learned as ``log(1/tau)``, clamped at ln 100 like CLIP.

The model itself is the lab's code: ``projection_head`` and ``ClipImageModel`` are defined in notebook 02's cells
(helpers/core/lab.py). This module is the plumbing around them: the architecture is fully described by
:func:`model_config`, a plain dict stored in every checkpoint beside the lab cells' text, and :func:`build_model` (the
one factory of the model, for the trainer, the doctor, the benchmarks and every reader of a run) rebuilds exactly that
architecture from that code, so a checkpoint is never loaded into the wrong variant or the wrong cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import markdown
from ..core.config import Config
from ..core.lab import LabCode, YourCodeError, as_your_error
from .flags import Recipe, canonical

ARCH_KEYS = ("image_backbone", "hidden_dim", "embed_dim", "variant", "learnable_temperature", "temperature")


class CheckpointMismatch(RuntimeError):
    """A checkpoint's architecture differs from the one requested."""


def model_config(cfg: Config, embed_dim: int) -> dict[str, Any]:
    """The plain-dict architecture description stored in checkpoints."""
    return {
        "image_backbone": cfg.image_backbone,
        "image_weights": cfg.image_weights,
        "hidden_dim": cfg.hidden_dim,
        "embed_dim": int(embed_dim),
        "variant": canonical(cfg.variant),  # one spelling: "augment+head_ln" is "head_ln+augment"
        "temperature": cfg.temperature,
        "learnable_temperature": cfg.learnable_temperature,
    }


def _comparable(arch: dict[str, Any]) -> dict[str, Any]:
    """The architecture keys, with the variant in its canonical spelling ("head_ln+augment" == "augment+head_ln")."""
    out = {k: arch.get(k) for k in ARCH_KEYS}
    try:
        out["variant"] = canonical(out["variant"])
    except (ValueError, TypeError, AttributeError):
        pass  # an unknown stored variant differs from any requested one: reported below
    return out


def check_same_architecture(stored: dict[str, Any], requested: dict[str, Any], where: str) -> None:
    stored, requested = _comparable(stored), _comparable(requested)
    diffs = {k: (stored[k], requested[k]) for k in ARCH_KEYS if stored[k] != requested[k]}
    if diffs:
        detail = ", ".join(f"{k.upper()}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in diffs.items())
        raise CheckpointMismatch(
            f"{where} was trained with a different architecture ({detail}). Use another RUN_NAME for the new "
            "settings, set FORCE_RETRAIN=True to overwrite it, or load it with the settings it was trained with."
        )


def _trunk(backbone: str, weights: str | None) -> tuple[nn.Module, int]:
    """torchvision's ResNet (ImageNet weights, or random with None) without its 1000-way classifier: pooled features."""
    import torchvision

    net = _pretrained(backbone, weights) if weights else getattr(torchvision.models, backbone)(weights=None)
    in_dim = net.fc.in_features  # 2048 for ResNet50: the global-average-pooled output of the last stage
    net.fc = nn.Identity()  # the projection head replaces the ImageNet classifier
    return net, in_dim


def _pretrained(backbone: str, weights: str) -> nn.Module:
    """The ResNet with ``weights``: a torchvision weights name (downloaded once into torch's hub folder), or the path of
    a local weights file (a ``state_dict`` saved with ``torch.save``). Offline, the error says what to do."""
    import urllib.error

    import torchvision

    if Path(weights).expanduser().is_file():  # a local file: no download at all
        net = getattr(torchvision.models, backbone)(weights=None)
        net.load_state_dict(torch.load(Path(weights).expanduser(), map_location="cpu", weights_only=True))
        return net
    enum = _weights_enum(backbone, weights)
    try:
        return getattr(torchvision.models, backbone)(weights=enum)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        from torch import hub

        where = Path(hub.get_dir()) / "checkpoints" / Path(enum.url).name
        raise ConnectionError(
            f"Cannot download the {backbone} weights IMAGE_WEIGHTS={weights!r} ({enum.url}): {exc}. This machine has no "
            f"internet. Either switch it on (Kaggle: Settings -> Internet on), or download that file elsewhere and put it "
            f"at {where} (where torch looks first), or set IMAGE_WEIGHTS to the path of a local weights file, or "
            "IMAGE_WEIGHTS=None to train the trunk from scratch (much weaker)."
        ) from None


def _weights_enum(backbone: str, weights: str | None) -> Any:
    """IMAGE_WEIGHTS as torchvision's weights enum member, with the valid names in the error."""
    import torchvision

    if weights is None:
        return None
    available = torchvision.models.get_model_weights(backbone)
    if weights not in available.__members__:
        raise ValueError(
            f"IMAGE_WEIGHTS={weights!r} is not a torchvision weights name for {backbone}: "
            f"use one of {', '.join(available.__members__)} or None (random init)"
        )
    return available[weights]


class _Pooled(nn.Module):
    """A variant's pooling ([B, C, H, W] -> [B, C]) in the place of the trunk's average pooling: ResNet.forward flattens
    after it, so the output keeps a trailing [1, 1]."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)[:, :, None, None]


def build_model(arch: dict[str, Any], lab: LabCode, pretrained: bool = True) -> nn.Module:
    """The image model ``arch`` describes, built with ``lab``'s code (notebook 02's ``ClipImageModel`` and
    ``projection_head``); ``pretrained=False`` when the weights come from a checkpoint.

    The kit's part: the trunk (torchvision's ResNet, its ImageNet weights downloaded or read from a local file, the
    classifier removed) and a modification's pooling or head (notebook 04). Built in this order (trunk, pooling, head,
    temperature), so that a seed gives the same initial weights whatever reads the run."""
    variant = Recipe.of(arch["variant"], lab)  # the modifications (notebook 04, its cells as ``lab`` holds them); none: baseline
    trunk, in_dim = _trunk(arch["image_backbone"], arch["image_weights"] if pretrained else None)
    pooling = variant.single("pooling")  # a variant's pooling, instead of global average pooling
    if pooling is not None:
        trunk.avgpool = _Pooled(pooling(in_dim))
    dtype = torch.get_default_dtype()
    try:
        head = (variant.single("head") or lab.projection_head)(in_dim, arch["hidden_dim"], arch["embed_dim"])
        model = lab.ClipImageModel(trunk, head, arch["temperature"], bool(arch["learnable_temperature"]))
    except YourCodeError:
        raise
    except Exception as exc:  # raised in the student's head or model cell: named, with its line
        named = as_your_error(exc, "while the image model was built")
        if named is None:
            raise
        raise named from exc
    if torch.get_default_dtype() != dtype:  # a global change would make every later tensor of the session another type
        changed = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        raise YourCodeError(
            f"Your head or model (notebook 02's cells `projection-head`, `image-model`, or a modification's head) changed torch's "
            f"default dtype from {dtype} to {changed}: give the layers a dtype of their own (nn.Linear(..., dtype=...)) instead "
            "of torch.set_default_dtype. The default is restored."
        )
    model.arch = dict(arch)
    return model


def parameter_summary(
    model: nn.Module, text_tower: nn.Module | None = None, text_parameters: int | None = None, text_name: str = ""
) -> str:
    """Trainable and frozen parameter counts per component, as a Markdown table.

    The frozen text tower counts too, though notebook 02 never loads it: pass the module, or its parameter count
    (``text_tower.parameter_count``, from its config alone), so that "what is frozen" includes CLIP's ~63M."""
    rows = []
    components = [("image trunk (ResNet)", model.trunk), ("projection head", model.head)]
    if text_tower is not None:
        text_parameters = sum(p.numel() for p in text_tower.parameters())
    for name, module in components:
        params = list(module.parameters())
        rows.append((name, sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params if not p.requires_grad)))
    ls = model.logit_scale
    rows.append(("logit scale (temperature)", ls.numel() if ls.requires_grad else 0, 0 if ls.requires_grad else ls.numel()))
    if text_parameters is not None:
        rows.append((f"text tower{f' `{text_name}`' if text_name else ''} (CLIP, frozen: its caption embeddings are cached)", 0,
                     text_parameters))  # fmt: skip
    cells = [[n, f"{t:,}", f"{f:,}"] for n, t, f in rows]
    cells.append(["**total**", f"**{sum(r[1] for r in rows):,}**", f"**{sum(r[2] for r in rows):,}**"])
    return markdown.table(["component", "trainable", "frozen"], cells, numeric=(1, 2))


def describe(arch: dict[str, Any], lab: LabCode) -> dict[str, Any]:
    """The head's layers (``Linear(2048→1024) → GELU → Linear(1024→512)``) and the trainable and frozen parameter
    counts of the image tower ``arch`` describes (trunk and head: the temperature has its own row in the report). Built on
    PyTorch's meta device: no weights, no memory, no download, so the report can describe every run in milliseconds."""
    with torch.device("meta"):
        model = build_model(arch, lab, pretrained=False)
    params = [p for name, p in model.named_parameters() if name != "logit_scale"]  # the temperature is the loss's, not a layer's
    layers = model.head if isinstance(model.head, nn.Sequential) else [model.head]
    return {
        "head": " → ".join(_layer_text(layer) for layer in layers),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "frozen": sum(p.numel() for p in params if not p.requires_grad),
    }


def _layer_text(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear({layer.in_features}→{layer.out_features})"
    if isinstance(layer, nn.Dropout):
        return f"Dropout({layer.p:g})"
    return type(layer).__name__.replace("BatchNorm1d", "BatchNorm")
