"""The bookkeeping of one epoch around the training step: its loader, its running figures, its logged points.

Why apart from the trainer: the step (notebook 02's lab cell) is the lesson and the trainer (train.py) the driver that keeps a
run alive; what an epoch counts (mean loss, in-batch top-1, img/s, skipped steps) and which steps feed the live
panel are read here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset  # the lab's CocoCacheDataset (notebook 01's cell)

from ..clip.loss import in_batch_hits
from ..core import resolution
from ..core.faults import kill_point
from ..core.markdown import duration
from ..data.dataset import make_loader, normalize_images
from .distributed import DistContext
from .recovery import SPIKE_WINDOW, LossGuard

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


@dataclass
class EpochRun:
    """One epoch as the trainer runs it: its step count, its training size, its meter, its progress bar, its batches."""

    steps: int
    size: int  # the resolution schedule's size this epoch (TRAIN_SIZES), or the cached size
    meter: EpochMeter
    bar: Any
    batches: Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]


@contextmanager
def open_epoch(state: Any, train_set: Dataset, cfg: Any, epoch: int, device: torch.device, dist: DistContext, channels_last: bool,
               variant: Any, progress: bool) -> Iterator[EpochRun]:  # fmt: skip
    """Train mode (with the variant's train-mode hooks), this epoch's batches on the device and its meter, and a progress
    bar closed however the epoch ends (a rollback or an OOM leaves mid-epoch: the loader and its workers go at once)."""
    from tqdm.auto import tqdm

    state.model.train()
    for hook in variant.each("on_train_mode"):  # e.g. freeze_bn: the trunk's BatchNorm statistics stay frozen
        hook(state.model)
    steps = steps_per_epoch(len(train_set), state.batch_size, cfg.max_steps_per_epoch)
    loader = epoch_loader(train_set, state.batch_size, cfg.seed, epoch, cfg.num_workers, dist)
    recent = [e["loss"] for e in state.step_log[-SPIKE_WINDOW // STEP_LOG_EVERY :]]
    meter = EpochMeter(device, LossGuard(recent, steps))
    size = resolution.size_at(epoch, cfg.train_sizes, cfg.image_size)  # the schedule's (TRAIN_SIZES)
    batches = _batches(loader, steps, device, channels_last, size)
    with tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not progress, leave=False) as bar:
        try:
            yield EpochRun(steps, size, meter, bar, batches)
        finally:
            batches.close()


def _batches(loader: Any, steps: int, device: torch.device, channels_last: bool,
             size: int) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:  # fmt: skip
    for step, (images, text, image_ids, _) in enumerate(loader):
        if step >= steps:
            break
        images = normalize_images(images, device, channels_last, size=size)
        kill_point("train_step")  # tests: die in the middle of an epoch
        yield step, (images, text.to(device, non_blocking=True), image_ids)


def summary_line(epoch: int, record: dict[str, Any], cfg: Any) -> str:
    """The line an epoch ends with: losses, val Recall@1 both ways, val rsum, speed, the schedule's size, time."""
    at = f" at {record['train_size']} px" if cfg.train_sizes else ""
    return (
        f"epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
        f"val R@1 image→text {100 * record['val_i2t_R@1']:.1f}%, text→image {100 * record['val_t2i_R@1']:.1f}%, "
        f"val rsum {100 * record['val_rsum']:.1f} of 600, {record['img_per_s']:.0f} img/s{at}, {duration(record['train_seconds'])}"
    )


def logged(global_step: int, step: int, steps: int) -> bool:
    """Whether this step makes a step_log entry (the live panel's data, the spike detector's memory)."""
    return global_step % STEP_LOG_EVERY == 0 or step in (0, steps - 1)


def step_entry(epoch: int, step: int, steps: int, global_step: int, value: float, hits: torch.Tensor, n: int, lr: float,
               temperature: float) -> dict[str, float]:  # fmt: skip
    """One point of the curves; x is the epochs done after this step (the last step of epoch 4 is at 4.0, with its val point)."""
    acc_i, acc_t = (hits.float() / n).tolist()
    return {"step": global_step, "epoch": epoch + (step + 1) / steps, "loss": value, "i2t_acc": acc_i, "t2i_acc": acc_t,
            "lr": lr, "temperature": temperature}  # fmt: skip
