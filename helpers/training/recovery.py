"""Keeping a run alive when a step fails: skipped steps, rollback after divergence, batch halving after OOM.

Why apart from the loop: the training step (notebook 02's lab cell) stays the plain step a student reads; what happens when
a loss is non-finite or spikes, or the GPU runs out of memory, is read here. Each function takes the run's
state (state.py) and returns the state to go on with; the trainer logs every action as an event in the run's
history and metrics.
"""

from __future__ import annotations

import gc
import math
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from ..core.artifacts import load_torch
from ..core.config import TrainingDiverged, divergence_advice
from .optim import set_base_lr
from .state import RunState

SPIKE_FACTOR = 4.0  # a step whose loss exceeds 4x the recent median is skipped
SPIKE_WINDOW = 50  # logged losses the median is taken over
MAX_ROLLBACKS = 2
MIN_BATCH = 8

advice = divergence_advice  # what to change after a divergence (helpers/core/config.py)
Build = Callable[[int, float, bool], RunState]  # (batch size, lr, pretrained) -> a fresh state (the trainer's)


class TooManyBadSteps(Exception):
    """An epoch skipped too many steps: the trainer rolls back (:func:`after_divergence`) and trains it again."""


def bad_loss(value: float, recent: list[float]) -> str | None:
    """"non-finite", "spiking" (over SPIKE_FACTOR x the median of the recent logged losses), or None for a good step."""
    if not math.isfinite(value):
        return "non-finite"
    if len(recent) >= 10 and value > SPIKE_FACTOR * statistics.median(recent):
        return "spiking"
    return None


class LossGuard:
    """The training step's ``accept``: refuses a non-finite or spiking loss and counts the refusals of one epoch."""

    def __init__(self, recent: list[float], steps: int):
        self.recent, self.skipped, self.last_refusal = list(recent[-SPIKE_WINDOW:]), 0, None
        self.limit = max(3, steps // 4)  # more skipped steps than this: the epoch is rolled back

    def __call__(self, value: float) -> bool:
        self.last_refusal = bad_loss(value, self.recent)
        self.skipped += self.last_refusal is not None
        return self.last_refusal is None

    def remember(self, value: float) -> None:
        """A logged loss joins the window the spike test compares with."""
        self.recent = (self.recent + [value])[-SPIKE_WINDOW:]

    def check(self) -> None:
        if self.skipped > self.limit:
            raise TooManyBadSteps


def after_divergence(
    state: RunState, epoch: int, checkpoint: Path, build: Build, run_name: str, settings: dict, log: Callable[[str], None]
) -> RunState:
    """Too many bad steps: back to the last good checkpoint with half the LR (at most MAX_ROLLBACKS times)."""
    rollbacks, lr = state.rollbacks + 1, state.lr
    if rollbacks > MAX_ROLLBACKS:
        raise TrainingDiverged(
            f"Training of run {run_name} diverged {rollbacks} times (non-finite or exploding loss) even after "
            f"lowering LR to {lr:g}. {advice(settings)}"
        )
    log(f"epoch {epoch + 1}: too many bad steps; rolling back to the last good checkpoint with LR {lr:g} -> {lr / 2:g}")
    return roll_back(state, epoch, checkpoint, build, lr=lr / 2, batch_size=state.batch_size, rollbacks=rollbacks)


def after_out_of_memory(
    state: RunState, epoch: int, checkpoint: Path, build: Build, device: torch.device, processes: int, log: Callable[[str], None]
) -> RunState:
    """A CUDA OOM: free the cache, halve the batch (single process, down to MIN_BATCH) and start the epoch again."""
    if device.type == "cuda":
        gc.collect()  # the failed step's tensors can sit in reference cycles
        torch.cuda.empty_cache()
    if processes > 1:
        raise RuntimeError(
            f"CUDA out of memory at BATCH_SIZE={state.batch_size} over {processes} processes: "
            "lower BATCH_SIZE (automatic halving is single-process only)"
        )
    if state.batch_size // 2 < MIN_BATCH:
        raise RuntimeError(
            f"CUDA out of memory even at BATCH_SIZE={state.batch_size}: free GPU memory (restart the runtime) or use a smaller IMAGE_SIZE"
        )
    log(f"epoch {epoch + 1}: CUDA out of memory at batch size {state.batch_size}; halving to {state.batch_size // 2}")
    return roll_back(state, epoch, checkpoint, build, lr=state.lr, batch_size=state.batch_size // 2, rollbacks=state.rollbacks)


def roll_back(state: RunState, epoch: int, checkpoint: Path, build: Build, lr: float, batch_size: int, rollbacks: int) -> RunState:
    """The state at the start of ``epoch`` (the last checkpoint, or a fresh model at epoch 0), with the events so far
    and the new LR, batch size and rollback count."""
    events = list(state.events)
    del state  # the caller's builder frees the old model before it allocates the new one
    if epoch > 0 and checkpoint.exists():
        saved = load_torch(checkpoint, "checkpoint")
        new = build(saved["batch_size"], saved["lr"], False).restore(saved, checkpoint)
        set_base_lr(new.optimizer, new.scheduler, lr)
    else:
        new = build(batch_size, lr, True)
    new.lr, new.batch_size, new.rollbacks, new.events = lr, batch_size, rollbacks, events
    return new
