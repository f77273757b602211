"""A run's plan, made once before anything trains: its settings as resolved, its folder, its identity, its variant.

Why one place: the run's name, its identity, the variant's records and the settings they change must come from one
resolution (the variant parsed and its records resolved against the run's lab code once per run), or the trainer, the
folder it writes and what the report reads could disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..clip.flags import Recipe, canonical
from ..clip.identity import run_identity
from ..core.config import Config, ConfigError
from ..core.env import Paths
from ..data.dataset import with_data_code
from ..store.runs import RunDir, run_name_for


@dataclass(frozen=True)
class RunPlan:
    cfg: Config  # with the variant's own settings applied (bigbatch: batch 256), reading the data with 01's recorded cells
    run: RunDir  # named from the settings as given, before the variant's own changes
    identity: dict[str, Any]  # what the run folder must agree with to be resumed or reused
    variant: Recipe  # the modification's records, 04's cells as the run's lab code holds them (none: the baseline)
    overrides: dict[str, dict[str, Any]]  # {field: {"requested", "resolved"}} of the settings the variant changed


def plan_run(cfg: Config, paths: Paths) -> RunPlan:
    cfg = with_data_code(cfg, paths)  # notebook 01's Dataset as 01 ran it (the caption cache records it): part of the name
    cfg = cfg.replace(variant=canonical(cfg.variant))  # its names known (a student's record registered), in one spelling
    variant = Recipe.of(cfg.variant, cfg.lab)
    nothing = variant.changes_nothing(cfg.to_dict())
    if nothing:  # the baseline under another name: refused, never trained nor reported as a modification
        raise ConfigError(nothing)
    resolved = variant.overrides(cfg.to_dict())  # e.g. bigbatch: batch 256 and a larger LR
    overrides = {k: {"requested": getattr(cfg, k), "resolved": v} for k, v in resolved.items()}
    run = RunDir(paths.runs_dir / run_name_for(cfg))  # cfg reads 01's recorded cells already: the caption cache read once
    return RunPlan(cfg.replace(**resolved), run, run_identity(cfg), variant, overrides)
