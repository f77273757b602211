"""Several GPUs with ``torchrun``: process group, global-batch contrastive loss, rank-0 duties.

    torchrun --nproc_per_node=2 -m helpers.train --config run.json

``BATCH_SIZE`` stays the *global* batch; each of the N processes takes BATCH_SIZE / N
images per step (a DistributedSampler reseeded every epoch shards the data). As in
standard CLIP training, the loss is computed over image and text features gathered
from all ranks, so the negatives are the whole global batch; only the local shard of
the gathered image features keeps its gradient. Every rank therefore computes the same
global loss, and with the factor below the averaged DDP gradients equal those of one
process on the whole global batch (tested on CPU with gloo and 2 processes).
Logging, checkpoints, validation and plots happen on rank 0 only. BatchNorm statistics
are per rank, as in torchvision's DDP recipes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..clip.loss import clip_loss


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


def global_clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, ctx: DistContext
) -> torch.Tensor:
    """Symmetric InfoNCE over the global batch (identical value on every rank)."""
    return clip_loss(gather_with_local_grad(image_features, ctx), gather_with_local_grad(text_features, ctx), logit_scale)


def backward_scale(ctx: DistContext) -> float:
    """Multiply the loss by this before ``backward``.

    Each rank back-propagates the global loss into its *own* features only, so summing
    the ranks' gradients gives the full gradient; DDP averages instead of summing, hence
    the factor N. (Parameters that see the whole loss on every rank, i.e. the logit scale,
    are corrected by :func:`fix_replicated_grads`.)
    """
    return float(ctx.world_size) if ctx.enabled else 1.0


def fix_replicated_grads(model: torch.nn.Module, ctx: DistContext) -> None:
    """The logit scale's gradient is complete on every rank already: undo the factor N."""
    scale = getattr(model, "logit_scale", None)
    if ctx.enabled and scale is not None and scale.grad is not None:
        scale.grad.div_(ctx.world_size)
