"""A run's state while it trains: one dataclass that the checkpoint holds and recovery rolls back.

Why one object: everything that changes during training (weights, optimizer moments, LR schedule, fp16 scaler,
step counters, history, events) travels together. ``checkpoint.pt`` is :meth:`RunState.checkpoint`; resuming is
:meth:`RunState.restore`; a rollback after divergence or an out-of-memory error returns a *new* state
(helpers/training/recovery.py). No module reaches into another's attributes to change them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.artifacts import load_weights
from .checkpoint import rng_state, set_rng_state


@dataclass
class RunState:
    model: nn.Module  # the image tower whose weights are saved
    train_model: torch.nn.Module  # the module the step calls: ``model``, or its DDP wrapper under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    batch_size: int  # halved after an out-of-memory error
    lr: float  # halved after a rollback
    rollbacks: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch
    step_log: list[dict[str, float]] = field(default_factory=list)  # the live panel's points
    events: list[str] = field(default_factory=list)  # what happened to the run: skipped steps, rollbacks, notes

    def checkpoint(self, epoch: int, **meta: Any) -> dict[str, Any]:
        """What ``checkpoint.pt`` holds after ``epoch`` finished epochs (plain types and tensors: ``weights_only``)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "epoch": epoch,
            "global_step": self.global_step,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "rollbacks": self.rollbacks,
            "history": self.history,
            "step_log": self.step_log,
            "events": self.events,
            **meta,
        }

    def advance_schedule(self) -> None:
        """One step further on the LR schedule."""
        with warnings.catch_warnings():
            # GradScaler skips the first fp16 steps whose gradients overflow while it calibrates its scale; the
            # schedule still counts them (it follows the loop's steps), so PyTorch's "scheduler before optimizer" note is noise
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`")
            self.scheduler.step()
        self.global_step += 1

    def restore(self, saved: dict[str, Any], path: Path) -> RunState:
        """This (freshly built) state with everything of ``saved`` loaded into it, the RNG states included."""
        load_weights(self.model, saved, path, "checkpoint")
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.history, self.step_log, self.events = list(saved["history"]), list(saved["step_log"]), list(saved["events"])
        self.global_step, self.rollbacks = saved["global_step"], saved["rollbacks"]
        set_rng_state(saved["rng"])
        return self
