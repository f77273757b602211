"""The resumable trainer: fast on a T4, safe against disconnects, divergence and OOM.

Speed: fp16 autocast + GradScaler on CUDA (bf16 on GPUs that support it natively),
channels_last, ``cudnn.benchmark``, uint8 batches normalised on the GPU, pinned memory
and non-blocking copies; captions come pre-encoded from the cache.

Reliability: at the end of every epoch the whole training state (model, optimizer,
scheduler, scaler, RNG states, epoch, history, config) is written atomically to
``ARTIFACTS_DIR/runs/<run name>/checkpoint.pt``. Data order and caption draws are
functions of (seed, epoch), so re-running the notebook resumes after the last
finished epoch and ends in the same state as an uninterrupted run.

Model selection: ``best.pt`` holds the epoch with the highest validation **rsum**
(sum of Recall@1/5/10 in both directions on the *val* split, never the test split).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import env
from .artifacts import history_record, load_history, load_json, load_torch, load_weights
from .bank import CaptionBank, bank_positives
from .config import Config, ConfigError
from .dataset import CocoCacheDataset, load_text_embeds, make_loader, normalize_images
from .distributed import backward_scale, fix_replicated_grads, gather_with_local_grad, global_clip_loss, init_distributed
from .embed import amp_dtype, encode_images
from .env import Paths
from .faults import kill_point
from .image_cache import ImageCache, restore_cache
from .loss import clip_loss, clip_loss_with_bank, in_batch_hits, max_hinge_loss
from .metrics import retrieval_metrics
from .model import ClipImageModel, build_model, check_same_architecture, model_config
from .runlock import holding
from .splits import Splits, load_splits
from .storage import atomic_copy, atomic_torch_save, atomic_write_json
from .variants import canonical, freeze_batchnorm_stats, lr_multiplier, parse_variant, train_transform, training_overrides, warmup_steps

SELECTION_METRIC = "rsum"  # on the val split
SPIKE_FACTOR = 4.0  # a step whose loss exceeds 4x the recent median is skipped
SPIKE_WINDOW = 50
MAX_ROLLBACKS = 2
MIN_BATCH = 8
STEP_LOG_EVERY = 10


class TrainingDiverged(RuntimeError):
    """Training kept producing non-finite or exploding losses after rolling back."""


def run_name_for(cfg: Config) -> str:
    """A readable run name from the variant and the settings that change results.

    EPOCHS is left out on purpose: it is what a student raises to train longer, and the same
    run folder then continues after its last epoch instead of starting again from epoch 1.
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
    return "-".join(parts)


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int) -> float:
    """Multiplier on LR at ``step``: linear warmup, then constant or cosine decay to 0."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2] if random.getstate()[2] is not None else -1,
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(state["python"]), None if state["python_pos"] == -1 else state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    resumed_from_epoch: int = 0
    skipped: bool = False  # the run had already finished: nothing was trained
    events: list[str] = field(default_factory=list)


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
        self.run_name = run_name_for(cfg)  # from the settings as given, before variant overrides
        self.flags = parse_variant(cfg.variant)
        cfg = cfg.replace(**training_overrides(self.flags, cfg.batch_size, cfg.lr))
        self.dist = init_distributed()
        if not self.dist.is_main:  # rank 0 alone logs, plots and writes
            progress, on_epoch, on_step, log = False, None, None, lambda message: None
        self.cfg, self.paths, self.progress, self.on_epoch, self.on_step, self.log = cfg, paths, progress, on_epoch, on_step, log
        default_device = f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device or default_device)
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(f"BATCH_SIZE={cfg.batch_size} must divide evenly over {self.dist.world_size} processes")
        self.run_dir = paths.runs_dir / self.run_name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.events: list[str] = []
        self.history: list[dict[str, Any]] = []
        self.step_log: list[dict[str, float]] = []
        self.batch_size = cfg.batch_size
        self.lr = cfg.lr
        self.rollbacks = 0
        self.global_step = 0
        self._load_data()

    # ----------------------------------------------------------------- data & model
    def _load_data(self) -> None:
        self.splits: Splits = load_splits(self.paths)
        cache_dir = restore_cache(self.paths.image_cache_dir, self.paths.cache_dir, progress=self.progress)
        self.cache = ImageCache(cache_dir)
        if self.cache.image_size != self.cfg.image_size:
            raise ConfigError(
                f"IMAGE_SIZE={self.cfg.image_size}, but the image cache holds {self.cache.image_size}px images: set "
                f"IMAGE_SIZE={self.cache.image_size}, or re-run 01_dataset_prep.ipynb with IMAGE_SIZE={self.cfg.image_size}"
            )
        self.train_text = load_text_embeds(self.paths.text_embeds_path("train"), self.cfg.text_model)
        self.val_text = load_text_embeds(self.paths.text_embeds_path("val"), self.cfg.text_model)
        train_ids, train_text = self.splits.train, self.train_text
        if "restval" in self.flags:
            train_ids, train_text = self._with_restval()
        self.train_set = CocoCacheDataset(
            self.cache, train_text, train_ids, "train", self.cfg.seed, normalize=False, transform=train_transform(self.flags)
        )
        self.val_set = CocoCacheDataset(self.cache, self.val_text, self.splits.val, "eval", self.cfg.seed, normalize=False)
        self.embed_dim = int(self.train_text["embeddings"].shape[1])
        self.caption_bank = CaptionBank(self.train_set, self.cfg.bank_size, self.cfg.seed) if "bank" in self.flags else None
        self.arch = model_config(self.cfg, self.embed_dim)

    def _with_restval(self) -> tuple[list[int], dict[str, Any]]:
        """``restval`` variant: train2014 plus the cached val2014 images in neither Karpathy split."""
        restval = [i for i in self.splits.restval if i in self.cache]
        if not restval:
            raise ConfigError(
                "VARIANT includes 'restval', but no restval images are cached: re-run 01_dataset_prep.ipynb with INCLUDE_RESTVAL=True"
            )
        keep = torch.isin(self.val_text["image_ids"], torch.tensor(restval))
        merged = {
            "embeddings": torch.cat([self.train_text["embeddings"], self.val_text["embeddings"][keep]]),
            "image_ids": torch.cat([self.train_text["image_ids"], self.val_text["image_ids"][keep]]),
            "captions": self.train_text["captions"] + [c for c, k in zip(self.val_text["captions"], keep.tolist()) if k],
        }
        return self.splits.train + restval, merged

    def _build(self, pretrained: bool) -> None:
        seed_everything(self.cfg.seed)
        self.model: ClipImageModel = build_model(self.arch, pretrained=pretrained).to(self.device)
        if self.caption_bank is not None:
            self.caption_bank.rank = self.dist.rank  # each process draws its own bank
            self.caption_bank.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_model: torch.nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_factor(
                step, self._total_steps(), self.cfg.lr_schedule, warmup_steps(self.flags, self.cfg.warmup_steps, self._total_steps())
            ),
        )
        self.amp_dtype = amp_dtype(self.device, self.cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    @property
    def channels_last(self) -> bool:
        return self.cfg.channels_last and self.device.type == "cuda"

    def _total_steps(self) -> int:
        return self._steps_per_epoch() * self.cfg.epochs

    def _make_optimizer(self) -> torch.optim.Optimizer:
        buckets: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            # CLIP practice: no weight decay on biases, norm layers and the temperature
            decay = p.ndim >= 2 and name != "logit_scale"
            buckets.setdefault((decay, lr_multiplier(self.flags, name)), []).append(p)
        groups = [
            {"params": params, "weight_decay": self.cfg.weight_decay if decay else 0.0, "lr_mult": mult, "lr": self.lr * mult}
            for (decay, mult), params in sorted(buckets.items())
        ]
        if self.cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups)
        if self.cfg.optimizer == "adam":
            return torch.optim.Adam(groups)
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True)

    def _steps_per_epoch(self) -> int:
        n = len(self.train_set) // self.batch_size if len(self.train_set) >= self.batch_size else 1
        return min(n, self.cfg.max_steps_per_epoch or n)

    # ----------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
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
            "run_name": self.run_name,
        }

    def _save(self, state: dict[str, Any], dest: Path) -> None:
        """On Colab/Kaggle: write to local disk first, then copy into ARTIFACTS_DIR atomically.

        Drive's FUSE mount fails now and then (Errno 5); the copy is retried with backoff,
        and a failed copy never leaves a half-written checkpoint behind.
        """
        if self.paths.environment != "local":
            with tempfile.TemporaryDirectory(dir=self.paths.cache_dir) as tmp:
                local = atomic_torch_save(state, Path(tmp) / dest.name)
                atomic_copy(local, dest)
        else:
            atomic_torch_save(state, dest)

    def _restore(self, state: dict[str, Any]) -> None:
        check_same_architecture(state["arch"], self.arch, str(self.checkpoint_path))
        self.batch_size, self.lr, self.rollbacks = state["batch_size"], state["lr"], state["rollbacks"]
        self._build(pretrained=False)
        load_weights(self.model, state, self.checkpoint_path, "checkpoint")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history, self.step_log, self.events = list(state["history"]), list(state["step_log"]), list(state["events"])
        self.global_step = state["global_step"]
        _set_rng_state(state["rng"])

    # ----------------------------------------------------------------- training
    def fit(self) -> TrainResult:
        """Train, resume or skip, holding the run folder's lock (one writer per run folder: helpers/runlock.py)."""
        with holding(self.run_dir, "training", enabled=self.dist.is_main, log=self.log):
            return self._fit()

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        for stale in self.run_dir.glob(".*.tmp"):  # temporary files of a write that was killed
            stale.unlink(missing_ok=True)
        if cfg.force_retrain:
            for name in ("checkpoint.pt", "best.pt", "history.json", "metrics.json"):
                (self.run_dir / name).unlink(missing_ok=True)
            for stale in [*self.run_dir.glob("eval_*.json"), *self.run_dir.glob("eval_*.csv")]:
                stale.unlink()  # results of the model being replaced must never reach a report
            for folder in self.run_dir.glob("figures_*"):
                shutil.rmtree(folder, ignore_errors=True)
        start_epoch = 0
        if self.checkpoint_path.exists():
            state = load_torch(self.checkpoint_path, "checkpoint")
            self._restore(state)
            start_epoch = state["epoch"]
            if start_epoch >= cfg.epochs and (self.run_dir / "metrics.json").exists():
                self.log(f"Run {self.run_name} already finished ({start_epoch} epochs): nothing to train. FORCE_RETRAIN=True retrains.")
                metrics = load_json(self.run_dir / "metrics.json", "metrics")
                if self.dist.is_main:
                    load_history(self.run_dir)  # a damaged history.json is rewritten from the checkpoint
                return TrainResult(self.run_dir, self.history, metrics, start_epoch, True, self.events)
            self.log(f"Resuming {self.run_name} after epoch {start_epoch} of {cfg.epochs}")
            trained_for = state["config"].get("epochs")
            if trained_for != cfg.epochs:
                self._event(
                    f"EPOCHS changed from {trained_for} to {cfg.epochs}: continuing after epoch {start_epoch}"
                    + (" (the cosine schedule is stretched to the new length)" if cfg.lr_schedule == "cosine" else "")
                )
            if self.dist.is_main and self.history:
                self._write_history()  # a kill between checkpoint and history may have left them out of step
        else:
            self._build(pretrained=True)
        cfg.save(self.run_dir / "config.json")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        epoch = start_epoch
        while epoch < cfg.epochs:
            try:
                record = self._train_epoch(epoch)
            except torch.cuda.OutOfMemoryError:  # the same class as torch.OutOfMemoryError in torch >= 2.5
                self._handle_oom(epoch)
                continue
            if record is None:  # diverged: rolled back, try the epoch again
                continue
            if self.dist.is_main:
                kill_point("validation")
                record.update(self._validate())
                self.history.append(record)
                self._end_of_epoch(epoch, record)
            self.dist.barrier()  # the checkpoint is on disk before any rank goes on
            epoch += 1
        metrics = self._final_metrics() if self.dist.is_main else {}
        return TrainResult(self.run_dir, self.history, metrics, start_epoch, False, self.events)

    def _event(self, message: str) -> None:
        self.events.append(message)
        self.log(message)

    def _handle_oom(self, epoch: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.dist.enabled:
            raise RuntimeError(
                f"CUDA out of memory at BATCH_SIZE={self.batch_size} over {self.dist.world_size} processes: "
                "lower BATCH_SIZE (automatic halving is single-process only)"
            )
        if self.batch_size // 2 < MIN_BATCH:
            raise RuntimeError(
                f"CUDA out of memory even at BATCH_SIZE={self.batch_size}: free GPU memory (restart the runtime) "
                "or use a smaller IMAGE_SIZE"
            )
        self._event(f"epoch {epoch + 1}: CUDA out of memory at batch size {self.batch_size}; halving to {self.batch_size // 2}")
        self._rollback(epoch, lr_scale=1.0, new_batch=self.batch_size // 2)

    def _rollback(self, epoch: int, lr_scale: float, new_batch: int | None = None) -> None:
        """Return to the state at the start of ``epoch`` (last checkpoint, or a fresh model at epoch 0)."""
        lr, batch, rollbacks, events = self.lr * lr_scale, new_batch or self.batch_size, self.rollbacks, list(self.events)
        from_checkpoint = epoch > 0 and self.checkpoint_path.exists()
        if from_checkpoint:
            self._restore(load_torch(self.checkpoint_path, "checkpoint"))
        else:
            self.history, self.step_log, self.global_step = [], [], 0
        self.lr, self.batch_size, self.rollbacks, self.events = lr, batch, rollbacks, events
        if from_checkpoint:
            self._set_base_lr(lr)
        else:
            self._build(pretrained=True)

    def _set_base_lr(self, lr: float) -> None:
        self.scheduler.base_lrs = [lr * g["lr_mult"] for g in self.optimizer.param_groups]
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group["initial_lr"] = lr * group["lr_mult"]
            group["lr"] = group["initial_lr"] * factor

    def _forward_loss(self, images: torch.Tensor, text: torch.Tensor, image_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (global-batch) loss and the local image features; forward through DDP when distributed."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            features = self.train_model(images)
        if not self.flags & {"bank", "hardneg"}:  # the lab's loss
            if self.dist.enabled:
                return global_clip_loss(features, text, self.model.scale(), self.dist), features
            return clip_loss(features, text, self.model.scale()), features
        all_features = gather_with_local_grad(features, self.dist)
        all_text = gather_with_local_grad(text, self.dist)
        all_ids = gather_with_local_grad(image_ids.to(self.device, non_blocking=True), self.dist)
        bank = own = None
        if "bank" in self.flags:
            bank, bank_ids = self.caption_bank.draw(self.global_step)
            own = bank_positives(all_ids, all_text, bank_ids, bank)  # never negatives
        if "hardneg" in self.flags:
            return max_hinge_loss(all_features, all_text, bank=bank, bank_is_own_caption=own), features
        return clip_loss_with_bank(all_features, all_text, self.model.scale(), bank, own), features

    def _train_epoch(self, epoch: int) -> dict[str, Any] | None:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.model.train()
        freeze_batchnorm_stats(self.flags, self.model)
        self.train_set.set_epoch(epoch)
        sampler = None
        if self.dist.enabled:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(self.train_set, self.dist.world_size, self.dist.rank, shuffle=True, seed=cfg.seed, drop_last=True)
            sampler.set_epoch(epoch)
        local_batch = self.batch_size // self.dist.world_size
        loader = make_loader(
            self.train_set,
            local_batch,
            True,
            cfg.seed,
            epoch,
            cfg.num_workers,
            drop_last=len(self.train_set) >= self.batch_size,
            sampler=sampler,
        )
        steps = self._steps_per_epoch()
        recent: list[float] = [e["loss"] for e in self.step_log[-SPIKE_WINDOW // STEP_LOG_EVERY :]]
        totals = {"loss": 0.0, "images": 0, "steps": 0}
        hits_total = torch.zeros(2, dtype=torch.long, device=self.device)
        skipped = 0
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not self.progress, leave=False)
        for step, (images, text, image_ids, _) in enumerate(loader):
            if step >= steps:
                break
            images = normalize_images(images, self.device, self.channels_last)
            text = text.to(self.device, non_blocking=True)
            kill_point("train_step")
            loss, features = self._forward_loss(images, text, image_ids)  # ids reach the device only for bank/hardneg
            value = loss.item()
            spike = len(recent) >= 10 and value > SPIKE_FACTOR * statistics.median(recent)
            if not math.isfinite(value) or spike:
                skipped += 1
                kind = "non-finite" if not math.isfinite(value) else "spiking"
                self._event(f"epoch {epoch + 1} step {step}: {kind} loss {value:.3g}; step skipped")
                self.optimizer.zero_grad(set_to_none=True)
                if skipped > max(3, steps // 4):
                    return self._diverged(epoch)
                continue
            self.scaler.scale(loss * backward_scale(self.dist)).backward()
            fix_replicated_grads(self.model, self.dist)
            if cfg.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.model.clamp_logit_scale()  # after the step, never inside the forward pass (model.py)
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.global_step += 1
            hits = in_batch_hits(features.detach(), text)  # stays on the device: no sync per step
            hits_total += hits
            n = images.shape[0]
            for key, v in (("loss", value * n), ("images", n), ("steps", 1)):
                totals[key] += v
            if self.global_step % STEP_LOG_EVERY == 0 or step == 0:
                acc_i, acc_t = (hits.float() / n).tolist()
                entry = {
                    "step": self.global_step,
                    "epoch": epoch + step / steps,
                    "loss": value,
                    "i2t_acc": acc_i,
                    "t2i_acc": acc_t,
                    "lr": self._head_lr(),
                    "temperature": 1.0 / self.model.scale().item(),
                }
                self.step_log.append(entry)
                recent = (recent + [value])[-SPIKE_WINDOW:]
                if self.on_step is not None:
                    self.on_step(self)
            bar.update(1)
            bar.set_postfix(
                loss=f"{totals['loss'] / max(1, totals['images']):.3f}", img_s=f"{totals['images'] / (time.perf_counter() - t0):.0f}"
            )
        bar.close()
        if totals["images"] == 0:
            return self._diverged(epoch)
        seconds = time.perf_counter() - t0
        n = totals["images"]
        return {
            "epoch": epoch + 1,
            "train_loss": totals["loss"] / n,
            "train_i2t_acc": hits_total[0].item() / n,
            "train_t2i_acc": hits_total[1].item() / n,
            "lr": self._head_lr(),
            "temperature": 1.0 / self.model.scale().item(),
            "batch_size": self.batch_size,
            "skipped_steps": skipped,
            "train_seconds": seconds,
            "img_per_s": n / seconds,
        }

    def _head_lr(self) -> float:
        """The learning rate at multiplier 1 (the head's), for logs and plots."""
        return max(g["lr"] / g["lr_mult"] for g in self.optimizer.param_groups)

    def _diverged(self, epoch: int) -> None:
        self.rollbacks += 1
        if self.rollbacks > MAX_ROLLBACKS:
            raise TrainingDiverged(
                f"Training diverged {self.rollbacks} times (non-finite or exploding loss) even after lowering LR to {self.lr:g}. "
                "Lower LR (e.g. 1e-5), set WARMUP_STEPS (e.g. 500) and GRAD_CLIP (e.g. 1.0), or set AMP=False."
            )
        self._event(
            f"epoch {epoch + 1}: too many bad steps; rolling back to the last good checkpoint with LR {self.lr:g} -> {self.lr / 2:g}"
        )
        self._rollback(epoch, lr_scale=0.5)
        return None

    @torch.no_grad()
    def _validate(self) -> dict[str, Any]:
        """Val loss (one fixed caption per image, batches of BATCH_SIZE) and val Recall@K over all captions."""
        t0 = time.perf_counter()
        image_features = encode_images(self.model, self.val_set, self.device, self.batch_size, self.cfg.amp, self.cfg.num_workers)
        first_caption = torch.stack([self.val_set.embeddings[self.val_set.caption_row(i)].float() for i in range(len(self.val_set))])
        scale = self.model.scale().float().cpu()
        losses = []
        for start in range(0, len(image_features), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            if image_features[chunk].shape[0] > 1:
                losses.append((clip_loss(image_features[chunk].cpu(), first_caption[chunk], scale).item(), image_features[chunk].shape[0]))
        val_loss = sum(v * n for v, n in losses) / max(1, sum(n for _, n in losses))
        rows = self.val_set.caption_rows
        text_features = self.val_set.embeddings[rows].float()
        metrics = retrieval_metrics(image_features, text_features, self.val_set.caption_image_index, device=self.device)
        return {"val_loss": val_loss, **{f"val_{k}": v for k, v in metrics.items()}, "val_seconds": time.perf_counter() - t0}

    def _end_of_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        best = max(self.history, key=lambda r: (r[f"val_{SELECTION_METRIC}"], -r["val_loss"]))
        state = self._state(epoch + 1)
        if best is record:
            self._save(
                {"model": state["model"], "arch": self.arch, "config": state["config"], "epoch": epoch + 1, "val": record},
                self.run_dir / "best.pt",
            )
        self._save(state, self.checkpoint_path)  # last: the epoch now counts
        kill_point("after_checkpoint")
        self._write_history()
        self.log(
            f"epoch {epoch + 1}/{self.cfg.epochs}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
            f"val R@1 i2t {record['val_i2t_R@1']:.3f} t2i {record['val_t2i_R@1']:.3f}, rsum {record['val_rsum']:.3f}, "
            f"{record['img_per_s']:.0f} img/s, {record['train_seconds']:.0f}s"
        )
        if self.on_epoch is not None:
            self.on_epoch(self)

    def _write_history(self) -> None:
        """history.json and loss_curves.png, derived from the state (the checkpoint is the source of truth)."""
        from .curves import save_training_curves

        atomic_write_json(self.run_dir / "history.json", history_record(self.run_name, self.history, self.step_log, self.events))
        save_training_curves(self.history, self.step_log, self.run_dir / "loss_curves.png", title=self.run_name)

    def _final_metrics(self) -> dict[str, Any]:
        best = max(self.history, key=lambda r: (r[f"val_{SELECTION_METRIC}"], -r["val_loss"]))
        train_seconds = sum(r["train_seconds"] for r in self.history)
        metrics = {
            "run_name": self.run_name,
            "epochs": len(self.history),
            "best_epoch": best["epoch"],
            "selection_metric": f"val_{SELECTION_METRIC}",
            "best_val": {k: v for k, v in best.items() if k.startswith("val_")},
            "final_train_loss": self.history[-1]["train_loss"],
            "final_val_loss": self.history[-1]["val_loss"],
            "total_train_seconds": train_seconds,
            "total_seconds": train_seconds + sum(r["val_seconds"] for r in self.history),
            "epoch_seconds": [r["train_seconds"] for r in self.history],
            "img_per_s": sum(r["img_per_s"] * r["train_seconds"] for r in self.history) / max(1e-9, train_seconds),
            "skipped_steps": sum(r["skipped_steps"] for r in self.history),
            "events": self.events,
            "amp_dtype": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32",
            "channels_last": self.channels_last,
            "hardware": env.hardware_summary(self.paths),
            "config": self.cfg.to_dict(),
            "arch": self.arch,
            "num_train_images": len(self.train_set),
            "num_val_images": len(self.val_set),
            "protocol": self.splits.protocol,
        }
        atomic_write_json(self.run_dir / "metrics.json", metrics)
        return metrics


def train(cfg: Config, paths: Paths, **kwargs: Any) -> TrainResult:
    """Train (or resume, or skip) the run described by ``cfg``."""
    return Trainer(cfg, paths, **kwargs).fit()


def text_dim(paths: Paths, cfg: Config) -> int:
    """The caption-embedding width (512 for ViT-B/32): the projection head's output size."""
    return int(load_text_embeds(paths.text_embeds_path("train"), cfg.text_model)["embeddings"].shape[1])


def run(cfg: Config, paths: Paths, progress: bool = True) -> TrainResult:
    """Notebook entry point: train with the live learning-curve panel when LIVE_PLOT and in Jupyter/Colab."""
    from .curves import LivePanel, in_notebook

    panel = LivePanel(run_name_for(cfg)) if cfg.live_plot and in_notebook() else None
    trainer = Trainer(
        cfg,
        paths,
        progress=progress,
        on_step=panel.update if panel else None,
        on_epoch=(lambda t: panel.update(t, force=True)) if panel else None,
    )
    return trainer.fit()


def summary_markdown(result: TrainResult) -> str:
    """Per-epoch table plus the headline facts of a run."""
    m = result.metrics
    hw = m["hardware"]
    lines = [
        f"**Run** `{m['run_name']}`: {m['epochs']} epochs on {hw.get('gpu') or 'CPU'} "
        f"({m['amp_dtype']}, channels_last={m['channels_last']}), {m['total_train_seconds'] / 60:.1f} min of training, "
        f"{m['img_per_s']:.0f} img/s. Best epoch by {m['selection_metric']}: **{m['best_epoch']}**."
        + (" (Already trained: loaded from the run folder.)" if result.skipped else ""),
        "",
        "| epoch | train loss | val loss | in-batch acc i→t | val R@1 i→t | val R@1 t→i | val R@5 t→i | val rsum | img/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.history:
        lines.append(
            f"| {r['epoch']} | {r['train_loss']:.4f} | {r['val_loss']:.4f} | {r['train_i2t_acc']:.3f} | {r['val_i2t_R@1']:.3f} | "
            f"{r['val_t2i_R@1']:.3f} | {r['val_t2i_R@5']:.3f} | {r['val_rsum']:.3f} | {r['img_per_s']:.0f} |"
        )
    if m["events"]:
        lines += ["", "**Events:** " + "; ".join(m["events"])]
    return "\n".join(lines)


def load_trained(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ClipImageModel, dict[str, Any]]:
    """Rebuild the architecture stored in ``best.pt``/``checkpoint.pt`` and load its weights (weights_only)."""
    kind = "best" if Path(path).name == "best.pt" else "checkpoint"
    state = load_torch(path, kind)
    model = build_model(state["arch"], pretrained=False)
    load_weights(model, state, path, kind)
    return model.to(device).eval(), state


def main(argv: list[str] | None = None) -> int:
    """Headless: ``python -m helpers.train --config run.json [--set KEY=VALUE ...]``."""
    import argparse
    import json

    from . import config as config_mod

    parser = argparse.ArgumentParser(description="Train the CLIP image tower (resumes automatically).")
    parser.add_argument("--config", required=True, help="a JSON config file (Config.save)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, values as JSON")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    overrides = config_mod.parse_sets(args.set)
    cfg = config_mod.load(args.config, **overrides)
    paths = env.resolve_paths(cfg)
    result = train(cfg, paths, progress=not args.no_progress)
    import torch.distributed as dist

    if result.metrics:  # rank 0 (or the only process)
        backend = dist.get_backend() if dist.is_initialized() else None
        summary = {"run_dir": str(result.run_dir), "best_epoch": result.metrics["best_epoch"], "skipped": result.skipped}
        print(json.dumps({**summary, "backend": backend}))

    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["SELECTION_METRIC", "TrainResult", "Trainer", "TrainingDiverged", "load_trained", "lr_factor", "run_name_for", "train"]
