"""The resumable trainer: the driver around the training step, fast on a T4, safe against disconnects, divergence and OOM.

Read the step first (notebook 02's lab cell ``training_step``: forward, the CLIP loss, backward, optimizer step): it is
what every batch runs. This module drives it, with the loss and the model of 02's cells (``cfg.lab``), and keeps a run
alive:

Speed: fp16 autocast + GradScaler on CUDA (bf16 on GPUs that support it natively),
channels_last, ``cudnn.benchmark``, uint8 batches normalised on the GPU, pinned memory
and non-blocking copies; captions come pre-encoded from the cache.

Reliability: the run's whole state (state.py: model, optimizer, scheduler, scaler, counters, history; with the
RNG states) is written atomically to ``checkpoint.pt`` at the end of every epoch (helpers/store/runs.py names
the files). Data order and caption draws are functions of (seed, epoch), so re-running the notebook resumes
after the last finished epoch and ends in the same state as an uninterrupted run. A non-finite or exploding
loss skips the step; too many roll back to the last checkpoint with half the LR; a CUDA out-of-memory halves
the batch (recovery.py). One writer per run folder (helpers/store/runlock.py).

Model selection: ``best.pt`` holds the epoch with the highest validation **rsum**
(sum of Recall@1/5/10 in both directions on the *val* split, never the test split).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..clip.embed import amp_dtype
from ..clip.loss import CLIP_LOSS_TEXT, Negatives
from ..clip.metrics import NonFiniteFeatures
from ..clip.model import check_same_architecture, describe, model_config
from ..core import env, resolution
from ..core.artifacts import load_json, load_torch
from ..core.config import Config, ConfigError, TrainingDiverged, run_identity
from ..core.env import Paths
from ..core.faults import kill_point
from ..core.flags import Recipe
from ..core.lab import TRAINING
from ..core.markdown import duration
from ..core.storage import atomic_write_json
from ..data.dataset import normalize_images, with_data_code
from ..store.runlock import holding
from ..store.runs import (
    SELECTION_METRIC,
    RunDir,
    TrainResult,
    best_record,
    check_same_run,
    load_history,
    metrics_record,
    repair_finished,
    run_name_for,
    save_checkpoint,
    seal,
    weights_sha256,
    write_best,
    write_history,
)  # fmt: skip
from . import epoch as epochs
from . import recovery
from .assemble import assemble, loss_and_step
from .checkpoint import seed_everything
from .distributed import gather_with_local_grad, global_loss, init_distributed, wrap_model
from .optim import head_lr, make_scheduler
from .state import RunState
from .train_data import load_training_data
from .validation import validate


class Trainer:
    """One training run: ``fit()`` trains (or resumes, or skips a finished run). The state it trains is ``self.state``."""

    def __init__(self, cfg: Config, paths: Paths, device: str | torch.device | None = None, progress: bool = True,
                 on_epoch: Callable[[Trainer], None] | None = None, on_step: Callable[[Trainer], None] | None = None,
                 log: Callable[[str], None] = print):  # fmt: skip
        cfg = with_data_code(cfg, paths)  # notebook 01's Dataset as 01 ran it (the caption cache records it): part of the name
        self.run = RunDir.for_config(paths, cfg)  # named from the settings as given, before variant overrides
        self.identity = run_identity(cfg)  # what the run folder must agree with to be resumed or reused
        self.variant = Recipe.of(cfg.flags, cfg.lab)  # the modification's records, 04's cells as the lab holds them (none: baseline)
        resolved = self.variant.overrides(cfg.to_dict())  # e.g. bigbatch: batch 256 and a larger LR
        self.overrides = {k: {"requested": getattr(cfg, k), "resolved": v} for k, v in resolved.items()}
        self.cfg = cfg = cfg.replace(**resolved)
        self.dist = init_distributed()
        self.lab = cfg.lab  # the lab's cells (notebook 02's model, loss and step), as the notebook's kernel ran them
        self.loss_fn, self.step_fn = loss_and_step(cfg, self.variant)  # a modification's loss or 02's clip_loss; 02's step
        self.train_loss = global_loss(self.loss_fn, self.dist)  # over every GPU's batch under torchrun
        if not self.dist.is_main:  # rank 0 alone logs, plots and writes
            progress, on_epoch, on_step, log = False, None, None, lambda message: None
        self.paths, self.progress, self.on_epoch, self.on_step, self.log = paths, progress, on_epoch, on_step, log
        self.device = torch.device(device or (f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu"))
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(f"BATCH_SIZE={cfg.batch_size} must divide evenly over {self.dist.world_size} processes")
        self.run.path.mkdir(parents=True, exist_ok=True)
        self.data = data = load_training_data(cfg, paths, self.variant, progress)
        self.train_set, self.val_set, self.inputs, self.arch = data.train_set, data.val_set, data.inputs, model_config(cfg, data.embed_dim)
        negatives = self.variant.single("negatives")  # extra negatives drawn each step (the bank), or None
        self.negative_source = negatives(self.train_set, cfg.to_dict(), self.dist.rank).to(self.device) if negatives else None
        self.amp_dtype, self.channels_last = amp_dtype(self.device, cfg.amp), cfg.channels_last and self.device.type == "cuda"
        self.state: RunState | None = None  # built by fit(): a new model, or the checkpoint's

    # what the live panel, the callbacks and the tests read: the state's, never a copy
    model = property(lambda self: self.state.model)
    history = property(lambda self: self.state.history)
    step_log = property(lambda self: self.state.step_log)
    events = property(lambda self: self.state.events)
    run_name, run_dir = property(lambda self: self.run.name), property(lambda self: self.run.path)

    def new_state(self, batch_size: int, lr: float, pretrained: bool = True) -> RunState:
        """A fresh model, optimizer, schedule and scaler (the old state's memory freed first on a GPU)."""
        if self.state is not None and self.device.type == "cuda":
            self.state = None
            gc.collect()
            torch.cuda.empty_cache()
        seed_everything(self.cfg.seed)
        parts = assemble(self.cfg, self.variant, self.arch, self.device, lr, self.amp_dtype, self.channels_last, pretrained)
        total = epochs.steps_per_epoch(len(self.train_set), batch_size, self.cfg.max_steps_per_epoch) * self.cfg.epochs
        scheduler = make_scheduler(parts.optimizer, total, self.cfg.lr_schedule, self.variant.warmup(self.cfg.warmup_steps, total))
        return RunState(parts.model, wrap_model(parts.model, self.dist, self.device), parts.optimizer, scheduler, parts.scaler,
                        batch_size, lr)  # fmt: skip

    # ----------------------------------------------------------------- the run
    def fit(self) -> TrainResult:
        """Train, resume or skip, holding the run folder's lock (one writer per run folder)."""
        with holding(self.run_dir, "training", enabled=self.dist.is_main, log=self.log):
            return self._fit()

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        self.run.remove_partial_writes()
        if cfg.force_retrain:
            self.run.discard()
        epoch, finished = self._resume_or_start()
        if finished:
            if self.dist.is_main:
                load_history(self.run)  # a damaged history.json is rewritten from the checkpoint
            return TrainResult(self.run_dir, self.history, load_json(self.run.metrics, "metrics"), epoch, True, self.events)
        start_epoch = epoch
        cfg.save(self.run.config)
        if start_epoch == 0:  # a resumed run has them in its events already
            for note in (n for hook in self.variant.each("notes") for n in hook(cfg.to_dict())):
                self._event(note)
            if cfg.train_sizes:
                self._event(f"resolution schedule: {resolution.describe(cfg.train_sizes, cfg.image_size, cfg.epochs)}")
        torch.backends.cudnn.benchmark = self.device.type == "cuda"
        while epoch < cfg.epochs:
            out_of_memory = False
            try:
                record = self.train_one_epoch(epoch)
            except torch.cuda.OutOfMemoryError:  # the same class as torch.OutOfMemoryError in torch >= 2.5
                out_of_memory = True  # handled below: inside this block the traceback still holds the step's activations
            except recovery.TooManyBadSteps:  # back to the last checkpoint with half the LR; the epoch starts again
                self.state = recovery.after_divergence(self.state, epoch, self.run.checkpoint, self.new_state, self.run_name,
                                                       cfg.to_dict(), self._event)  # fmt: skip
                continue
            if out_of_memory:  # half the batch, from the last checkpoint; the epoch starts again
                self.state = recovery.after_out_of_memory(self.state, epoch, self.run.checkpoint, self.new_state, self.device,
                                                          self.dist.world_size if self.dist.enabled else 1, self._event)  # fmt: skip
                continue
            if self.dist.is_main:
                kill_point("validation")
                record.update(self._validate(epoch))
                self.history.append(record)
                self._end_of_epoch(epoch, record)
            self.dist.barrier()  # the checkpoint is on disk before any rank goes on
            epoch += 1
        metrics = self._write_metrics() if self.dist.is_main else {}
        return TrainResult(self.run_dir, self.history, metrics, start_epoch, False, self.events)

    def _resume_or_start(self) -> tuple[int, bool]:
        """(epochs already trained, whether the run is finished): the checkpoint's state, or a new model at epoch 0.

        A run folder is resumed or reused only when it was made with the same identity settings and from
        the same data as asked for now; anything else is refused with the differences named.
        """
        if not self.run.checkpoint.exists():
            self.state = self.new_state(self.cfg.batch_size, self.cfg.lr)
            return 0, False
        saved = load_torch(self.run.checkpoint, "checkpoint")
        check_same_run(self.run, saved, self.identity, self.inputs, self.paths)
        check_same_architecture(saved["arch"], self.arch, str(self.run.checkpoint))
        self.state = self.new_state(saved["batch_size"], saved["lr"], pretrained=False).restore(saved, self.run.checkpoint)
        done = saved["epoch"]
        if done >= self.cfg.epochs and self.run.metrics.exists():
            for event in repair_finished(self.run, saved, self.paths):  # lost best.pt or config.json; metrics.json not its own
                self._event(event)
            if not self.run.metrics.exists():  # the checkpoint is the source of truth: its summary written again from it
                self._write_metrics()
            self.log(f"Run {self.run_name} already finished ({done} epochs): nothing to train. FORCE_RETRAIN=True retrains.")
            return done, True
        self.log(f"Resuming {self.run_name} after epoch {done} of {self.cfg.epochs}")
        self.run.metrics.unlink(missing_ok=True)  # no longer finished: no reader may take the old summary for this model
        if saved["config"].get("epochs") != self.cfg.epochs:
            self._event(
                f"EPOCHS changed from {saved['config'].get('epochs')} to {self.cfg.epochs}: continuing after epoch {done}"
                + (" (the cosine schedule is stretched to the new length)" if self.cfg.lr_schedule == "cosine" else "")
            )
        if self.dist.is_main and self.history:
            write_history(self.run, self.history, self.step_log, self.events)  # a kill may have left them out of step
        return done, False

    # ----------------------------------------------------------------- one epoch
    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training images: the training step (step.py) on every batch, then the epoch's record."""
        s = self.state
        with self._epoch(epoch) as (batches, meter):  # train mode, this epoch's shuffle and caption draw, a progress bar
            for step, (images, text, image_ids) in batches:  # images normalised on the device; text: cached CLIP embeddings
                value, features = self.step_fn(
                    s.train_model, images, text, self.train_loss, s.optimizer, s.scaler, negatives=self._negatives(text, image_ids),
                    amp_dtype=self.amp_dtype, grad_clip=self.cfg.grad_clip, accept=meter.guard,
                )  # fmt: skip
                if meter.guard.last_refusal:  # a non-finite or spiking loss: nothing was updated
                    self._event(f"epoch {epoch + 1} step {step}: {meter.guard.last_refusal} loss {value:.3g}; step skipped")
                    meter.guard.check()  # too many: TooManyBadSteps, and the trainer rolls back
                    continue
                s.advance_schedule()  # the LR schedule follows the steps
                self._record_step(epoch, step, value, features, text, meter)
        if meter.images == 0:  # every step was refused
            raise recovery.TooManyBadSteps
        temperature = 1.0 / s.model.scale().item()
        return {**meter.record(epoch), "lr": head_lr(s.optimizer), "temperature": temperature, "batch_size": s.batch_size,
                "train_size": self._size}  # fmt: skip

    @contextmanager
    def _epoch(self, epoch: int) -> Iterator[tuple[Iterator[tuple[int, tuple[torch.Tensor, ...]]], epochs.EpochMeter]]:
        """Train mode, this epoch's batches (on the device) and meter, and a progress bar closed however the epoch ends."""
        from tqdm.auto import tqdm

        s = self.state
        s.model.train()
        for hook in self.variant.each("on_train_mode"):  # e.g. freeze_bn: the trunk's BatchNorm statistics stay frozen
            hook(s.model)
        self._steps = epochs.steps_per_epoch(len(self.train_set), s.batch_size, self.cfg.max_steps_per_epoch)
        loader = epochs.epoch_loader(self.train_set, s.batch_size, self.cfg.seed, epoch, self.cfg.num_workers, self.dist)
        recent = [e["loss"] for e in s.step_log[-recovery.SPIKE_WINDOW // epochs.STEP_LOG_EVERY :]]
        meter = epochs.EpochMeter(self.device, recovery.LossGuard(recent, self._steps))
        self._size = resolution.size_at(epoch, self.cfg.train_sizes, self.cfg.image_size)  # the schedule's (TRAIN_SIZES)
        batches = self._batches(loader)
        desc = f"epoch {epoch + 1}/{self.cfg.epochs}"
        with tqdm(total=self._steps, desc=desc, unit="step", disable=not self.progress, leave=False) as self._bar:
            try:
                yield batches, meter
            finally:  # a rollback or an OOM leaves mid-epoch: let go of the loader (and its workers) now, not at GC
                batches.close()

    def _batches(self, loader: Any) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        for step, (images, text, image_ids, _) in enumerate(loader):
            if step >= self._steps:
                break
            images = normalize_images(images, self.device, self.channels_last, size=self._size)
            kill_point("train_step")  # tests: die in the middle of an epoch
            yield step, (images, text.to(self.device, non_blocking=True), image_ids)

    def _negatives(self, text: torch.Tensor, image_ids: torch.Tensor) -> Negatives | None:
        """This step's extra negatives (the bank variant's), for the global batch under DDP; None without them."""
        if self.negative_source is None:
            return None
        ids = gather_with_local_grad(image_ids.to(self.device, non_blocking=True), self.dist)
        return self.negative_source.draw(self.state.global_step, ids, gather_with_local_grad(text, self.dist))

    def _record_step(self, epoch: int, step: int, value: float, features: torch.Tensor, text: torch.Tensor,
                     meter: epochs.EpochMeter) -> None:  # fmt: skip
        hits = meter.add(value, features, text)
        self._bar.update(1)
        self._bar.set_postfix(**meter.postfix())
        s = self.state
        if epochs.logged(s.global_step, step, self._steps):
            temperature = 1.0 / s.model.scale().item()
            s.step_log.append(epochs.step_entry(epoch, step, self._steps, s.global_step, value, hits, features.shape[0],
                                                head_lr(s.optimizer), temperature))  # fmt: skip
            meter.guard.remember(value)
            if self.on_step is not None:
                self.on_step(self)

    def _event(self, message: str) -> None:
        self.state.events.append(message)
        self.log(message)

    # ----------------------------------------------------------------- end of epoch, end of run
    def _end_of_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        saved = self.state.checkpoint(epoch + 1, arch=self.arch, config=self.cfg.to_dict(), identity=self.identity,
                                      inputs=self.inputs, run_name=self.run_name, lab_code=self.lab.sources(TRAINING))  # fmt: skip
        self.run.path.mkdir(parents=True, exist_ok=True)  # the folder deleted mid-run: written again, never left half
        if not self.run.config.exists():
            self.cfg.save(self.run.config)
        if best_record(self.history) is record:
            write_best(self.run, saved, record, self.paths)
        save_checkpoint(saved, self.run.checkpoint, self.paths)  # last: the epoch now counts
        kill_point("after_checkpoint")
        write_history(self.run, self.history, self.step_log, self.events)
        at = f" at {record['train_size']} px" if self.cfg.train_sizes else ""
        self.log(
            f"epoch {epoch + 1}/{self.cfg.epochs}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
            f"val R@1 image→text {100 * record['val_i2t_R@1']:.1f}%, text→image {100 * record['val_t2i_R@1']:.1f}%, "
            f"val rsum {100 * record['val_rsum']:.1f} of 600, {record['img_per_s']:.0f} img/s{at}, {duration(record['train_seconds'])}"
        )
        if self.on_epoch is not None:
            self.on_epoch(self)

    def _validate(self, epoch: int) -> dict[str, Any]:
        """The val figures of this epoch; non-finite features stop the run before the epoch is saved (never best.pt)."""
        try:
            return validate(self.model, self.val_set, self.device, self.state.batch_size, self.cfg.amp, self.cfg.num_workers, self.loss_fn)
        except NonFiniteFeatures as exc:
            raise TrainingDiverged(
                f"Run {self.run_name}, epoch {epoch + 1}: {exc} (at validation). The epoch is not saved; best.pt keeps the last "
                f"good epoch. {recovery.advice(self.cfg)} Then re-run with FORCE_RETRAIN=True."
            ) from None

    def _write_metrics(self) -> dict[str, Any]:
        metrics = seal(metrics_record(
            self.run, self.history, self.events,
            amp_dtype=str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32", channels_last=self.channels_last,
            hardware=env.hardware_summary(self.paths), config=self.cfg.to_dict(), variant_overrides=self.overrides,  # requested/resolved
            variant_sources={r.name: r.source for r in self.variant.records if not r.builtin},  # a student's code, as trained
            lab_code=self.lab.sources(TRAINING), lab_edited=self.lab.edited(TRAINING),  # the cells it trained with; those changed
            loss=self.variant.loss_text(CLIP_LOSS_TEXT),  # what the report says of the run, read without its records
            model=describe(self.arch, self.lab), arch=self.arch, num_train_images=len(self.train_set), num_val_images=len(self.val_set),
            protocol=self.data.splits.protocol, identity=self.identity, inputs=self.inputs, data=self.data.facts(),
            best_sha256=weights_sha256(self.run.best),  # the model this summary describes
        ))  # fmt: skip
        atomic_write_json(self.run.metrics, metrics)  # sealed: a hand edit is noticed (runs.is_sealed)
        return metrics


def train(cfg: Config, paths: Paths, progress: bool = True, live_plot: bool | None = None, **trainer_options: Any) -> TrainResult:
    """Train (or resume, or skip) the run described by ``cfg``: the one entry point (notebooks, ablation, CLI).

    In Jupyter/Colab a live learning-curve panel follows the run when ``live_plot`` (default: LIVE_PLOT).
    ``trainer_options`` go to :class:`Trainer` (``log``, ``on_step``, ``on_epoch``, ``device``).
    """
    from ..store.curves import LivePanel, in_notebook

    live_plot = cfg.live_plot if live_plot is None else live_plot
    panel = None
    if live_plot and in_notebook() and not {"on_step", "on_epoch"} & trainer_options.keys():
        panel = LivePanel(run_name_for(cfg))
        trainer_options.update(on_step=panel.update, on_epoch=lambda t: panel.update(t, force=True))
    result = Trainer(cfg, paths, progress=progress, **trainer_options).fit()
    result.curves_shown = panel is not None and panel.drawn  # the notebook shows the saved figure only if no panel did
    return result


def load_modification(path: str) -> None:
    """Import a student's .py file (as notebook 04's ``student-modification`` cell runs): its ``register`` calls add records.

    Imported as a module of its own name, so that the source of its classes can be read (and digested) like a built-in's."""
    import importlib.util
    import sys

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--modification {path}: no such file. Give the .py file that calls helpers.clip.variants.register(...)")
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[file.stem] = module
    spec.loader.exec_module(module)


def main(argv: list[str] | None = None) -> int:
    """Headless: ``python -m helpers.train --config run.json [--set KEY=VALUE ...] [--modification mine.py]`` (also under
    ``torchrun``: every process loads the modification)."""
    import argparse
    import json

    import torch.distributed as dist

    from ..core import config as config_mod

    parser = argparse.ArgumentParser(description="Train the CLIP image tower (resumes automatically).")
    parser.add_argument("--config", required=True, help="a JSON config file (Config.save)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, values as JSON")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--modification", action="append", default=[], metavar="FILE.py",
        help="a .py file that registers your own modification (helpers.clip.variants.register), loaded before the config",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for path in args.modification:
        load_modification(path)
    cfg = config_mod.load(args.config, **config_mod.parse_sets(args.set))
    result = train(cfg, env.resolve_paths(cfg), progress=not args.no_progress)
    if result.metrics:  # rank 0 (or the only process)
        backend = dist.get_backend() if dist.is_initialized() else None
        summary = {"run_dir": str(result.run_dir), "best_epoch": result.metrics["best_epoch"], "skipped": result.skipped}
        print(json.dumps({**summary, "backend": backend}))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["SELECTION_METRIC", "TrainResult", "Trainer", "TrainingDiverged", "train"]
