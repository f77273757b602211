"""The optimizer and the learning-rate schedule of a run.

Why its own module: the trainer only asks for "an optimizer for this model" and "the LR at
this step"; the choices (which parameters decay, which variant scales which lr, warmup, cosine)
are read here in one place, and a rollback can lower the LR without rebuilding anything.
"""

from __future__ import annotations

import math

import torch

from ..clip.flags import Recipe
from ..core.config import Config


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int) -> float:
    """Multiplier on LR at ``step``: linear warmup, then constant or cosine decay to 0."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def make_optimizer(model: torch.nn.Module, cfg: Config, variant: Recipe, lr: float) -> torch.optim.Optimizer:
    """AdamW (or Adam, or SGD with Nesterov momentum) with one parameter group per (decay, lr multiplier).

    CLIP practice: no weight decay on biases, norm layers and the temperature. Each group keeps its
    ``lr_mult`` (the variant's LR factors: ``disc_lr`` trains a pretrained backbone slower than the head).
    """
    buckets: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and name != "logit_scale"
        buckets.setdefault((decay, variant.lr_multiplier(name, cfg.image_weights is not None)), []).append(p)
    groups = [
        {"params": params, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_mult": mult, "lr": lr * mult}
        for (decay, mult), params in sorted(buckets.items())
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups)
    return torch.optim.SGD(groups, momentum=0.9, nesterov=True)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, schedule: str, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, schedule, warmup))


def set_base_lr(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, lr: float) -> None:
    """Change the base LR mid-run (a rollback halves it), keeping each group's multiplier and the schedule's position."""
    scheduler.base_lrs = [lr * g["lr_mult"] for g in optimizer.param_groups]
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for group in optimizer.param_groups:
        group["initial_lr"] = lr * group["lr_mult"]
        group["lr"] = group["initial_lr"] * factor


def head_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate at multiplier 1 (the head's), for logs and plots."""
    return max(g["lr"] / g["lr_mult"] for g in optimizer.param_groups)
