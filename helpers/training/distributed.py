"""Several GPUs with ``torchrun``: process group, global-batch contrastive loss, rank-0 duties.

    torchrun --nproc_per_node=2 -m helpers.train --config run.json

``BATCH_SIZE`` stays the *global* batch; each of the N processes takes BATCH_SIZE / N
images per step (a DistributedSampler reseeded every epoch shards the data). As in
standard CLIP training, the loss is computed over image and text features gathered
from all ranks, so the negatives are the whole global batch; only the local shard of
the gathered image features keeps its gradient. Every rank therefore computes the same
global loss, and with the gradient factors of :func:`global_loss` the averaged DDP gradients
equal those of one process on the whole global batch (tested on CPU with gloo and 2 processes).
Logging, checkpoints, validation and plots happen on rank 0 only. BatchNorm statistics
are per rank, as in torchvision's DDP recipes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed() -> DistContext:
    """Join the process group torchrun describes in the environment; a no-op for a plain (non-torchrun) process.

    Under torchrun even one process joins a group (NCCL on GPUs), so the one-GPU torchrun path is the tested DDP path.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return DistContext(True, dist.get_rank(), dist.get_world_size(), local_rank)


def gather_with_local_grad(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """[B_local, D] from every rank -> [B_global, D] in rank order; only this rank's rows keep gradients."""
    if not ctx.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[ctx.rank] = x
    return torch.cat(parts)


class _ScaleGradient(torch.autograd.Function):
    """The identity forward; the gradient multiplied by ``factor`` on the way back."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def global_loss(loss_fn: Callable[..., torch.Tensor], ctx: DistContext) -> Callable[..., torch.Tensor]:
    """``loss_fn`` over the global batch (identical value on every rank); ``loss_fn`` itself on one process.

    Each rank back-propagates the global loss into its *own* features only, so summing the ranks' gradients gives
    the full gradient; DDP averages instead of summing, hence the gradient is multiplied by N (the value is not).
    The logit scale sees the whole loss on every rank already: its gradient is divided by N again. The training
    step (notebook 02's lab cell) stays the one-GPU step.
    """
    if not ctx.enabled:
        return loss_fn
    n = float(ctx.world_size)

    def loss_over_every_gpu(
        image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: Any, negatives: Any = None
    ) -> torch.Tensor:
        scale = _ScaleGradient.apply(logit_scale, 1.0 / n) if isinstance(logit_scale, torch.Tensor) else logit_scale
        all_images, all_text = gather_with_local_grad(image_features, ctx), gather_with_local_grad(text_features, ctx)
        return _ScaleGradient.apply(loss_fn(all_images, all_text, scale, negatives), n)

    return loss_over_every_gpu


def wrap_model(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """DDP around ``model`` under torchrun (with the model's ``scale`` and ``clamp_logit_scale`` passed through, so the
    training step reads the same on one GPU and on several); ``model`` itself otherwise."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    class ClipDDP(DistributedDataParallel):
        def scale(self) -> torch.Tensor:
            return self.module.scale()

        def clamp_logit_scale(self) -> None:
            self.module.clamp_logit_scale()

    return ClipDDP(model, device_ids=[ctx.local_rank] if device.type == "cuda" else None)
