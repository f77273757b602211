"""Keeping a run alive when a step fails: skipped steps, rollback after divergence, batch halving after OOM.

Why apart from the loop: ``train.Trainer.train_one_epoch`` stays the plain training step a
student reads; what happens when a loss is non-finite or spikes, or the GPU runs out of memory,
is read here. Every action is logged as an event in the run's history and metrics.
"""

from __future__ import annotations

import gc
import math
import statistics
from typing import Any, NoReturn, Protocol

import torch

from ..core.artifacts import load_torch
from ..core.config import Config, unusual_settings
from .distributed import DistContext
from .optim import set_base_lr
from .runs import RunDir

SPIKE_FACTOR = 4.0  # a step whose loss exceeds 4x the recent median is skipped
SPIKE_WINDOW = 50  # logged losses the median is taken over
MAX_ROLLBACKS = 2
MIN_BATCH = 8


class TrainingDiverged(RuntimeError):
    """Training kept producing non-finite or exploding losses after rolling back."""


class RolledBack(Exception):
    """The epoch was abandoned and the state rolled back (divergence, or a CUDA OOM): train the epoch again."""


class Trainer(Protocol):
    """What recovery reads and resets of the trainer (helpers/training/train.py's ``Trainer`` has all of it).

    A protocol, not an import: the trainer calls recovery, so recovery must not import the trainer.
    """

    cfg: Config
    run: RunDir
    device: torch.device
    dist: DistContext
    lr: float
    batch_size: int
    rollbacks: int
    global_step: int
    history: list[dict[str, Any]]
    step_log: list[dict[str, float]]
    events: list[str]
    optimizer: torch.optim.Optimizer
    scheduler: Any

    def _event(self, message: str) -> None: ...
    def _restore(self, state: dict[str, Any]) -> None: ...
    def _build(self, pretrained: bool) -> None: ...


def bad_loss(value: float, recent: list[float]) -> str | None:
    """"non-finite", "spiking" (over SPIKE_FACTOR x the median of the recent logged losses), or None for a good step."""
    if not math.isfinite(value):
        return "non-finite"
    if len(recent) >= 10 and value > SPIKE_FACTOR * statistics.median(recent):
        return "spiking"
    return None


def advice(cfg: Any) -> str:
    """What to change after a divergence: any setting far outside its usual range first, then the usual remedies."""
    unusual = unusual_settings(cfg)
    first = f"Likely cause: {', '.join(unusual)}, far outside the usual range; bring it back into range. " if unusual else ""
    return first + "Lower LR (e.g. 1e-5), set WARMUP_STEPS (e.g. 500) and GRAD_CLIP (e.g. 1.0), or set AMP=False."


def diverged(trainer: Trainer, epoch: int) -> NoReturn:
    """Too many bad steps: back to the last good checkpoint with half the LR, then :class:`RolledBack`."""
    trainer.rollbacks += 1
    if trainer.rollbacks > MAX_ROLLBACKS:
        raise TrainingDiverged(
            f"Training of run {trainer.run.name} diverged {trainer.rollbacks} times (non-finite or exploding loss) even after "
            f"lowering LR to {trainer.lr:g}. {advice(trainer.cfg)}"
        )
    trainer._event(
        f"epoch {epoch + 1}: too many bad steps; rolling back to the last good checkpoint with LR {trainer.lr:g} -> {trainer.lr / 2:g}"
    )
    roll_back(trainer, epoch, lr_scale=0.5)
    raise RolledBack


def out_of_memory(trainer: Trainer, epoch: int) -> None:
    """A CUDA OOM: free the cache, halve the batch (single process, down to MIN_BATCH) and restart the epoch."""
    if trainer.device.type == "cuda":
        gc.collect()  # the failed step's tensors can sit in reference cycles
        torch.cuda.empty_cache()
    if trainer.dist.enabled:
        raise RuntimeError(
            f"CUDA out of memory at BATCH_SIZE={trainer.batch_size} over {trainer.dist.world_size} processes: "
            "lower BATCH_SIZE (automatic halving is single-process only)"
        )
    if trainer.batch_size // 2 < MIN_BATCH:
        raise RuntimeError(
            f"CUDA out of memory even at BATCH_SIZE={trainer.batch_size}: free GPU memory (restart the runtime) "
            "or use a smaller IMAGE_SIZE"
        )
    trainer._event(f"epoch {epoch + 1}: CUDA out of memory at batch size {trainer.batch_size}; halving to {trainer.batch_size // 2}")
    roll_back(trainer, epoch, lr_scale=1.0, new_batch=trainer.batch_size // 2)


def roll_back(trainer: Trainer, epoch: int, lr_scale: float, new_batch: int | None = None) -> None:
    """Return to the state at the start of ``epoch`` (last checkpoint, or a fresh model at epoch 0), keeping the events."""
    lr, batch, rollbacks, events = trainer.lr * lr_scale, new_batch or trainer.batch_size, trainer.rollbacks, list(trainer.events)
    from_checkpoint = epoch > 0 and trainer.run.checkpoint.exists()
    if from_checkpoint:
        trainer._restore(load_torch(trainer.run.checkpoint, "checkpoint"))
    else:
        trainer.history, trainer.step_log, trainer.global_step = [], [], 0
    trainer.lr, trainer.batch_size, trainer.rollbacks, trainer.events = lr, batch, rollbacks, events
    if from_checkpoint:
        set_base_lr(trainer.optimizer, trainer.scheduler, lr)
    else:
        trainer._build(pretrained=True)
