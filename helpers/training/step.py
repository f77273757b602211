"""One training step: forward, loss, backward, optimizer step. The lesson of notebook 02, and what the run executes.

Every input is an argument and nothing else is read or kept: the trainer (helpers/training/train.py) passes the
model, the batch, the loss, the optimizer and the fp16 scaler, and decides what happens around the step (the
LR schedule, the logs, skipped steps, rollback). Notebook 02 shows this function, and its cell tagged
``student-step`` can replace it: :func:`use_training_step` hands the trainer your own function, and the digest
of its source becomes part of the run's identity (a changed line trains a new run), as for a modification of
notebook 04. The doctor times this same step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core import flags


def training_step(
    model: torch.nn.Module,
    images: torch.Tensor,
    text: torch.Tensor,
    loss_fn: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    negatives: object | None = None,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    accept: Callable[[float], bool] | None = None,
) -> tuple[float, torch.Tensor]:
    """Train on one batch; returns (the loss, the batch's image features).

    ``images``: normalised, on the device; ``text``: the captions' cached CLIP embeddings (the frozen text tower's);
    ``loss_fn(image_features, text_features, logit_scale, negatives)``: ``clip_loss`` or a variant's loss;
    ``amp_dtype``: fp16/bf16 autocast on a GPU (None: fp32); ``accept(loss)``: False skips the update (the trainer
    refuses a non-finite or spiking loss).
    """
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        features = model(images)  # the image tower: ResNet trunk -> projection head -> L2-normalised
    loss = loss_fn(features, text, model.scale(), negatives)  # symmetric InfoNCE against the cached caption embeddings
    value = loss.item()
    if accept is not None and not accept(value):
        return value, features  # nothing computed a gradient: the weights stay as they are
    scaler.scale(loss).backward()  # loss.backward(); with fp16 the loss is scaled up so that small gradients survive
    if grad_clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)  # optimizer.step(), skipped by the scaler when fp16 gradients overflowed
    scaler.update()
    model.clamp_logit_scale()  # the temperature stays in CLIP's range: after the step, never inside the forward pass
    optimizer.zero_grad(set_to_none=True)
    return value, features


def use_training_step(step: Callable[..., tuple[float, torch.Tensor]] | None) -> None:
    """Train with ``step`` (the same arguments and result as :func:`training_step`) from now on in this kernel; None
    goes back to the lab's. Its source is digested into the run identity: another step is another run."""
    flags.set_training_step(step)


def current_training_step() -> Callable[..., tuple[float, torch.Tensor]]:
    """The step the trainer runs: the student's (``use_training_step``), or the lab's."""
    return flags.training_step_override() or training_step
