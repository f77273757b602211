"""The ablation's base settings: the student's own baseline run, not a second set of defaults.

Why: a variant differs from the baseline in its flag, nothing else. If notebook 04 had its own
defaults, a student who trained the baseline in 02 with WEIGHT_DECAY=0.05 would compare variants
trained at 0.01 against a baseline retrained at 0.01: a different study from the one they think
they ran. So every setting that shapes a run (``config.IDENTITY_FIELDS`` and EPOCHS) comes from
the base run, by default the newest finished baseline run that notebook 02 trained. A setting the
student writes in 04 on purpose still wins, and is listed beside the ablation table, so a reader
sees every way the study departs from the baseline it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..clip.flags import BASELINE, Recipe, canonical
from ..core import markdown
from ..core.artifacts import ArtifactError, load_json
from ..core.config import FIELD_NAMES, IDENTITY_FIELDS, Config, ConfigError, code_constants, from_params, notebook_params, with_lab
from ..core.env import Paths, resolve_paths
from ..core.lab import TRAINING, LabCode
from ..data.text_tower import display_name
from ..store.runlock import RunLocked, live_holder
from ..store.runs import RunDir, all_runs, newest_finished, trained_lab, trained_settings

INHERITED = (*(f for f in IDENTITY_FIELDS if f not in ("variant", "seed")), "epochs")  # per run: variant and seed are the study's
BASE_RUN_KEY = "BASE_RUN"  # notebook 04's parameter: a run name, or None for the newest finished baseline run


@dataclass
class BaseSettings:
    cfg: Config  # the settings of the study: the base run's, with the overrides applied
    paths: Paths
    run: str | None  # the base run's name; None: no finished baseline run yet, the lab's defaults
    chosen_by: str  # how the base run was found, in words
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # FIELD: {"base": value, "here": value}

    def record(self) -> dict[str, Any]:
        """What ``ablation.json`` stores under ``base``: the report repeats it beside the table."""
        return {"run": self.run, "chosen_by": self.chosen_by, "overrides": self.overrides}

    def markdown(self) -> str:
        """What notebook 04 prints before it trains: where the settings come from, the main ones, every override."""
        c = self.cfg
        source = f"run `{self.run}` ({self.chosen_by})" if self.run else self.chosen_by
        main = (
            f"{c.image_backbone} ({c.image_weights or 'random init'}), {c.image_size} px, batch {c.batch_size}, {c.optimizer} "
            f"lr {c.lr:g} (weight decay {c.weight_decay:g}, {c.lr_schedule}), temperature {c.temperature:g}"
            f"{' (learnable)' if c.learnable_temperature else ''}, {c.epochs} epochs, text model `{display_name(c.text_model)}`"
        )
        lines = [f"**Base settings** of every run below: {source}.", "", f"Main settings: {main}.", ""]
        return "\n".join([*lines, overrides_markdown(self.record())])


def overrides_markdown(base: dict[str, Any] | None) -> str:
    """The overrides of ``ablation.json``'s ``base`` as a table (or the sentence that there are none)."""
    if not base:
        return "Base settings: not recorded (an ablation.json written before notebook 04 took them from the baseline run)."
    overrides = base.get("overrides") or {}
    source = f"the settings of run `{base['run']}`" if base.get("run") else "the lab's defaults"
    if not overrides:
        return f"Overrides set in notebook 04: none. Every run uses {source}, apart from its variant and seed."
    rows = [[f"`{k.upper()}`", repr(v["base"]), repr(v["here"]), _held(v)] for k, v in overrides.items()]
    head = f"Overrides set in notebook 04, instead of {source}:"
    return "\n".join([head, "", markdown.table(["setting", "base run", "this study", "holds for"], rows)])


def _held(override: dict[str, Any]) -> str:
    """Which rows of the study an override holds for: every run, or all but those that trained otherwise (a finished
    run reused with more EPOCHS than asked for), named with their value. Before the study has run: every run."""
    missed = override.get("not_held_by") or {}
    if not missed:
        return "every run" if "not_held_by" in override else "every run (to be trained)"
    others = ", ".join(f"{row} ({value!r}: reused)" for row, value in missed.items())
    return f"not: {others}"


def from_notebook(namespace: dict[str, Any]) -> BaseSettings:
    """Notebook 04's settings: the base run's, then every UPPERCASE setting written in the notebook on top.

    Settings of where and how (ARTIFACTS_DIR, LIVE_PLOT, NUM_WORKERS, ...) simply apply; a setting that shapes a run
    and differs from the base run's is an override, recorded and shown.
    """
    params = notebook_params(namespace, code={*LabCode.from_kernel(namespace).binds(), *code_constants(namespace)})
    base_run = params.pop(BASE_RUN_KEY, None)
    here = from_params(params)  # a misspelt or mistyped key fails here, with its name
    given = {k.lower() for k in params}
    paths = resolve_paths(here)
    refuse_while_a_baseline_trains(paths, base_run)
    run, chosen_by = find_base_run(paths, base_run)
    base = _stored_config(run) if run else Config()
    values = here.to_dict()
    overrides: dict[str, dict[str, Any]] = {}
    for name in INHERITED:
        theirs, ours = getattr(base, name), getattr(here, name)
        if name in given and ours != theirs:
            overrides[name] = {"base": theirs, "here": ours}
        else:
            values[name] = theirs
    values["variants"] = [canonical(v) for v in values["variants"]]  # each known (yours registered), in one spelling
    idle = [why for v in values["variants"] if (why := Recipe.of(v).changes_nothing({**values, "variant": v}))]
    if idle:  # said before the study trains anything, not after the other variants
        raise ConfigError(" ".join(idle))
    cfg = with_lab(from_params({**values, "variant": BASELINE, "run_name": None}), LabCode.from_kernel(namespace))  # 04's cells
    if run is not None:  # the lab code the base run trained with (notebook 02's cells as they were): every row trains with it
        cfg = with_lab(cfg, LabCode.from_record(trained_lab(run).sources(TRAINING), fallback=LabCode.from_kernel(namespace)))
    return BaseSettings(cfg, paths, run.name if run else None, chosen_by, overrides)


def refuse_while_a_baseline_trains(paths: Paths, name: str | None) -> None:
    """04 takes its settings from the baseline run 02 trained: while another process trains a baseline (02 continuing
    it, or BASE_RUN), the study would start from the wrong run or collide with it. Stop before anything is written."""
    for run in all_runs(paths):
        if (name is not None and run.name != name) or (name is None and run.variant() != BASELINE):
            continue
        holder = live_holder(run.path)
        if holder:
            raise RunLocked(
                f"Run {run.name} (a baseline) is being trained right now by {holder.get('purpose', 'a run')} (PID "
                f"{holder.get('pid')} on {holder.get('host')!r}, since {holder.get('started')}): notebook 04 bases its study on "
                "your baseline run, so it waits for that. Let notebook 02 finish, then run 04 again; nothing was written."
            )


def find_base_run(paths: Paths, name: str | None) -> tuple[RunDir | None, str]:
    """BASE_RUN if given (it must be finished), else the newest finished baseline run that this ablation did not train."""
    if name is not None:
        run = RunDir.named(paths, name)
        if not run.is_finished():
            known = [r.name for r in all_runs(paths) if r.is_finished()]
            raise FileNotFoundError(
                f"BASE_RUN={name!r} is not a finished run in {paths.runs_dir}. Finished runs: {known or 'none'}. "
                "Set BASE_RUN = None to use the newest finished baseline run, or finish that run in 02_train_clip.ipynb."
            )
        return run, "BASE_RUN"
    own = _runs_trained_by_the_ablation(paths)
    candidates = [r for r in all_runs(paths) if r.name not in own]
    run, is_baseline = newest_finished(candidates)
    if run is None or not is_baseline:
        return None, (
            "the lab's defaults: there is no finished baseline run yet (train one in 02_train_clip.ipynb first to base the study on "
            "your settings, or set BASE_RUN)"
        )
    return run, "the newest finished baseline run, trained by notebook 02; set BASE_RUN to pick another"


def _runs_trained_by_the_ablation(paths: Paths) -> set[str]:
    """Runs an earlier ablation (the newest, or any study kept under ``ablation/studies/``) trained from its base with
    overrides: never the base of the next one."""
    folder = paths.artifacts_dir / "ablation"
    out: set[str] = set()
    for path in [folder / "ablation.json", *sorted(folder.glob("studies/*/ablation.json"))]:
        try:
            summary = load_json(path, "ablation")
        except (ArtifactError, OSError):
            continue
        base = (summary.get("base") or {}).get("run")
        out |= {str(o.get("run_name")) for o in summary.get("runs", [])} - {base}
    return out


def _stored_config(run: RunDir) -> Config:
    """The settings a run was trained with, from its weights file (``config.json`` is checked against it: a lost or
    edited file is rewritten, never believed); keys of older versions are dropped."""
    stored = trained_settings(run)
    return from_params({k: v for k, v in stored.items() if k in FIELD_NAMES})
