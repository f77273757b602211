"""The bookkeeping of one epoch around the training step: its loader, its running figures, its logged points.

Why apart from the trainer: the step (step.py) is the lesson and the trainer (train.py) the driver that keeps a
run alive; what an epoch counts (mean loss, in-batch top-1, img/s, skipped steps) and which steps feed the live
panel are read here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset  # the lab's CocoCacheDataset (notebook 01's cell)

from ..clip.loss import in_batch_hits
from ..data.dataset import make_loader
from .distributed import DistContext
from .recovery import LossGuard

STEP_LOG_EVERY = 10  # a step_log entry every this many steps, and at the first and last step of each epoch


@dataclass
class EpochMeter:
    """Running sums of one epoch; in-batch hits stay on the device (no sync per step)."""

    device: torch.device
    guard: LossGuard  # the step's ``accept``: refuses a non-finite or spiking loss
    loss: float = 0.0
    images: int = 0
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.hits = torch.zeros(2, dtype=torch.long, device=self.device)

    def add(self, loss: float, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Count a trained batch; returns its in-batch top-1 hits [image->text, text->image]."""
        hits = in_batch_hits(features.detach(), text)
        n = features.shape[0]
        self.loss, self.images, self.hits = self.loss + loss * n, self.images + n, self.hits + hits
        return hits

    def postfix(self) -> dict[str, str]:
        return {"loss": f"{self.loss / max(1, self.images):.3f}", "img_s": f"{self.images / (time.perf_counter() - self.started):.0f}"}

    def record(self, epoch: int) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        i2t, t2i = (self.hits.double() / self.images).tolist()
        return {
            "epoch": epoch + 1,
            "train_loss": self.loss / self.images,
            "train_i2t_acc": i2t,
            "train_t2i_acc": t2i,
            "skipped_steps": self.guard.skipped,
            "train_seconds": seconds,
            "img_per_s": self.images / seconds,
        }


def steps_per_epoch(images: int, batch_size: int, cap: int | None) -> int:
    n = images // batch_size if images >= batch_size else 1
    return min(n, cap or n)


def epoch_loader(train_set: Dataset, batch_size: int, seed: int, epoch: int, workers: int | None, dist: DistContext) -> Any:
    """This epoch's shuffled loader (per-rank shards of the global batch under DDP)."""
    train_set.set_epoch(epoch)
    sampler = None
    if dist.enabled:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_set, dist.world_size, dist.rank, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
    drop_last = len(train_set) >= batch_size
    return make_loader(train_set, batch_size // dist.world_size, True, seed, epoch, workers, drop_last, sampler=sampler)


def logged(global_step: int, step: int, steps: int) -> bool:
    """Whether this step makes a step_log entry (the live panel's data, the spike detector's memory)."""
    return global_step % STEP_LOG_EVERY == 0 or step in (0, steps - 1)


def step_entry(epoch: int, step: int, steps: int, global_step: int, value: float, hits: torch.Tensor, n: int, lr: float,
               temperature: float) -> dict[str, float]:  # fmt: skip
    """One point of the curves; x is the epochs done after this step (the last step of epoch 4 is at 4.0, with its val point)."""
    acc_i, acc_t = (hits.float() / n).tolist()
    return {"step": global_step, "epoch": epoch + (step + 1) / steps, "loss": value, "i2t_acc": acc_i, "t2i_acc": acc_t,
            "lr": lr, "temperature": temperature}  # fmt: skip
