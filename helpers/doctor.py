"""Before spending GPU hours: what this machine is, whether the caches are ready, and how long the run will take.

    python -m helpers.doctor --config run.json        # or: --set EPOCHS=10 BATCH_SIZE=64
    python -m helpers.doctor                           # the defaults (the lab's recipe)

It reports the GPU, CUDA and torch, RAM, free disk, where ARTIFACTS_DIR lives (Drive or not)
and whether the image and caption caches are complete; then it *times* a few real training
steps of the configured recipe (the same model, AMP and channels_last choices as the trainer,
random pixels, no download) and the loader reading the real cache, and predicts the training
time for EPOCHS and for an ablation of N variants. It warns when the run will not fit a free
Colab session, when there is no GPU, and when the cache sits only on Drive. Notebook 02 runs it
first, so a student sees the bill before paying it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .core import markdown
from .core.config import Config
from .core.env import Paths

COLAB_FREE_SESSION_HOURS = 4.0  # unofficial: a free Colab session gets a few hours of T4 use, about 4 at best
TRAIN_IMAGES_FULL = 82_783  # train2014, when the split is not prepared yet
VAL_IMAGES_FULL = 5_000
NO_GPU = "No GPU: training would run on the CPU, about 100x slower. In Colab: Runtime → Change runtime type → T4 GPU."


@dataclass
class Diagnosis:
    facts: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    predictions: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        f, t, p = self.facts, self.timings, self.predictions
        gpu = f"{f['gpu']} ({f['gpu_memory_gb']} GB)" if f["gpu"] else "none"
        rows = [
            ["GPU", gpu],
            ["torch / CUDA", f"{f['torch']} / {f['cuda'] or '-'}"],
            ["RAM", f"{f['ram_gb']} GB"],
            ["free disk (artifacts / data)", f"{f['free_disk_gb']['artifacts_dir']} / {f['free_disk_gb']['data_dir']} GB"],
            ["ARTIFACTS_DIR", f"`{f['artifacts_dir']}`{' (Google Drive)' if f['artifacts_on_drive'] else ''}"],
            ["image cache", f["image_cache"]],
            ["caption caches", f["caption_cache"]],
            ["run", f["run"]],
        ]
        if t:
            rows.append([f"training step ({t['batch']} images, {t['precision']})", f"{t['train_img_per_s']:.1f} img/s"])
            loader = t.get("loader_img_per_s")
            rows.append(["loader from the cache", f"{loader:.0f} img/s"] if loader else ["loader", "no cache"])
        if p:
            rows += [
                [f"predicted: one epoch ({p['train_images']:,} images + validation)", f"{p['epoch_minutes']:.1f} min"],
                [f"predicted: EPOCHS={p['epochs']}", f"**{p['run_minutes']:.0f} min**"],
                [f"predicted: ablation of {p['variants']} variant(s) + baseline", f"{p['ablation_minutes']:.0f} min"],
            ]
        lines = [markdown.table(["check", "value"], rows)]
        lines += [""] + [f"**Warning:** {w}" for w in self.warnings] if self.warnings else ["", "No warnings."]
        return "\n".join(lines)


def inspect(cfg: Config, paths: Paths) -> dict[str, Any]:
    """Machine, storage and cache state (no timing)."""
    from .core import env
    from .core.artifacts import ArtifactError, load_json, load_torch
    from .data.image_cache import MANIFEST, _shard_ok

    info = env.hardware_summary(paths)
    facts: dict[str, Any] = {k: info.get(k) for k in ("gpu", "gpu_memory_gb", "torch", "cuda", "ram_gb", "free_disk_gb", "cpu_count")}
    facts["artifacts_dir"] = str(paths.artifacts_dir)
    facts["artifacts_on_drive"] = env._is_on_drive(paths.artifacts_dir)
    facts["environment"] = paths.environment
    facts["local_cache_complete"] = False
    try:
        manifest = load_json(paths.image_cache_dir / MANIFEST, "manifest")
        shards = [s for part in manifest["parts"].values() for s in part["shards"].values()]
        complete = all(_shard_ok(paths.image_cache_dir, s) for s in shards)
        images = sum(s["count"] for s in shards)
        facts["image_cache"] = f"{images:,} images in {len(shards)} shard(s)" + ("" if complete else ", INCOMPLETE: re-run 01")
        local = paths.cache_dir
        facts["local_cache_complete"] = (local / MANIFEST).exists() and all(_shard_ok(local, s) for s in shards)
        facts["image_cache_ready"] = complete
    except ArtifactError as exc:
        facts["image_cache"] = "missing: run 01_dataset_prep.ipynb" if isinstance(exc, FileNotFoundError) else f"damaged ({exc})"
        facts["image_cache_ready"] = False
    states = []
    for split in ("train", "val"):
        try:
            data = load_torch(paths.text_embeds_path(split), "text_embeds")
            states.append(f"{split}: {data['embeddings'].shape[0]:,} captions ({data['model']})")
        except ArtifactError as exc:
            states.append(f"{split}: missing" if isinstance(exc, FileNotFoundError) else f"{split}: damaged")
    facts["caption_cache"] = "; ".join(states)
    facts["run"], facts["run_mismatch"] = run_state(cfg, paths)
    try:
        from .data.splits import load_splits

        splits = load_splits(paths)
        facts["train_images"], facts["val_images"] = len(splits.train), len(splits.val)
    except ArtifactError:
        facts["train_images"], facts["val_images"] = cfg.train_images or TRAIN_IMAGES_FULL, cfg.val_images or VAL_IMAGES_FULL
    return facts


def run_state(cfg: Config, paths: Paths) -> tuple[str, str | None]:
    """The run these settings train into, and (second) why 02 would refuse to continue or reuse it, if it would.

    The same check as the trainer's (runs.check_same_run): the run's stored identity and input digests
    against the settings and data artifacts of now.
    """
    from .core.artifacts import ArtifactError, load_torch
    from .core.config import run_identity
    from .core.flags import Recipe
    from .store.runs import RunDir, check_same_run
    from .training.train_data import load_training_data

    run = RunDir.for_config(paths, cfg)
    if not run.checkpoint.exists():
        return f"`{run.name}`: not trained yet", None
    try:
        state = load_torch(run.checkpoint, "checkpoint")
        data = load_training_data(cfg, paths, Recipe.of(cfg.flags), progress=False)
        check_same_run(run, state, run_identity(cfg), data.inputs, paths)
    except (ArtifactError, ValueError, OSError) as exc:  # ConfigError is a ValueError; ProvenanceMismatch an ArtifactError
        return f"`{run.name}`: cannot be continued or reused", str(exc)
    done = "finished" if run.is_finished() else "interrupted"
    return f"`{run.name}`: {done} after {state['epoch']} epoch(s), made from the current data", None


_AUTO = "auto"


def seconds_per_call(fn: Any, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Wall time of one ``fn()``: ``warmup`` untimed calls (cudnn autotuning, the allocator), then the mean
    of ``repeats``, with the GPU's queue drained before and after (CUDA calls return before the work ends)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def time_training(
    cfg: Config, device: torch.device, steps: int = 3, batch: int | None = None, dtype: Any = _AUTO, warmup: int = 1
) -> dict[str, Any]:
    """img/s of real training steps of the configured model and precision (random pixels; no weights downloaded).

    ``dtype="auto"`` is the trainer's choice (fp16/bf16 autocast on CUDA with AMP, fp32 otherwise); the
    benchmark passes its own to compare precisions.
    """
    from .clip.embed import amp_dtype
    from .clip.loss import clip_loss
    from .clip.model import build_model, model_config
    from .core.flags import Recipe
    from .data.dataset import normalize_images
    from .training.optim import make_optimizer
    from .training.step import current_training_step

    batch = batch or cfg.batch_size
    variant = Recipe.of(cfg.flags)
    cfg = cfg.replace(**variant.overrides(cfg.to_dict()))  # what the trainer trains: e.g. optim's gradient clipping
    model = build_model(model_config(cfg, 512), pretrained=False).to(device).train()
    channels_last = cfg.channels_last and (device.type == "cuda" or dtype is not _AUTO)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(device, cfg.amp) if dtype is _AUTO else dtype
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    optimizer = make_optimizer(model, cfg, variant, cfg.lr)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    loss_fn = variant.single("loss") or clip_loss  # the run's own loss (its extra negatives are not timed)
    train_step = current_training_step()  # the very step the run takes (a student's own, when notebook 02 set one)
    images = torch.randint(0, 256, (batch, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
    text = torch.nn.functional.normalize(torch.randn(batch, 512, device=device), dim=-1)

    def step() -> None:
        x = normalize_images(images, device, channels_last)
        train_step(model, x, text, loss_fn, optimizer, scaler, amp_dtype=dtype, grad_clip=cfg.grad_clip)

    seconds = seconds_per_call(step, device, steps, warmup) * steps
    precision = f"{str(dtype).replace('torch.', '')} autocast" if dtype else "fp32"
    return {"batch": batch, "steps": steps, "train_img_per_s": batch * steps / seconds, "precision": precision}


def time_loader(cfg: Config, paths: Paths, batches: int = 5) -> float | None:
    """img/s of the training loader reading the real cache (None when there is no cache yet)."""
    from .core.artifacts import ArtifactError
    from .data.dataset import CocoCacheDataset, load_text_embeds, make_loader
    from .data.image_cache import ImageCache

    try:
        cache = ImageCache(paths.cache_dir if (paths.cache_dir / "manifest.json").exists() else paths.image_cache_dir)
        text = load_text_embeds(paths.text_embeds_path("train"))
    except (ArtifactError, OSError):
        return None
    ids = [i for i in cache.image_ids if i in set(text["image_ids"].tolist())][: cfg.batch_size * (batches + 1)]
    if len(ids) < 2 * cfg.batch_size:
        return None
    dataset = CocoCacheDataset(cache, text, ids, "train", cfg.seed, normalize=False)
    loader = make_loader(dataset, cfg.batch_size, True, num_workers=cfg.num_workers)
    it = iter(loader)
    next(it)  # workers start
    t0, n = time.perf_counter(), 0
    for images, *_ in it:
        n += images.shape[0]
    return n / (time.perf_counter() - t0) if n else None


def predict(facts: dict[str, Any], timings: dict[str, Any], epochs: int, variants: int) -> dict[str, float]:
    """Minutes for one epoch, the run, and an ablation: the slower of model and loader sets the pace;
    validation embeds the val images once per epoch (forward only: about a third of a training step)."""
    rate = timings["train_img_per_s"]
    if timings.get("loader_img_per_s"):
        rate = min(rate, timings["loader_img_per_s"])
    train_s = facts["train_images"] / rate
    val_s = facts["val_images"] / (3 * timings["train_img_per_s"])
    epoch_minutes = (train_s + val_s) / 60
    return {
        "train_images": facts["train_images"],
        "epoch_minutes": epoch_minutes,
        "epochs": epochs,
        "run_minutes": epoch_minutes * epochs,
        "variants": variants,
        "ablation_minutes": epoch_minutes * epochs * variants,  # the baseline run is reused from notebook 02
    }


def warnings_for(facts: dict[str, Any], predictions: dict[str, float], session_hours: float = COLAB_FREE_SESSION_HOURS) -> list[str]:
    """Everything that would waste a session, each with what to do."""
    out = []
    if not facts.get("gpu"):
        out.append(NO_GPU)
    if predictions and predictions["run_minutes"] > 60 * session_hours:
        out.append(
            f"The run is predicted to take {predictions['run_minutes'] / 60:.1f} h, more than a free Colab session "
            f"(about {session_hours:.0f} h of GPU). It resumes after a disconnect, but consider fewer EPOCHS, TRAIN_IMAGES, "
            "or a paid runtime."
        )
    if facts.get("environment") == "colab" and facts.get("image_cache_ready") and not facts.get("local_cache_complete"):
        out.append(
            "The image cache is only on Drive: training restores it to local disk first (1-2 min for all of COCO). "
            "Reading it from Drive during training would starve the GPU."
        )
    if not facts.get("image_cache_ready"):
        out.append("No complete image cache: run 01_dataset_prep.ipynb first (same ARTIFACTS_DIR).")
    if facts.get("run_mismatch"):
        out.append(facts["run_mismatch"])
    return out


def diagnose(cfg: Config, paths: Paths, steps: int = 3, batch: int | None = None, device: str | None = None) -> Diagnosis:
    """Inspect, time, predict, warn."""
    device_t = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    facts = inspect(cfg, paths)
    timings = time_training(cfg, device_t, steps=steps, batch=batch)
    timings["loader_img_per_s"] = time_loader(cfg, paths)
    predictions = predict(facts, timings, cfg.epochs, len(cfg.variants))
    return Diagnosis(facts, timings, predictions, warnings_for(facts, predictions))


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .core import config as config_mod
    from .core import env

    parser = argparse.ArgumentParser(description="Check the machine and the caches, and predict the training time.")
    parser.add_argument("--config", default=None, help="a JSON config file (Config.save); default: the lab's defaults")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, values as JSON")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    args = parser.parse_args(argv)
    overrides = config_mod.parse_sets(args.set)
    cfg = config_mod.load(args.config, **overrides) if args.config else config_mod.from_params(overrides)
    print(diagnose(cfg, env.resolve_paths(cfg), steps=args.steps).markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Diagnosis", "diagnose", "inspect", "predict", "time_loader", "time_training", "warnings_for"]
