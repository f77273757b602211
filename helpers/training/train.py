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

import functools
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..clip.embed import amp_dtype
from ..clip.loss import Negatives
from ..clip.model import check_same_architecture, model_config
from ..core import env, resolution
from ..core.artifacts import load_json, load_torch
from ..core.config import Config, ConfigError, TrainingDiverged
from ..core.env import Paths
from ..core.faults import kill_point
from ..core.lab import TRAINING
from ..core.storage import atomic_rename
from ..store.runlock import holding
from ..store.runs import (
    SELECTION_METRIC,
    TrainResult,
    best_record,
    check_own_best,
    check_same_run,
    load_history,
    repair_finished,
    run_name_for,
    save_checkpoint,
    settle_staged_best,
    write_best,
    write_history,
)  # fmt: skip
from . import epoch as epochs
from . import recovery
from .assemble import assemble, loss_and_step
from .checkpoint import seed_everything
from .distributed import gather_with_local_grad, global_loss, init_distributed, wrap_model
from .optim import head_lr, make_scheduler
from .plan import plan_run
from .state import RunState
from .summary import write_summary
from .train_data import load_training_data
from .validation import validate_epoch


class Trainer:
    """One training run: ``fit()`` trains (or resumes, or skips a finished run). The state it trains is ``self.state``."""

    def __init__(self, cfg: Config, paths: Paths, device: str | torch.device | None = None, progress: bool = True,
                 on_epoch: Callable[[Trainer], None] | None = None, on_step: Callable[[Trainer], None] | None = None,
                 log: Callable[[str], None] = print):  # fmt: skip
        plan = plan_run(cfg, paths)  # the variant resolved once: the run's settings, folder, identity and records
        self.cfg = cfg = plan.cfg
        self.run, self.identity, self.variant, self.overrides = plan.run, plan.identity, plan.variant, plan.overrides
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
        cfg = self.cfg  # a continued run keeps the schedule it started with (_resume_or_start)
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
                record.update(validate_epoch(self.model, self.val_set, self.device, self.state.batch_size, cfg, self.loss_fn,
                                             f"Run {self.run_name}, epoch {epoch + 1}"))  # fmt: skip
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
            self.run.best_next.unlink(missing_ok=True)  # staged by a first epoch whose checkpoint never landed
            self.state = self.new_state(self.cfg.batch_size, self.cfg.lr)
            return 0, False
        saved = load_torch(self.run.checkpoint, "checkpoint")
        check_same_run(self.run, saved, self.identity, self.inputs, self.paths)
        check_same_architecture(saved["arch"], self.arch, str(self.run.checkpoint))
        settled = settle_staged_best(self.run, saved)  # an end of epoch that stopped part-way: finished or undone
        check_own_best(self.run, saved)  # a best.pt from elsewhere never gets a summary, whatever metrics.json says
        self.state = self.new_state(saved["batch_size"], saved["lr"], pretrained=False).restore(saved, self.run.checkpoint)
        if settled:
            self._event(settled)
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
        recorded = list(saved["config"].get("train_sizes") or [])
        if recorded != list(self.cfg.train_sizes or []) and done > 0:  # e.g. lowres: its schedule depends on EPOCHS
            asked = list(self.cfg.train_sizes or [])
            self.cfg = self.cfg.replace(train_sizes=recorded)  # what trained, and what the summary records
            if "train_sizes" in self.overrides:
                self.overrides["train_sizes"]["resolved"] = recorded
            words = functools.partial(resolution.describe, image_size=self.cfg.image_size, epochs=self.cfg.epochs)
            self._event(
                f"resolution schedule kept as this run started it: {words(recorded)} (the schedule for {self.cfg.epochs} "
                f"epochs from the start, {words(asked)}, would be another run: FORCE_RETRAIN=True trains it)"
            )
        if self.dist.is_main and self.history:
            write_history(self.run, self.history, self.step_log, self.events)  # a kill may have left them out of step
        return done, False

    # ----------------------------------------------------------------- one epoch
    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training images: the training step (notebook 02's cell) on every batch, then the epoch's record."""
        s = self.state
        # train mode, this epoch's shuffle and caption draw, its meter, a progress bar
        with epochs.open_epoch(s, self.train_set, self.cfg, epoch, self.device, self.dist, self.channels_last, self.variant,
                               self.progress) as this:  # fmt: skip
            meter = this.meter
            for step, (images, text, image_ids) in this.batches:  # images normalised on the device; text: cached CLIP embeddings
                value, features = self.step_fn(
                    s.train_model, images, text, self.train_loss, s.optimizer, s.scaler, negatives=self._negatives(text, image_ids),
                    amp_dtype=self.amp_dtype, grad_clip=self.cfg.grad_clip, accept=meter.guard,
                )  # fmt: skip
                if meter.guard.last_refusal:  # a non-finite or spiking loss: nothing was updated
                    self._event(f"epoch {epoch + 1} step {step}: {meter.guard.last_refusal} loss {value:.3g}; step skipped")
                    meter.guard.check()  # too many: TooManyBadSteps, and the trainer rolls back
                    continue
                s.advance_schedule()  # the LR schedule follows the steps
                self._record_step(epoch, step, value, features, text, this)
        if meter.images == 0:  # every step was refused
            raise recovery.TooManyBadSteps
        temperature = 1.0 / s.model.scale().item()
        return {**meter.record(epoch), "lr": head_lr(s.optimizer), "temperature": temperature, "batch_size": s.batch_size,
                "train_size": this.size}  # fmt: skip

    def _negatives(self, text: torch.Tensor, image_ids: torch.Tensor) -> Negatives | None:
        """This step's extra negatives (the bank variant's), for the global batch under DDP; None without them."""
        if self.negative_source is None:
            return None
        ids = gather_with_local_grad(image_ids.to(self.device, non_blocking=True), self.dist)
        return self.negative_source.draw(self.state.global_step, ids, gather_with_local_grad(text, self.dist))

    def _record_step(self, epoch: int, step: int, value: float, features: torch.Tensor, text: torch.Tensor,
                     this: epochs.EpochRun) -> None:  # fmt: skip
        hits = this.meter.add(value, features, text)
        this.bar.update(1)
        this.bar.set_postfix(**this.meter.postfix())
        s = self.state
        if epochs.logged(s.global_step, step, this.steps):
            temperature = 1.0 / s.model.scale().item()
            s.step_log.append(epochs.step_entry(epoch, step, this.steps, s.global_step, value, hits, features.shape[0],
                                                head_lr(s.optimizer), temperature))  # fmt: skip
            this.meter.guard.remember(value)
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
        is_best = best_record(self.history) is record
        if is_best:  # staged under another name: best.pt stays the last finished result until the checkpoint lands
            write_best(self.run, saved, record, self.paths, dest=self.run.best_next)
            kill_point("after_staged_best")
        save_checkpoint(saved, self.run.checkpoint, self.paths)  # the epoch now counts
        kill_point("after_checkpoint")
        if is_best:
            atomic_rename(self.run.best_next, self.run.best)  # best.pt is the old or the new file, never a part
        write_history(self.run, self.history, self.step_log, self.events)
        self.log(epochs.summary_line(epoch, record, self.cfg))
        if self.on_epoch is not None:
            self.on_epoch(self)

    def _write_metrics(self) -> dict[str, Any]:
        """The sealed summary of the finished run (metrics.json)."""
        return write_summary(self.run, self.paths, self.cfg, self.history, self.events, self.data, self.arch, variant=self.variant,
                             overrides=self.overrides, identity=self.identity, amp=self.amp_dtype,
                             channels_last=self.channels_last)  # fmt: skip


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
