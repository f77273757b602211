"""The summary of a finished run (``metrics.json``), sealed: what the report, 03 and 04 read of it.

Why apart from the trainer: it is a record of what the run was (its settings, its variant's changes, the lab code it
trained with, its data, its hardware, the weights it describes), assembled from the run's parts after the last epoch.
"""

from __future__ import annotations

from typing import Any

import torch

from ..clip.flags import Recipe
from ..clip.loss import CLIP_LOSS_TEXT
from ..clip.model import describe
from ..core import env
from ..core.config import Config
from ..core.env import Paths
from ..core.lab import TRAINING
from ..core.storage import atomic_write_json
from ..store.runs import RunDir, metrics_record, seal, weights_sha256
from .train_data import TrainingData


def write_summary(run: RunDir, paths: Paths, cfg: Config, history: list[dict[str, Any]], events: list[str], data: TrainingData,
                  arch: dict[str, Any], *, variant: Recipe, overrides: dict[str, Any], identity: dict[str, Any],
                  amp: torch.dtype | None, channels_last: bool) -> dict[str, Any]:  # fmt: skip
    """Write ``metrics.json`` for the run's current ``best.pt`` (sealed: a hand edit is noticed, runs.is_sealed)."""
    metrics = seal(metrics_record(
        run, history, events,
        amp_dtype=str(amp).replace("torch.", "") if amp else "float32", channels_last=channels_last,
        hardware=env.hardware_summary(paths), config=cfg.to_dict(), variant_overrides=overrides,  # requested/resolved
        variant_sources={r.name: r.source for r in variant.records if not r.builtin},  # a student's code, as trained
        lab_code=cfg.lab.sources(TRAINING), lab_edited=cfg.lab.edited(TRAINING),  # the cells it trained with; those changed
        loss=variant.loss_text(CLIP_LOSS_TEXT),  # what the report says of the run, read without its records
        model=describe(arch, cfg.lab), arch=arch, num_train_images=len(data.train_set), num_val_images=len(data.val_set),
        protocol=data.splits.protocol, identity=identity, inputs=data.inputs, data=data.facts(),
        best_sha256=weights_sha256(run.best),  # the model this summary describes
    ))  # fmt: skip
    atomic_write_json(run.metrics, metrics)
    return metrics
