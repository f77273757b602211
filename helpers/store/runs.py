"""A run folder, ``ARTIFACTS_DIR/runs/<run name>/``: its files, its name, and how it is read back.

Why one module: the trainer (notebook 02) writes a run and notebooks 03-05 read it. With the
file names, the naming rule, the best-epoch choice and every reader in one place, a reader can
never disagree with the writer. No other module spells a file name of the run folder; the
docs/artifacts.md lists the files and their formats.

The checkpoint is the source of truth: ``history.json`` and ``loss_curves.png`` are derived
from it and rewritten from it when damaged; ``eval_<split>.json`` is shown only while it
matches the checkpoint it scored.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..clip.flags import canonical
from ..clip.identity import run_identity
from ..core import markdown
from ..core.artifacts import ArtifactError, ArtifactMissing, StaleArtifact, load_json, load_torch, load_weights
from ..core.config import Config, ConfigError, check_run_name, identity_differences
from ..core.env import Paths
from ..core.lab import LabCode
from ..core.provenance import check_inputs, is_sealed, seal
from ..core.storage import atomic_copy, atomic_rename, atomic_torch_save, atomic_write_json, sha256_file
from ..data.dataset import with_data_code

CHECKPOINT = "checkpoint.pt"  # the whole training state after the last finished epoch
BEST = "best.pt"  # the weights of the epoch with the highest val rsum
BEST_NEXT = "best.next.pt"  # a new best epoch's weights, staged until its checkpoint has landed (then renamed to best.pt)
HISTORY = "history.json"
METRICS = "metrics.json"  # written when the run finishes: its presence means "finished"
CONFIG = "config.json"
LOSS_CURVES = "loss_curves.png"
LOCK = "run.lock"  # helpers/store/runlock.py: one writer per run folder
SELECTION_METRIC = "rsum"  # on the val split: picks the best epoch (and, in 04, the best variant)


class _File:
    """A file of the run folder by its name: ``run.best`` is ``run.path / BEST``."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, run: RunDir, owner: type | None = None) -> Path:
        return run.path / self.name


@dataclass(frozen=True)
class RunDir:
    """One run folder and the paths of its files (``os.PathLike``: ``Path(run)`` is the folder)."""

    path: Path

    @classmethod
    def for_config(cls, paths: Paths, cfg: Config) -> RunDir:
        """The folder the settings ``cfg`` train into."""
        return cls(paths.runs_dir / run_name_for(with_data_code(cfg, paths)))  # 01's Dataset as its caches record it

    @classmethod
    def named(cls, paths: Paths, name: str) -> RunDir:
        return cls(paths.runs_dir / check_run_name(name))  # a name, never a path out of runs/

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    checkpoint = _File(CHECKPOINT)
    best = _File(BEST)
    history = _File(HISTORY)
    metrics = _File(METRICS)
    config = _File(CONFIG)
    loss_curves = _File(LOSS_CURVES)
    lock = _File(LOCK)
    best_next = _File(BEST_NEXT)

    def eval_json(self, split: str) -> Path:
        return self.path / f"eval_{split}.json"

    def eval_csv(self, split: str) -> Path:
        return self.path / f"eval_{split}.csv"

    def figures(self, split: str) -> Path:
        """Notebook 03's figures of ``split`` (the report takes them from ``figures("test")``)."""
        return self.path / f"figures_{split}"

    @property
    def weights(self) -> Path:
        """What notebook 03 scores: ``best.pt``, or the last checkpoint of a run that has none yet."""
        return self.best if self.best.exists() else self.checkpoint

    def is_finished(self) -> bool:
        return self.metrics.exists() and self.best.exists()

    def variant(self) -> str | None:
        """The variant the run was trained with (``config.json``; when that is lost, ``metrics.json``'s config), or None."""
        for read in (lambda: load_json(self.config, "config"), lambda: load_json(self.metrics, "metrics")["config"]):
            try:
                return canonical(read().get("variant", "baseline"))
            except (ArtifactError, OSError, ValueError, KeyError, AttributeError):
                continue
        return None

    def remove_partial_writes(self) -> None:
        """Temporary files of a write that was killed (storage.py writes ``.<name>.tmp`` first)."""
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def discard(self) -> None:
        """FORCE_RETRAIN: the model and every result of it go; results of a replaced model must never reach a report."""
        for path in (self.checkpoint, self.best, self.best_next, self.history, self.metrics):
            path.unlink(missing_ok=True)
        for stale in [*self.path.glob("eval_*.json"), *self.path.glob("eval_*.csv")]:
            stale.unlink()
        for folder in self.path.glob("figures_*"):
            shutil.rmtree(folder, ignore_errors=True)


NAMED_FIELDS = (  # in the readable part of the name
    "variant", "image_backbone", "batch_size", "lr", "optimizer", "temperature", "learnable_temperature", "train_images", "seed",
)  # fmt: skip


def run_name_for(cfg: Config) -> str:
    """A readable run name from the main settings, plus a short hash of every other identity field.

    ``baseline-resnet50-b64-lr0.0001-adamw-s0-1a2b3c4d``: two settings that differ in any field that
    changes the result (WEIGHT_DECAY, LR_SCHEDULE, IMAGE_WEIGHTS, ...: ``config.IDENTITY_FIELDS``) never
    share a folder. EPOCHS is left out on purpose: it is what a student raises to train longer, and the
    same run folder then continues after its last epoch instead of starting again from epoch 1.
    """
    if cfg.run_name:
        return cfg.run_name
    parts = [canonical(cfg.variant), cfg.image_backbone, f"b{cfg.batch_size}", f"lr{cfg.lr:g}", cfg.optimizer]
    if cfg.learnable_temperature:
        parts.append("learnT")
    elif cfg.temperature != 0.07:
        parts.append(f"T{cfg.temperature:g}")
    if cfg.train_images is not None:
        parts.append(f"n{cfg.train_images}")
    parts.append(f"s{cfg.seed}")
    rest = {k: v for k, v in run_identity(cfg).items() if k not in NAMED_FIELDS}
    parts.append(hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:8])
    return "-".join(parts)


def check_same_run(run: RunDir, state: dict[str, Any], identity: dict[str, Any], inputs: dict[str, Any], paths: Paths) -> None:
    """Refuse (ConfigError, ProvenanceMismatch) a run folder whose checkpoint ``state`` was made with other identity
    settings than ``identity`` or from other data than ``inputs``: the trainer before it resumes or reuses a run, the doctor."""
    how = (
        f"Set RUN_NAME to a new name for a new run, or FORCE_RETRAIN=True to retrain {run.name} from scratch "
        "with the settings and data of now."
    )
    changed = identity_differences(state.get("identity") or run_identity(state["config"]), identity)
    if changed:
        raise ConfigError(
            f"Run {run.name} ({run.path}) was trained with other settings: {'; '.join(changed)}. Continuing or "
            f"reusing it would mix two recipes. {how} (Or restore the stored settings.)"
        )
    check_inputs(
        state.get("inputs"), inputs, f"Run {run.name} ({run.checkpoint})", f"the current data artifacts in {paths.artifacts_dir}",
        f"Continuing or reusing it would combine two datasets. {how} Or re-run 01_dataset_prep.ipynb with the settings "
        "this run's data was made with.",
    )  # fmt: skip


def all_runs(paths: Paths) -> list[RunDir]:
    """Every run folder under ARTIFACTS_DIR/runs, sorted by name."""
    return [RunDir(p) for p in sorted(paths.runs_dir.glob("*")) if p.is_dir()] if paths.runs_dir.exists() else []


def newest_finished(
    runs: list[RunDir], usable: Callable[[RunDir], bool] = RunDir.is_finished, variant: Callable[[RunDir], str | None] = RunDir.variant
) -> tuple[RunDir | None, bool]:
    """The default run of notebooks 03 and 05: the newest finished *baseline* run, else the newest finished run.

    Returns (run, is_baseline). A run still training (or interrupted) has no metrics.json and is never picked.
    ``usable`` and ``variant`` let a reader that has already loaded the runs' files (the report) answer from them.
    """
    finished = [r for r in runs if usable(r)]
    baselines = [r for r in finished if variant(r) == "baseline"]
    pool = baselines or finished
    if not pool:
        return None, False
    return max(pool, key=lambda r: r.metrics.stat().st_mtime), bool(baselines)


def find_run(cfg: Config, paths: Paths) -> RunDir:
    """RUN_NAME if set; else the run the same settings would train, if finished; else :func:`newest_finished`.

    The choice is printed when it is not the one the settings name.
    """
    if cfg.run_name:
        run = RunDir.named(paths, cfg.run_name)
        if not run.path.is_dir():
            known = [r.name for r in all_runs(paths)]
            raise FileNotFoundError(f"No run {cfg.run_name!r} in {paths.runs_dir}. Known runs: {known or 'none'}. Run 02_train_clip.ipynb.")
        return run
    default = RunDir.for_config(paths, cfg)
    if default.is_finished():
        return default
    chosen, baseline = newest_finished(all_runs(paths))
    if chosen is None:
        raise FileNotFoundError(f"No finished run in {paths.runs_dir}: run 02_train_clip.ipynb first (same ARTIFACTS_DIR)")
    kind = "finished baseline run" if baseline else "finished run (no finished baseline run yet)"
    print(f"RUN_NAME=None: using the newest {kind}, {chosen.name}. Set RUN_NAME to pick another.")
    return chosen


def best_record(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch ``best.pt`` holds: highest val rsum; ties go to the lower val loss, then the earlier epoch."""
    return max(history, key=lambda r: (r[f"val_{SELECTION_METRIC}"], -r["val_loss"]))


def save_checkpoint(state: dict[str, Any], dest: Path, paths: Paths) -> None:
    """Write ``state`` to ``dest`` atomically. On Colab/Kaggle: to local disk first, then copy into ARTIFACTS_DIR.

    Drive's FUSE mount fails now and then (Errno 5); the copy is retried with backoff,
    and a failed copy never leaves a half-written checkpoint behind.
    """
    if paths.environment != "local":
        with tempfile.TemporaryDirectory(dir=paths.cache_dir) as tmp:
            local = atomic_torch_save(state, Path(tmp) / dest.name)
            atomic_copy(local, dest)
    else:
        atomic_torch_save(state, dest)


def write_best(run: RunDir, saved: dict[str, Any], record: dict[str, Any], paths: Paths, dest: Path | None = None) -> None:
    """``best.pt`` (or ``dest``): the weights and identity of the checkpoint ``saved``, with the epoch's val ``record``."""
    keys = ("model", "arch", "config", "identity", "inputs")
    save_checkpoint({**{k: saved[k] for k in keys}, "epoch": record["epoch"], "val": record}, dest or run.best, paths)


def settle_staged_best(run: RunDir, saved: dict[str, Any]) -> str | None:
    """A ``best.next.pt`` left by an end of epoch that stopped part-way (a full disk, a kill): promoted to ``best.pt``
    when the checkpoint ``saved`` landed and names its epoch as the best (only the rename was missing), else deleted
    (its checkpoint never landed: that epoch trains again). Returns what was done, for the run's events."""
    if not run.best_next.exists():
        return None
    try:
        staged = load_torch(run.best_next, "best")
    except ArtifactError:
        staged = {}
    best = best_record(saved["history"]) if saved.get("history") else None
    if best and staged.get("identity") == saved.get("identity") and staged.get("epoch") == best["epoch"] and staged.get("val") == best:
        atomic_rename(run.best_next, run.best)
        return f"{BEST_NEXT} of epoch {best['epoch']} promoted to {BEST} (its checkpoint had landed; the rename had not)"
    run.best_next.unlink()
    return f"{BEST_NEXT} discarded: its epoch's checkpoint never landed (that epoch trains again); {BEST} is untouched"


def check_own_best(run: RunDir, saved: dict[str, Any], kept: dict[str, Any] | None = None) -> None:
    """``best.pt``, when there is one, is this run's best epoch: its identity is the checkpoint's and its epoch and val
    record are the best of the checkpoint's history. A best.pt copied in from another run, or restored from an older
    version, is refused on every read (02 resuming or finishing, 03 scoring), with or without a metrics.json.
    ``kept``: best.pt's content when the caller has read it already (read once, not twice)."""
    if not run.best.exists():
        return
    kept = kept if kept is not None else load_torch(run.best, "best")
    best = best_record(saved["history"]) if saved.get("history") else None
    if kept.get("identity") != saved.get("identity") or best is None or kept.get("epoch") != best["epoch"] or kept.get("val") != best:
        if run.best_next.exists():  # an end of epoch stopped between its checkpoint and the rename: not a foreign file
            raise ArtifactError(
                f"{run.path} holds an end of epoch that stopped part-way ({BEST_NEXT} is there, {BEST} is the previous best): "
                f"re-run 02_train_clip.ipynb with RUN_NAME={run.name!r}, which finishes it, then this notebook."
            )
        raise ArtifactError(
            f"{run.best} is not this run's best epoch (its settings or epoch record differ from {run.checkpoint.name}'s: "
            f"epoch {kept.get('epoch')} vs {best['epoch'] if best else 'none yet'}): it was copied in or restored from "
            f"elsewhere. Delete it and re-run 02_train_clip.ipynb: it is rewritten when the last epoch was the best, else "
            f"retrain with FORCE_RETRAIN=True (RUN_NAME={run.name!r})."
        )


def repair_finished(run: RunDir, saved: dict[str, Any], paths: Paths) -> list[str]:
    """A finished run whose best.pt or config.json is gone or damaged: rebuilt from its checkpoint ``saved`` (the
    source of truth), or a clear error when the best epoch's weights are lost. A metrics.json that is not the
    checkpoint's summary (:func:`metrics_belong`) is removed, for the trainer to write again. Returns the events to log."""
    events = []  # best.pt, if there, is the run's own: the trainer checked it as it resumed (check_own_best)
    if not run.best.exists():
        best = best_record(saved["history"])
        if best["epoch"] != saved["epoch"]:
            raise ArtifactError(
                f"{run.best} is gone: the best epoch ({best['epoch']}) was not the last ({saved['epoch']}), so its weights "
                f"are lost. Re-run 02_train_clip.ipynb with FORCE_RETRAIN=True (RUN_NAME={run.name!r}) to train the run again."
            )
        write_best(run, saved, best, paths)
        events.append(f"{BEST} was missing: rewritten from {run.checkpoint.name} (epoch {best['epoch']} is the best)")
    try:
        load_json(run.config, "config")
    except ArtifactError:
        atomic_write_json(run.config, saved["config"])
        warnings.warn(f"{run.config} was missing or damaged: rewritten from {run.checkpoint.name}", stacklevel=3)
    stale = metrics_belong(load_json(run.metrics, "metrics"), saved, run.best)
    if stale:  # the trainer writes the summary again from the checkpoint
        run.metrics.unlink()
        events.append(f"{METRICS} was not this run's summary ({stale}): rewritten from {run.checkpoint.name}")
    return events


def trained_settings(run: RunDir) -> dict[str, Any]:
    """The settings a run trained with, from its weights file (best.pt, else checkpoint.pt): the source of truth.

    ``config.json`` beside it may be lost, edited by hand or restored from an older Drive version: it is compared
    with the weights file's, and rewritten from it (with a warning naming what differed) when it is not the same."""
    path, kind = (run.best, "best") if run.best.exists() else (run.checkpoint, "checkpoint")
    truth = load_torch(path, kind)["config"]
    try:
        stored = load_json(run.config, "config")
    except ArtifactError:
        stored = None
    if stored != truth:
        what = "was missing or damaged" if stored is None else "differs from the settings the run trained with (" + ", ".join(
            f"{k.upper()}: {stored.get(k)!r} in the file, {truth.get(k)!r} trained" for k in truth if stored.get(k) != truth.get(k)
        ) + ")"  # fmt: skip
        warnings.warn(f"{run.config} {what}: rewritten from {path.name}, whose settings are used", stacklevel=2)
        atomic_write_json(run.config, truth)
    return truth


def trained_lab(run: RunDir) -> LabCode:
    """The lab code a run trained with (notebook 02's cells, and 01's Dataset, as its weights file keeps them); a run of
    an older kit, which kept none, with the notebooks' cells."""
    path, kind = (run.best, "best") if run.best.exists() else (run.checkpoint, "checkpoint")
    return LabCode.from_record(load_torch(path, kind).get("lab_code"))


def load_trained(path: str | os.PathLike, device: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the architecture stored in ``best.pt``/``checkpoint.pt`` with the lab code it trained with (notebook 02's
    cells, as the checkpoint keeps them), and load its weights (weights_only)."""
    from ..clip.model import build_model

    path = Path(path)
    kind = "best" if path.name == BEST else "checkpoint"
    state = load_torch(path, kind)
    model = build_model(state["arch"], LabCode.from_record(state.get("lab_code")), pretrained=False)
    load_weights(model, state, path, kind)
    return model.to(device).eval(), state


# ----------------------------------------------------------------------------- history
def history_record(run_name: str, epochs: list[dict[str, Any]], steps: list[dict[str, Any]], events: list[str]) -> dict[str, Any]:
    """The ``history.json`` format (docs/artifacts.md): per-epoch records, logged steps, events."""
    return {"run_name": run_name, "epochs": epochs, "steps": steps, "events": events}


def write_history(run: RunDir, epochs: list[dict[str, Any]], steps: list[dict[str, Any]], events: list[str]) -> None:
    """history.json and loss_curves.png, derived from the training state (the checkpoint is the source of truth)."""
    from .curves import save_training_curves

    atomic_write_json(run.history, seal(history_record(run.name, epochs, steps, events)))  # sealed: a hand edit is noticed
    save_training_curves(epochs, steps, run.loss_curves, title=run.name)


def load_history(run: RunDir | str | os.PathLike) -> dict[str, Any]:
    """``history.json`` of a run; if it is damaged or absent but ``checkpoint.pt`` holds the history,
    write it again from the checkpoint (the source of truth) and say so."""
    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    try:
        record = load_json(run.history, "history")
        if is_sealed(record):
            return record
        problem = "edited after it was written (or its seal removed)"
        if not run.checkpoint.exists():
            raise StaleArtifact(f"{run.history} was {problem}, and there is no {CHECKPOINT} to write it again from")
    except ArtifactError as exc:
        if isinstance(exc, StaleArtifact) or not run.checkpoint.exists():
            raise
        problem = "absent" if isinstance(exc, ArtifactMissing) else "damaged"
    state = load_torch(run.checkpoint, "checkpoint")
    record = seal(history_record(state.get("run_name", run.name), state["history"], state.get("step_log", []), state.get("events", [])))
    atomic_write_json(run.history, record)
    warnings.warn(f"{run.history} was {problem}: rewritten from {CHECKPOINT} ({len(record['epochs'])} epochs)", stacklevel=2)
    return record


TRANSFER_SPLIT = "flickr30k"  # eval_flickr30k.json: 03 scores it with FLICKR30K=True beside the COCO split


def _scoring(run: RunDir, split: str) -> str:
    """The settings with which 03 writes ``eval_<split>.json`` again (the fix a stale or edited record's message names)."""
    if split == TRANSFER_SPLIT:
        return f"RUN_NAME={run.name!r} and FLICKR30K=True"
    return f"RUN_NAME={run.name!r} and EVAL_SPLIT={split!r}"


def load_eval(run: RunDir | str | os.PathLike, split: str) -> dict[str, Any]:
    """``eval_<split>.json`` of a run, *only* if it scored the run's current checkpoint.

    Every reader of results goes through here (report, ablation): after a retraining the old
    figures are never shown; the error names the notebook that scores the new model.
    """
    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    path = run.eval_json(split)
    record = load_json(path, "eval")
    if not is_sealed(record):  # a record without its seal is one whose seal was removed: believed no more than an edit
        raise StaleArtifact(
            f"{path} was edited after it was written (or its seal removed): its figures are not shown. Re-run 03_evaluate_clip.ipynb with "
            f"{_scoring(run, split)}."
        )
    if not scores_current_weights(run, record["checkpoint"]):
        scored = scored_weights(run, record["checkpoint"])
        current = weights_sha256(scored)
        now = f"now {current[:12]}…" if current else f"{scored.name} is gone"
        raise StaleArtifact(
            f"{path} scored an earlier model of this run (checkpoint sha256 {record['checkpoint']['sha256'][:12]}…, {now}): "
            f"its figures are out of date and not shown. Re-run 03_evaluate_clip.ipynb with {_scoring(run, split)}."
        )
    return record


FIGURES_STAMP = "figures.json"  # in figures_<split>/: the checkpoint its figures show


def scored_weights(run: RunDir, checkpoint: dict[str, Any]) -> Path:
    """The run's file a record's ``checkpoint`` {path, sha256} names, found by name (Drive paths differ between sessions)."""
    return run.path / Path(str(checkpoint.get("path", BEST))).name


def scores_current_weights(run: RunDir, checkpoint: dict[str, Any] | None) -> bool:
    """Whether a record (an eval, a figures stamp, an ablation row) was made from the run's weights as they are now."""
    return bool(checkpoint) and weights_sha256(scored_weights(run, checkpoint)) == checkpoint.get("sha256")


def weights_sha256(path: Path) -> str | None:
    """sha256 of a checkpoint file (None when absent), computed once per file version in this process."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def start_figures(run: RunDir, split: str, record: dict[str, Any]) -> Path:
    """Empty ``figures_<split>/`` (its figures showed an earlier model) and stamp it with the checkpoint now scored."""
    folder = run.figures(split)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    atomic_write_json(folder / FIGURES_STAMP, {"checkpoint": record["checkpoint"], "eval": run.eval_json(split).name})
    return folder


def load_figures(run: RunDir, split: str) -> Path:
    """``figures_<split>/`` of a run, *only* if its figures show the run's current checkpoint (like :func:`load_eval`)."""
    folder = run.figures(split)
    stamp = load_json(folder / FIGURES_STAMP, "figures")
    if not scores_current_weights(run, stamp["checkpoint"]):
        raise StaleArtifact(
            f"{folder} shows an earlier model of this run (checkpoint sha256 {str(stamp['checkpoint'].get('sha256'))[:12]}…): "
            f"its figures are out of date and not shown. Re-run 03_evaluate_clip.ipynb with {_scoring(run, split)}."
        )
    return folder


def metrics_belong(record: dict[str, Any], saved: dict[str, Any], best: Path) -> str | None:
    """Why ``metrics.json`` (``record``) is not the summary of the checkpoint ``saved`` and its ``best.pt``, or None:
    edited after it was written, another number of epochs (a copy restored from an older Drive version), another
    best epoch, or other weights."""
    if not is_sealed(record):
        return "it was edited after it was written"
    if record.get("epochs") != saved.get("epoch"):
        return f"it summarises {record.get('epochs')} epochs, the checkpoint holds {saved.get('epoch')}"
    if record.get("best_epoch") != best_record(saved["history"])["epoch"]:
        return f"its best epoch ({record.get('best_epoch')}) is not the checkpoint's ({best_record(saved['history'])['epoch']})"
    if record.get("best_sha256") != weights_sha256(best):
        return f"it describes other weights than {best.name}"
    return None


def load_metrics(run: RunDir) -> dict[str, Any]:
    """``metrics.json`` of a finished run, *only* if it describes the run's current ``best.pt`` and was not edited."""
    record = load_json(run.metrics, "metrics")
    if not is_sealed(record):  # no seal at all reads as an edit too
        raise StaleArtifact(
            f"{run.metrics} was edited after it was written (or its seal removed): not shown. "
            f"Re-run 02_train_clip.ipynb with RUN_NAME={run.name!r}: "
            "it writes the summary again from the checkpoint."
        )
    if record.get("best_sha256") != weights_sha256(run.best):
        raise StaleArtifact(
            f"{run.metrics} describes another model than {run.best} (it was retrained or continued since): not shown. "
            f"Re-run 02_train_clip.ipynb with RUN_NAME={run.name!r}: it finishes the run and writes the summary again."
        )
    return record


# ----------------------------------------------------------------------------- metrics
@dataclass
class TrainResult:
    """What a call to ``train.train`` returns: the run, its epochs and its ``metrics.json``."""

    run_dir: Path
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    resumed_from_epoch: int = 0
    skipped: bool = False  # the run had already finished: nothing was trained
    events: list[str] = field(default_factory=list)
    curves_shown: bool = False  # a live panel drew the final curves in the notebook already (LIVE_PLOT)

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)


def metrics_record(run: RunDir, history: list[dict[str, Any]], events: list[str], **facts: Any) -> dict[str, Any]:
    """The ``metrics.json`` format (docs/artifacts.md): the best epoch, totals, and ``facts`` (config,
    arch, hardware, precision, image counts, protocol) as the trainer knows them."""
    best = best_record(history)
    train_seconds = sum(r["train_seconds"] for r in history)
    return {
        "run_name": run.name,
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "selection_metric": f"val_{SELECTION_METRIC}",
        "best_val": {k: v for k, v in best.items() if k.startswith("val_")},
        "final_train_loss": history[-1]["train_loss"],
        "final_val_loss": history[-1]["val_loss"],
        "total_train_seconds": train_seconds,
        "total_seconds": train_seconds + sum(r["val_seconds"] for r in history),
        "epoch_seconds": [r["train_seconds"] for r in history],
        "img_per_s": sum(r["img_per_s"] * r["train_seconds"] for r in history) / max(1e-9, train_seconds),
        "skipped_steps": sum(r["skipped_steps"] for r in history),
        "events": events,
        **facts,
    }  # sealed by the trainer when it writes it (seal)


PERCENT_COLUMNS = (  # stored as fractions (JSON), read in %
    "train_i2t_acc", "val_i2t_R@1", "val_i2t_R@5", "val_i2t_R@10", "val_t2i_R@1", "val_t2i_R@5", "val_t2i_R@10",
)  # fmt: skip


def summary_markdown(result: TrainResult) -> str:
    """Per-epoch table (Recall@1/5/10 both directions, in %; rsum out of 600) plus the headline facts of a run."""
    m = result.metrics
    hw = m["hardware"]
    lines = [
        f"**Run** `{m['run_name']}`: {m['epochs']} epochs on {hw.get('gpu') or 'CPU'} "
        f"({m['amp_dtype']}, channels_last={m['channels_last']}), {markdown.duration(m['total_train_seconds'])} of training "
        f"(m:ss), {m['img_per_s']:.0f} img/s. Best epoch by the val rsum: **{m['best_epoch']}**."
        + (" (Already trained: loaded from the run folder.)" if result.skipped else ""),
        "",
        "Recall@K and the in-batch top-1 in %, on the val split; rsum is the sum of the six Recall@K, out of 600.",
        "",
    ]
    header = [
        "epoch", "train loss", "val loss", "in-batch top-1 I→T", "I→T R@1", "I→T R@5", "I→T R@10", "T→I R@1", "T→I R@5",
        "T→I R@10", "rsum", "img/s",
    ]  # fmt: skip
    rows = [
        [str(r["epoch"]), f"{r['train_loss']:.4f}", f"{r['val_loss']:.4f}", *(f"{100 * r[k]:.1f}" for k in PERCENT_COLUMNS),
         f"{100 * r['val_rsum']:.1f}", f"{r['img_per_s']:.0f}"]
        for r in result.history
    ]  # fmt: skip
    lines.append(markdown.table(header, rows, numeric=range(len(header))))
    if m["events"]:
        lines += ["", "**Events:** " + "; ".join(m["events"])]
    return "\n".join(lines)
