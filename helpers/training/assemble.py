"""The one factory of a run's parts: the model, the optimizer, the fp16 scaler, the loss and the step.

Why one: the trainer, the doctor (which times the run's own steps before it starts) and the benchmarks must run the very
same thing, built from the same settings and the same lab code (``cfg.lab``: notebook 02's ``ClipImageModel``,
``projection_head``, ``clip_loss`` and ``training_step``, as the notebook's kernel ran them), with the variant's
records (``Recipe``) resolved once by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..clip.flags import Recipe
from ..clip.model import build_model
from ..core.config import Config
from ..core.lab import YourCodeError, as_your_error, came_back
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
    """The run's loss (a modification's, or notebook 02's ``clip_loss``) and its step (02's ``training_step``), the loss
    checked on its first call (:func:`checked_loss`)."""
    own = variant.single("loss")
    where = (f"your loss `{getattr(own, '__name__', own)}` (the modification's record, registered in its cell)" if own
             else "the loss of notebook 02's cell `clip-loss`")  # fmt: skip
    students = own is not None or "02:clip-loss" in cfg.lab.edited(("02",))  # the shipped loss at init never gives NaN
    step_edited = "02:training-step" in cfg.lab.edited(("02",))  # the shipped step returns the loss it was given
    return checked_loss(own or cfg.lab.clip_loss, where, finite=students), checked_step(cfg.lab.training_step, finite=step_edited)


def checked_step(step_fn: Callable[..., Any], finite: bool = False) -> Callable[..., Any]:
    """``step_fn`` (notebook 02's ``training_step``), whose first call names the student's code when it fails: an
    exception raised in a lab cell or a cell of the notebook (the step, the model's forward, the head) becomes "Your code
    raised … in `forward`, line 12 of the lab cell `projection-head` …", and a return that is not ``(loss value,
    image features)`` is named too. Out-of-memory passes through (the trainer halves the batch), as does an error of the
    kit or a library. Later calls pass straight through."""
    checked = False

    def step(*args: Any, **kwargs: Any) -> Any:
        nonlocal checked
        if checked:
            return step_fn(*args, **kwargs)
        try:
            out = step_fn(*args, **kwargs)
        except (torch.cuda.OutOfMemoryError, YourCodeError):
            raise
        except Exception as exc:
            named = as_your_error(exc, "on the first training step")
            if named is None:
                raise
            raise named from exc
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], (int, float)) and torch.is_tensor(out[1])):
            got = f"a tuple of {len(out)}" if isinstance(out, tuple) else came_back(out)
            raise YourCodeError(f"The training step (notebook 02's cell `training-step`) returned {got}: the trainer needs "
                                "(the loss as a float, the batch's image features), as the cell's docstring says.")  # fmt: skip
        if finite and not math.isfinite(out[0]):  # an edited step: its own arithmetic, not a learning rate (no update yet)
            raise YourCodeError(f"The training step (notebook 02's cell `training-step`, edited) returned a loss of {out[0]} on "
                                "the first step, from freshly initialised weights: a division by zero or the log of 0 in it?")  # fmt: skip
        checked = True
        return out

    step.__name__ = getattr(step_fn, "__name__", "training_step")
    step.__wrapped__ = step_fn  # type: ignore[attr-defined]
    return step


def checked_loss(loss_fn: Callable[..., torch.Tensor], where: str, finite: bool = False) -> Callable[..., torch.Tensor]:
    """``loss_fn``, whose first call checks what reaches it and what it returns: image features as wide as the caption
    embeddings, one per caption (else the head or model cell is named), and one floating-point number back (else the
    loss is named, with what it returned); with ``finite`` (the student's own loss), a finite one: a NaN from freshly
    initialised weights is the code's, not a learning rate's. Later calls pass straight through (the trainer's guard
    skips a rare bad step)."""
    checked = False

    def loss(image_features: Any, text_features: Any, logit_scale: Any, negatives: Any = None) -> torch.Tensor:
        nonlocal checked
        if not checked and (not torch.is_tensor(image_features) or image_features.shape != text_features.shape):
            raise YourCodeError(
                f"The image model returned {came_back(image_features)} for a batch whose caption embeddings are "
                f"{came_back(text_features)}: check your head or model (notebook 02's cells `projection-head` and `image-model`, "
                "or your modification's head): it must return one feature per image, as wide as the caption embeddings."
            )
        if checked:
            return loss_fn(image_features, text_features, logit_scale, negatives)
        try:
            out = loss_fn(image_features, text_features, logit_scale, negatives)
        except torch.cuda.OutOfMemoryError:
            raise  # the trainer halves the batch: never the code's fault
        except Exception as exc:  # the first call: an error of the code, named as the student's
            raise YourCodeError(f"{where[0].upper()}{where[1:]} raised {type(exc).__name__} on the first step: {exc}") from exc
        if not checked:
            if not torch.is_tensor(out) or out.numel() != 1 or not out.is_floating_point():
                raise YourCodeError(f"{where[0].upper()}{where[1:]} returned {came_back(out)}: a loss is one floating-point number "
                                    "(a 0-dim tensor, e.g. the mean over the batch), from which the step computes gradients.")  # fmt: skip
            if finite and not torch.isfinite(out.detach()).all():
                raise YourCodeError(
                    f"{where[0].upper()}{where[1:]} returned {out.item()} on the first step, from freshly initialised weights: "
                    "a division by zero or the log of 0 in it? (not a learning rate: no update has happened yet)"
                )
            checked = True
        return out

    loss.__name__ = getattr(loss_fn, "__name__", "loss")
    loss.__wrapped__ = loss_fn  # type: ignore[attr-defined]
    return loss


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
