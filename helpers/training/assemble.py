"""The one factory of a run's parts: the model, the optimizer, the fp16 scaler, the loss and the step.

Why one: the trainer, the doctor (which times the run's own steps before it starts) and the benchmarks must run the very
same thing, built from the same settings and the same lab code (``cfg.lab``: notebook 02's ``ClipImageModel``,
``projection_head``, ``clip_loss`` and ``training_step``, as the notebook's kernel ran them), with the variant's
records (``Recipe``) resolved once by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..clip.flags import Recipe
from ..clip.model import build_model
from ..core.config import Config
from .optim import make_optimizer


@dataclass
class RunParts:
    """What one training step needs, built together."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: Callable[..., torch.Tensor]  # (image_features, text_features, logit_scale, negatives) -> loss
    step_fn: Callable[..., tuple[float, torch.Tensor]]  # notebook 02's training_step


def loss_and_step(cfg: Config, variant: Recipe) -> tuple[Callable[..., torch.Tensor], Callable[..., Any]]:
    """The run's loss (a modification's, or notebook 02's ``clip_loss``) and its step (02's ``training_step``)."""
    return variant.single("loss") or cfg.lab.clip_loss, cfg.lab.training_step


def assemble(cfg: Config, variant: Recipe, arch: dict[str, Any], device: torch.device, lr: float, amp_dtype: torch.dtype | None,
             channels_last: bool, pretrained: bool = True) -> RunParts:  # fmt: skip
    """A fresh model of ``arch`` on ``device`` (channels_last on request), its optimizer at ``lr``, a GradScaler that is
    on for fp16 only, and the run's loss and step."""
    model = build_model(arch, cfg.lab, pretrained=pretrained).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg, variant, lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return RunParts(model, optimizer, scaler, *loss_and_step(cfg, variant))
