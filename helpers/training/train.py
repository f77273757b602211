"""The resumable trainer: fast on a T4, safe against disconnects, divergence and OOM.

Read :meth:`Trainer.train_one_epoch` first: it is the whole training step (forward, the CLIP
loss, backward, optimizer step) in one screen. The rest keeps a run alive:

Speed: fp16 autocast + GradScaler on CUDA (bf16 on GPUs that support it natively),
channels_last, ``cudnn.benchmark``, uint8 batches normalised on the GPU, pinned memory
and non-blocking copies; captions come pre-encoded from the cache.

Reliability: at the end of every epoch the whole training state (model, optimizer,
scheduler, scaler, RNG states, epoch, history, config) is written atomically to the run
folder's ``checkpoint.pt`` (helpers/training/runs.py names the files). Data order and caption draws
are functions of (seed, epoch), so re-running the notebook resumes after the last finished
epoch and ends in the same state as an uninterrupted run. A non-finite or exploding loss
rolls back to the last checkpoint with half the LR; a CUDA out-of-memory halves the batch.

Model selection: ``best.pt`` holds the epoch with the highest validation **rsum**
(sum of Recall@1/5/10 in both directions on the *val* split, never the test split).
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..clip.embed import amp_dtype
from ..clip.loss import CLIP_LOSS_TEXT, Negatives, clip_loss, in_batch_hits
from ..clip.metrics import NonFiniteFeatures
from ..clip.model import ClipImageModel, build_model, check_same_architecture, describe, model_config
from ..core import env
from ..core.artifacts import ArtifactError, load_json, load_torch, load_weights
from ..core.config import Config, ConfigError, run_identity
from ..core.env import Paths
from ..core.faults import kill_point
from ..core.flags import Recipe
from ..core.storage import atomic_write_json
from ..data.dataset import make_loader, normalize_images
from ..data.image_cache import failures
from . import recovery
from .checkpoint import rng_state, save_checkpoint, seed_everything, set_rng_state
from .distributed import backward_scale, fix_replicated_grads, gather_with_local_grad, init_distributed
from .optim import head_lr, make_optimizer, make_scheduler
from .recovery import RolledBack, TrainingDiverged
from .runlock import holding
from .runs import (
    BEST,
    SELECTION_METRIC,
    RunDir,
    TrainResult,
    best_record,
    check_same_run,
    load_history,
    metrics_record,
    run_name_for,
    weights_sha256,
    write_history,
)
from .train_data import load_training_data
from .validation import validate

STEP_LOG_EVERY = 10


@dataclass
class EpochMeter:
    """Running sums of one epoch; in-batch hits stay on the device (no sync per step)."""

    device: torch.device
    loss: float = 0.0
    images: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.hits = torch.zeros(2, dtype=torch.long, device=self.device)

    def add(self, loss: float, n: int, hits: torch.Tensor) -> None:
        self.loss, self.images, self.hits = self.loss + loss * n, self.images + n, self.hits + hits

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
            "skipped_steps": self.skipped,
            "train_seconds": seconds,
            "img_per_s": self.images / seconds,
        }


class Trainer:
    """One training run. ``fit()`` trains (or resumes, or skips a finished run)."""

    def __init__(
        self,
        cfg: Config,
        paths: Paths,
        device: str | torch.device | None = None,
        progress: bool = True,
        on_epoch: Callable[[Trainer], None] | None = None,
        on_step: Callable[[Trainer], None] | None = None,
        log: Callable[[str], None] = print,
    ):
        self.run = RunDir.for_config(paths, cfg)  # named from the settings as given, before variant overrides
        self.identity = run_identity(cfg)  # what the run folder must agree with to be resumed or reused
        self.variant = Recipe.of(cfg.flags)  # the modification's records (notebook 04); the baseline has none
        resolved = self.variant.overrides(cfg.to_dict())  # e.g. bigbatch: batch 256 and a larger LR
        self.overrides = {k: {"requested": getattr(cfg, k), "resolved": v} for k, v in resolved.items()}
        cfg = cfg.replace(**resolved)
        self.loss_fn = self.variant.single("loss") or clip_loss  # every loss takes (image, text, scale, negatives)
        self.dist = init_distributed()
        if not self.dist.is_main:  # rank 0 alone logs, plots and writes
            progress, on_epoch, on_step, log = False, None, None, lambda message: None
        self.cfg, self.paths, self.progress, self.on_epoch, self.on_step, self.log = cfg, paths, progress, on_epoch, on_step, log
        default_device = f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device or default_device)
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(f"BATCH_SIZE={cfg.batch_size} must divide evenly over {self.dist.world_size} processes")
        self.run.path.mkdir(parents=True, exist_ok=True)
        self.events: list[str] = []
        self.history: list[dict[str, Any]] = []
        self.step_log: list[dict[str, float]] = []
        self.batch_size, self.lr, self.rollbacks, self.global_step = cfg.batch_size, cfg.lr, 0, 0
        self._load_data()

    # ----------------------------------------------------------------- data & model
    def _load_data(self) -> None:
        data = load_training_data(self.cfg, self.paths, self.variant, self.progress)
        self.splits, self.cache, self.train_set, self.val_set, self.embed_dim, self.inputs = (
            data.splits, data.cache, data.train_set, data.val_set, data.embed_dim, data.inputs
        )
        negatives = self.variant.single("negatives")  # extra negatives drawn each step (the bank), or None
        self.negative_source = negatives(self.train_set, self.cfg.to_dict(), self.dist.rank) if negatives else None
        self.arch = model_config(self.cfg, self.embed_dim)

    def _build(self, pretrained: bool) -> None:
        # a rebuild (after an OOM in the first epoch): free the old model and optimizer state before allocating anew
        rebuilt = [self.__dict__.pop(name, None) for name in ("train_model", "model", "optimizer", "scheduler")]
        if any(old is not None for old in rebuilt) and self.device.type == "cuda":
            del rebuilt
            gc.collect()
            torch.cuda.empty_cache()
        seed_everything(self.cfg.seed)
        self.model: ClipImageModel = build_model(self.arch, pretrained=pretrained).to(self.device)
        if self.negative_source is not None:
            self.negative_source.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_model: torch.nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = make_optimizer(self.model, self.cfg, self.variant, self.lr)
        total = self._steps_per_epoch() * self.cfg.epochs
        warmup = self.variant.warmup(self.cfg.warmup_steps, total)
        self.scheduler = make_scheduler(self.optimizer, total, self.cfg.lr_schedule, warmup)
        self.amp_dtype = amp_dtype(self.device, self.cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    @property
    def run_name(self) -> str:
        return self.run.name

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def channels_last(self) -> bool:
        return self.cfg.channels_last and self.device.type == "cuda"

    def _steps_per_epoch(self) -> int:
        n = len(self.train_set) // self.batch_size if len(self.train_set) >= self.batch_size else 1
        return min(n, self.cfg.max_steps_per_epoch or n)

    # ----------------------------------------------------------------- checkpoints
    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "epoch": epoch,  # epochs finished
            "global_step": self.global_step,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "rollbacks": self.rollbacks,
            "history": self.history,
            "step_log": self.step_log,
            "events": self.events,
            "arch": self.arch,
            "config": self.cfg.to_dict(),
            "identity": self.identity,
            "inputs": self.inputs,
            "run_name": self.run_name,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        check_same_architecture(state["arch"], self.arch, str(self.run.checkpoint))
        self.batch_size, self.lr, self.rollbacks = state["batch_size"], state["lr"], state["rollbacks"]
        self._build(pretrained=False)
        load_weights(self.model, state, self.run.checkpoint, "checkpoint")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history, self.step_log, self.events = list(state["history"]), list(state["step_log"]), list(state["events"])
        self.global_step = state["global_step"]
        set_rng_state(state["rng"])

    # ----------------------------------------------------------------- the run
    def fit(self) -> TrainResult:
        """Train, resume or skip, holding the run folder's lock (one writer per run folder: helpers/training/runlock.py)."""
        with holding(self.run_dir, "training", enabled=self.dist.is_main, log=self.log):
            return self._fit()

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        self.run.remove_partial_writes()
        if cfg.force_retrain:
            self.run.discard()
        start_epoch, finished = self._resume_or_start()
        if finished:
            metrics = load_json(self.run.metrics, "metrics")
            if self.dist.is_main:
                load_history(self.run)  # a damaged history.json is rewritten from the checkpoint
            return TrainResult(self.run_dir, self.history, metrics, start_epoch, True, self.events)
        cfg.save(self.run.config)
        if start_epoch == 0:  # a resumed run has them in its events already
            for note in (n for hook in self.variant.each("notes") for n in hook(cfg.to_dict())):
                self._event(note)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        epoch = start_epoch
        while epoch < cfg.epochs:
            out_of_memory = False
            try:
                record = self.train_one_epoch(epoch)
            except torch.cuda.OutOfMemoryError:  # the same class as torch.OutOfMemoryError in torch >= 2.5
                out_of_memory = True  # handled below: inside this block the traceback still holds the step's activations
            except RolledBack:  # diverged: back at the last checkpoint with half the LR
                continue
            if out_of_memory:
                recovery.out_of_memory(self, epoch)  # halves the batch, rolls back: the epoch starts again
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
            self._build(pretrained=True)
            return 0, False
        state = load_torch(self.run.checkpoint, "checkpoint")
        self._check_same_run(state)
        self._restore(state)
        start_epoch = state["epoch"]
        if start_epoch >= self.cfg.epochs and self.run.metrics.exists():
            self._repair_finished(state)
            self.log(f"Run {self.run_name} already finished ({start_epoch} epochs): nothing to train. FORCE_RETRAIN=True retrains.")
            return start_epoch, True
        self.log(f"Resuming {self.run_name} after epoch {start_epoch} of {self.cfg.epochs}")
        self.run.metrics.unlink(missing_ok=True)  # no longer finished: no reader may take the old summary for this model
        trained_for = state["config"].get("epochs")
        if trained_for != self.cfg.epochs:
            self._event(
                f"EPOCHS changed from {trained_for} to {self.cfg.epochs}: continuing after epoch {start_epoch}"
                + (" (the cosine schedule is stretched to the new length)" if self.cfg.lr_schedule == "cosine" else "")
            )
        if self.dist.is_main and self.history:
            write_history(self.run, self.history, self.step_log, self.events)  # a kill may have left them out of step
        return start_epoch, False

    def _check_same_run(self, state: dict[str, Any]) -> None:
        """Refuse to continue or reuse a run made with other identity settings, or from other data."""
        check_same_run(self.run, state, self.identity, self.inputs, self.paths)

    def _repair_finished(self, state: dict[str, Any]) -> None:
        """A finished run whose best.pt or config.json is gone or damaged: rebuilt from the checkpoint, or a clear error."""
        if not self.run.best.exists():
            best = best_record(self.history)
            if best["epoch"] != state["epoch"]:
                raise ArtifactError(
                    f"{self.run.best} is gone: the best epoch ({best['epoch']}) was not the last ({state['epoch']}), so its weights "
                    f"are lost. Re-run 02_train_clip.ipynb with FORCE_RETRAIN=True (RUN_NAME={self.run_name!r}) to train the run again."
                )
            self._save_best(state, best)
            self._event(f"{BEST} was missing: rewritten from {self.run.checkpoint.name} (epoch {best['epoch']} is the best)")
        try:
            load_json(self.run.config, "config")
        except ArtifactError:
            atomic_write_json(self.run.config, state["config"])
            warnings.warn(f"{self.run.config} was missing or damaged: rewritten from {self.run.checkpoint.name}", stacklevel=3)

    # ----------------------------------------------------------------- one epoch
    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training images. Per batch: forward, loss, backward, optimizer step."""
        with self._epoch(epoch) as batches:  # train mode, this epoch's shuffle and caption draw, a progress bar
            for step, (images, text, image_ids) in batches:  # images normalised on the device; text: cached CLIP embeddings
                loss, features = self._forward_loss(images, text, image_ids)
                value = loss.item()
                if self._skip_bad_step(value, epoch, step):  # a non-finite or spiking loss updates nothing (recovery.py)
                    continue
                self._backward(loss)  # loss.backward()
                self._optimizer_step()
                self._record_step(epoch, step, value, features, text)  # mean loss, in-batch accuracy, the curves' points
        return self._epoch_record(epoch)

    def _forward_loss(self, images: torch.Tensor, text: torch.Tensor, image_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's image features, and the CLIP loss against its captions' cached text embeddings."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            features = self.train_model(images)  # ClipImageModel: trunk -> head -> L2-normalised; fp16/bf16 on CUDA
        # loss_fn is clip_loss(features, text, scale, negatives=None), unless a variant brings its own (notebook 04)
        return self.loss_fn(*self._loss_inputs(features, text, image_ids)), features

    def _optimizer_step(self) -> None:
        """Clip the gradient (if GRAD_CLIP), step, clamp the temperature, zero the gradients, advance the LR schedule."""
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not fp16-scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)  # optimizer.step(); skipped by the fp16 GradScaler if the gradients overflowed
        self.scaler.update()
        self.model.clamp_logit_scale()  # after the step, never inside the forward pass (model.py)
        self.optimizer.zero_grad(set_to_none=True)
        self._advance_schedule()

    # what the step above calls beside the lesson: the epoch's bookkeeping, the variants' and multi-GPU losses, fp16 scaling
    @contextmanager
    def _epoch(self, epoch: int) -> Iterator[Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]]:
        """Train mode, this epoch's loader and meter, and a progress bar closed however the epoch ends (a rollback, an OOM)."""
        from tqdm.auto import tqdm

        self.model.train()
        for hook in self.variant.each("on_train_mode"):  # e.g. freeze_bn: the trunk's BatchNorm statistics stay frozen
            hook(self.model)
        loader, self._steps = self._epoch_loader(epoch)
        self._meter = EpochMeter(self.device)
        self._recent = [e["loss"] for e in self.step_log[-recovery.SPIKE_WINDOW // STEP_LOG_EVERY :]]
        desc = f"epoch {epoch + 1}/{self.cfg.epochs}"
        batches = self._batches(loader)
        with tqdm(total=self._steps, desc=desc, unit="step", disable=not self.progress, leave=False) as self._bar:
            try:
                yield batches
            finally:  # a rollback or an OOM leaves mid-epoch: let go of the loader (and its workers) now, not at GC
                batches.close()

    def _batches(self, loader: Any) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """``(step, (images, text, image_ids))`` for this epoch's steps, on the device (uint8 images normalised there)."""
        for step, (images, text, image_ids, _) in enumerate(loader):
            if step >= self._steps:
                break
            images = normalize_images(images, self.device, self.channels_last)
            text = text.to(self.device, non_blocking=True)  # the frozen text tower's embeddings, precomputed by notebook 01
            kill_point("train_step")  # tests: die in the middle of an epoch
            yield step, (images, text, image_ids)

    def _loss_inputs(
        self, features: torch.Tensor, text: torch.Tensor, image_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Negatives | None]:
        """(image features, text features, logit scale, extra negatives): the arguments of every loss. Under DDP the
        batch of every GPU (distributed.py); extra negatives when the variant draws them (the bank), else None."""
        features, text = gather_with_local_grad(features, self.dist), gather_with_local_grad(text, self.dist)
        negatives = None
        if self.negative_source is not None:
            all_ids = gather_with_local_grad(image_ids.to(self.device, non_blocking=True), self.dist)  # ids on the device only here
            negatives = self.negative_source.draw(self.global_step, all_ids, text)
        return features, text, self.model.scale(), negatives

    def _backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` through the fp16 GradScaler; under DDP scaled so that the averaged gradients are the global
        batch's (distributed.backward_scale, fix_replicated_grads)."""
        self.scaler.scale(loss * backward_scale(self.dist)).backward()
        fix_replicated_grads(self.model, self.dist)

    def _advance_schedule(self) -> None:
        with warnings.catch_warnings():
            # GradScaler skips the first fp16 steps whose gradients overflow while it calibrates its scale; the
            # schedule still counts them (it follows the loop's steps), so PyTorch's "scheduler before optimizer" note is noise
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`")
            self.scheduler.step()
        self.global_step += 1

    def _record_step(self, epoch: int, step: int, value: float, features: torch.Tensor, text: torch.Tensor) -> None:
        hits = in_batch_hits(features.detach(), text)
        self._meter.add(value, features.shape[0], hits)
        self._log_step(epoch, step, self._steps, value, hits, features.shape[0])
        self._bar.update(1)
        self._bar.set_postfix(**self._meter.postfix())

    def _epoch_record(self, epoch: int) -> dict[str, Any]:
        """The epoch's record (the val figures are added after it); an epoch of only skipped steps rolls back."""
        if self._meter.images == 0:
            recovery.diverged(self, epoch)
        temperature = 1.0 / self.model.scale().item()
        return {**self._meter.record(epoch), "lr": head_lr(self.optimizer), "temperature": temperature, "batch_size": self.batch_size}

    def _epoch_loader(self, epoch: int) -> tuple[Any, int]:
        """This epoch's shuffled loader (per-rank shards under DDP) and how many steps to take from it."""
        self.train_set.set_epoch(epoch)
        sampler = None
        if self.dist.enabled:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(
                self.train_set, self.dist.world_size, self.dist.rank, shuffle=True, seed=self.cfg.seed, drop_last=True
            )
            sampler.set_epoch(epoch)
        drop_last = len(self.train_set) >= self.batch_size
        local_batch = self.batch_size // self.dist.world_size
        loader = make_loader(self.train_set, local_batch, True, self.cfg.seed, epoch, self.cfg.num_workers, drop_last, sampler=sampler)
        return loader, self._steps_per_epoch()

    def _skip_bad_step(self, value: float, epoch: int, step: int) -> bool:
        """A non-finite or spiking loss is skipped (recovery.bad_loss); too many roll the epoch back."""
        kind = recovery.bad_loss(value, self._recent)
        if kind is None:
            return False
        self._meter.skipped += 1
        self._event(f"epoch {epoch + 1} step {step}: {kind} loss {value:.3g}; step skipped")
        self.optimizer.zero_grad(set_to_none=True)
        if self._meter.skipped > max(3, self._steps // 4):
            recovery.diverged(self, epoch)
        return True

    def _log_step(self, epoch: int, step: int, steps: int, value: float, hits: torch.Tensor, n: int) -> None:
        """Every STEP_LOG_EVERY steps, and the first and last step of each epoch: a step_log entry (the live panel's
        data, the spike detector's memory)."""
        if self.global_step % STEP_LOG_EVERY and 0 < step < steps - 1:  # also the first and the last step of each epoch
            return
        acc_i, acc_t = (hits.float() / n).tolist()
        temperature = 1.0 / self.model.scale().item()
        lr = head_lr(self.optimizer)
        # x on the curves: the epochs done after this step (the last step of epoch 4 is at 4.0, where its val point is)
        entry = {"step": self.global_step, "epoch": epoch + (step + 1) / steps, "loss": value, "i2t_acc": acc_i, "t2i_acc": acc_t}
        self.step_log.append({**entry, "lr": lr, "temperature": temperature})
        self._recent = (self._recent + [value])[-recovery.SPIKE_WINDOW :]
        if self.on_step is not None:
            self.on_step(self)

    def _event(self, message: str) -> None:
        self.events.append(message)
        self.log(message)

    # ----------------------------------------------------------------- end of epoch, end of run
    def _save_best(self, state: dict[str, Any], record: dict[str, Any]) -> None:
        keys = ("model", "arch", "config", "identity", "inputs")
        save_checkpoint({**{k: state[k] for k in keys}, "epoch": record["epoch"], "val": record}, self.run.best, self.paths)

    def _end_of_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        state = self._state(epoch + 1)
        self.run.path.mkdir(parents=True, exist_ok=True)  # the folder deleted mid-run: written again, never left half
        if not self.run.config.exists():
            self.cfg.save(self.run.config)
        if best_record(self.history) is record:
            self._save_best(state, record)
        save_checkpoint(state, self.run.checkpoint, self.paths)  # last: the epoch now counts
        kill_point("after_checkpoint")
        write_history(self.run, self.history, self.step_log, self.events)
        self.log(
            f"epoch {epoch + 1}/{self.cfg.epochs}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
            f"val R@1 i2t {100 * record['val_i2t_R@1']:.1f}% t2i {100 * record['val_t2i_R@1']:.1f}%, "
            f"rsum {100 * record['val_rsum']:.1f}, "
            f"{record['img_per_s']:.0f} img/s, {record['train_seconds']:.0f}s"
        )
        if self.on_epoch is not None:
            self.on_epoch(self)

    def _validate(self, epoch: int) -> dict[str, Any]:
        """The val figures of this epoch; non-finite features stop the run before the epoch is saved (never best.pt)."""
        try:
            return validate(self.model, self.val_set, self.device, self.batch_size, self.cfg.amp, self.cfg.num_workers, self.loss_fn)
        except NonFiniteFeatures as exc:
            raise TrainingDiverged(
                f"Run {self.run_name}, epoch {epoch + 1}: {exc} (at validation). The epoch is not saved; best.pt keeps the last "
                f"good epoch. {recovery.advice(self.cfg)} Then re-run with FORCE_RETRAIN=True."
            ) from None

    def _write_metrics(self) -> dict[str, Any]:
        metrics = metrics_record(
            self.run,
            self.history,
            self.events,
            amp_dtype=str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32",
            channels_last=self.channels_last,
            hardware=env.hardware_summary(self.paths),
            config=self.cfg.to_dict(),
            variant_overrides=self.overrides,  # the settings the variant changed: as requested, as resolved (in config)
            variant_sources={r.name: r.source for r in self.variant.records if not r.builtin},  # a student's code, as trained
            loss=self.variant.loss_text(CLIP_LOSS_TEXT),  # what the report says of the run, read without its records
            model=describe(self.arch),
            arch=self.arch,
            num_train_images=len(self.train_set),
            num_val_images=len(self.val_set),
            protocol=self.splits.protocol,
            identity=self.identity,
            inputs=self.inputs,
            best_sha256=weights_sha256(self.run.best),  # the model this summary describes
            data={
                "splits": self.splits.sizes(),
                "image_size": self.cache.image_size,
                "cache_quality": self.cache.quality,
                "text_model": self.inputs["text_model"],
                "skipped_images": len(failures(self.cache.manifest)),
            },
        )
        atomic_write_json(self.run.metrics, metrics)
        return metrics


def train(cfg: Config, paths: Paths, progress: bool = True, live_plot: bool | None = None, **trainer_options: Any) -> TrainResult:
    """Train (or resume, or skip) the run described by ``cfg``: the one entry point (notebooks, ablation, CLI).

    In Jupyter/Colab a live learning-curve panel follows the run when ``live_plot`` (default: LIVE_PLOT).
    ``trainer_options`` go to :class:`Trainer` (``log``, ``on_step``, ``on_epoch``, ``device``).
    """
    from .curves import LivePanel, in_notebook

    live_plot = cfg.live_plot if live_plot is None else live_plot
    if live_plot and in_notebook() and not {"on_step", "on_epoch"} & trainer_options.keys():
        panel = LivePanel(run_name_for(cfg))
        trainer_options.update(on_step=panel.update, on_epoch=lambda t: panel.update(t, force=True))
    return Trainer(cfg, paths, progress=progress, **trainer_options).fit()


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


__all__ = ["SELECTION_METRIC", "RolledBack", "TrainResult", "Trainer", "TrainingDiverged", "train"]
