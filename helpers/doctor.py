"""Before spending GPU hours: what this machine is, whether the caches are ready, and how long the run will take.

    python -m helpers.doctor --config run.json        # or: --set EPOCHS=10 BATCH_SIZE=64
    python -m helpers.doctor                           # the defaults (the lab's recipe)

It reports the GPU, CUDA and torch, RAM, free disk, where ARTIFACTS_DIR lives (Drive or not)
and whether the image and caption caches are complete; then it *times* a few real training
steps of the configured recipe (the same model, AMP and channels_last choices as the trainer,
random pixels, no download) at every training size the run and its study use (a resolution
schedule's too) and the loader reading the real cache, and predicts the run, each variant of
VARIANTS and the whole study: on this device, and on a Colab T4 (helpers/training/budget.py: the
published ratios, with their range). It says whether the whole lab fits one free Colab session
and, when not, which settings would (each with its predicted time); it warns when there is no GPU
and when the cache sits only on Drive. Notebook 02 runs it once the model is introduced, so a
student sees the bill before paying it; notebook 04 prints the same plan before it trains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .core import markdown
from .core.config import Config
from .core.env import Paths
from .training import budget

TRAIN_IMAGES_FULL = 82_783  # train2014, when the split is not prepared yet
VAL_IMAGES_FULL = 5_000
NO_GPU = "No GPU: training would run on the CPU, about 100x slower. In Colab: Runtime → Change runtime type → T4 GPU."


@dataclass
class Diagnosis:
    facts: dict[str, Any]
    timings: dict[str, Any] = field(default_factory=dict)
    plan: budget.Plan | None = None
    warnings: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        f, t, p = self.facts, self.timings, self.plan
        gpu = f"{f['gpu']} ({f['gpu_memory_gib']} GiB)" if f["gpu"] else "none"
        rows = [
            ["GPU", gpu],
            ["torch / CUDA", f"{f['torch']} / {f['cuda'] or '-'}"],
            ["RAM", f"{f['ram_gib']} GiB"],
            ["free disk (artifacts / data)", f"{f['free_disk_gib']['artifacts_dir']} / {f['free_disk_gib']['data_dir']} GiB"],
            ["artifacts stored on", "Google Drive" if f["artifacts_on_drive"] else "this machine's disk"],
            ["image cache", f["image_cache"]],
            ["caption caches", f["caption_cache"]],
            ["run", f["run"]],
        ]
        for size, rate in sorted((t.get("step_img_per_s") or {}).items()):
            rows.append([f"training step at {size} px ({t['batch']} images, {t['precision']})", f"{rate:.1f} img/s"])
        if t:
            loader = t.get("loader_img_per_s")
            rows.append(["loader from the cache", f"{loader:.0f} img/s"] if loader else ["loader", "no cache"])
        if p:
            rows += plan_rows(p)
        lines = [markdown.table(["check", "value"], rows)]
        if p:
            lines += ["", *verdict_lines(p)]
        lines += [""] + [f"**Warning:** {w}" for w in self.warnings] if self.warnings else ["", "No warnings."]
        return "\n".join(lines)


def _span(t4_minutes: tuple[float, float]) -> str:
    """A T4 range as m:ss-m:ss; one figure where both ends print alike, and "under 1 s" for a tiny run (not 0:01-0:01)."""
    slow, fast = t4_minutes
    if 60 * slow < 1:
        return "under 1 s"
    low, high = budget.minutes_text(fast), budget.minutes_text(slow)
    return low if low == high else f"{low}-{high}"


def plan_rows(p: budget.Plan) -> list[list[str]]:
    """The predicted minutes, here and on a Colab T4: the configured run, each variant of the study, the whole lab."""
    run = p.run
    schedule = f", {run.schedule()}" if run.train_sizes else ""
    rows = [[f"predicted: this run (EPOCHS={run.epochs}, {run.train_images:,} images{schedule})",
             f"**{budget.minutes_text(run.minutes)}** here; {_span(run.t4_minutes)} on a T4"]]  # fmt: skip
    for v in p.variants:
        rows.append([f"predicted: variant `{v.name}`", f"{budget.minutes_text(v.minutes)} here; {_span(v.t4_minutes)} on a T4"])
    if p.variants:
        rows.append([f"predicted: the study ({len(p.variants)} variant(s); the baseline is this run)",
                     f"{budget.minutes_text(p.study_minutes)} here; {_span(p.study_t4_minutes)} on a T4"])  # fmt: skip
    if p.flickr:
        rows.append(["predicted: Flickr30k transfer in 03 (FLICKR30K=True: 134 MB fetched and prepared once, scored once)",
                     f"{_span(budget.flickr_minutes())} on a T4"])  # fmt: skip
    prepared = "all of COCO 2014" if p.prep_images is None else f"{p.prep_images:,} images"
    evaluation = "evaluation with the classification over categories" + (", Flickr30k" if p.flickr else "")
    rows.append([f"predicted: the whole lab on a T4 (prep of {prepared}, these trainings, {evaluation})", _span(p.lab_t4_minutes)])
    return rows


def inspect(cfg: Config, paths: Paths) -> dict[str, Any]:
    """Machine, storage and cache state (no timing)."""
    from .core import env
    from .core.artifacts import ArtifactError, load_json, load_torch
    from .data.image_cache import MANIFEST, _shard_ok
    from .data.text_tower import display_name

    info = env.hardware_summary(paths)
    facts: dict[str, Any] = {k: info.get(k) for k in ("gpu", "gpu_memory_gib", "torch", "cuda", "ram_gib", "free_disk_gib", "cpu_count")}
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
            states.append(f"{split}: {data['embeddings'].shape[0]:,} captions ({display_name(data['model'])})")
        except ArtifactError as exc:
            states.append(f"{split}: missing" if isinstance(exc, FileNotFoundError) else f"{split}: damaged")
    facts["caption_cache"] = "; ".join(states)
    facts["run"], facts["run_mismatch"] = run_state(cfg, paths)
    facts.update(image_counts(cfg, paths))
    return facts


def image_counts(cfg: Config, paths: Paths) -> dict[str, int]:
    """Training, validation and restval images of the prepared splits (before 01: the settings' or COCO's counts)."""
    from .core.artifacts import ArtifactError
    from .data.splits import load_splits

    try:
        splits = load_splits(paths)
        prepared = len(splits.train) + len(splits.val) + len(splits.test) + len(splits.restval)  # what 01 cached
        return {"train_images": len(splits.train), "val_images": len(splits.val), "restval_images": len(splits.restval),
                "prepared_images": prepared}  # fmt: skip
    except ArtifactError:
        return {"train_images": cfg.train_images or TRAIN_IMAGES_FULL, "val_images": cfg.val_images or VAL_IMAGES_FULL}


def run_state(cfg: Config, paths: Paths) -> tuple[str, str | None]:
    """The run these settings train into, and (second) why 02 would refuse to continue or reuse it, if it would.

    The same check as the trainer's (runs.check_same_run): the run's stored identity and input digests
    against the settings and data artifacts of now.
    """
    from .clip.flags import Recipe
    from .clip.identity import run_identity
    from .core.artifacts import ArtifactError, load_torch
    from .store.runs import RunDir, check_same_run
    from .training.train_data import load_training_data

    run = RunDir.for_config(paths, cfg)
    if not run.checkpoint.exists():
        return f"`{run.name}`: not trained yet", None
    try:
        state = load_torch(run.checkpoint, "checkpoint")
        data = load_training_data(cfg, paths, Recipe.of(cfg.variant, cfg.lab), progress=False)
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
    cfg: Config, device: torch.device, steps: int = 3, batch: int | None = None, dtype: Any = _AUTO, warmup: int = 1,
    size: int | None = None,
) -> dict[str, Any]:
    """img/s of real training steps of the configured model and precision (random pixels; no weights downloaded).

    ``dtype="auto"`` is the trainer's choice (fp16/bf16 autocast on CUDA with AMP, fp32 otherwise); the
    benchmark passes its own to compare precisions.
    """
    from .clip.embed import amp_dtype
    from .clip.flags import Recipe
    from .clip.model import model_config
    from .data.dataset import normalize_images
    from .training.assemble import assemble

    batch = batch or cfg.batch_size
    variant = Recipe.of(cfg.variant, cfg.lab)
    cfg = cfg.replace(**variant.overrides(cfg.to_dict()))  # what the trainer trains: e.g. optim's gradient clipping
    channels_last = cfg.channels_last and (device.type == "cuda" or dtype is not _AUTO)
    dtype = amp_dtype(device, cfg.amp) if dtype is _AUTO else dtype
    # the run's own model, optimizer, scaler, loss (its extra negatives are not timed) and step: notebook 02's cells
    parts = assemble(cfg, variant, model_config(cfg, 512), device, cfg.lr, dtype, channels_last, pretrained=False)
    model, optimizer, scaler, loss_fn, train_step = parts.model.train(), parts.optimizer, parts.scaler, parts.loss_fn, parts.step_fn
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    size = size or cfg.image_size  # a resolution schedule's lower size: the trainer resizes on the device, as here
    images = torch.randint(0, 256, (batch, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
    text = torch.nn.functional.normalize(torch.randn(batch, 512, device=device), dim=-1)

    def step() -> None:
        x = normalize_images(images, device, channels_last, size=size)
        train_step(model, x, text, loss_fn, optimizer, scaler, amp_dtype=dtype, grad_clip=cfg.grad_clip)

    seconds = seconds_per_call(step, device, steps, warmup) * steps
    precision = f"{str(dtype).replace('torch.', '')} autocast" if dtype else "fp32"
    return {"batch": batch, "steps": steps, "train_img_per_s": batch * steps / seconds, "precision": precision, "size": size}


def time_loader(cfg: Config, paths: Paths, batches: int = 5) -> float | None:
    """img/s of the training loader reading the real cache (None when there is no cache yet)."""
    from .core.artifacts import ArtifactError
    from .data.dataset import data_code, lab_dataset, load_text_embeds, make_loader
    from .data.image_cache import ImageCache

    try:
        cache = ImageCache(paths.cache_dir if (paths.cache_dir / "manifest.json").exists() else paths.image_cache_dir)
        text = load_text_embeds(paths.text_embeds_path("train"))
    except (ArtifactError, OSError):
        return None
    captioned = set(text["image_ids"].tolist())
    ids = [i for i in cache.image_ids if i in captioned][: cfg.batch_size * (batches + 1)]
    batch = min(cfg.batch_size, len(ids) // 2)  # a batch larger than half the cache: timed on smaller batches (img/s)
    if batch < 1:
        return None
    dataset = lab_dataset(data_code(text), cache, text, ids, "train", cfg.seed)  # notebook 01's, as 01 ran it (checked)
    loader = make_loader(dataset, batch, True, num_workers=cfg.num_workers)
    it = iter(loader)
    next(it)  # workers start
    t0, n = time.perf_counter(), 0
    for images, *_ in it:
        n += images.shape[0]
    return n / (time.perf_counter() - t0) if n else None


def measure(
    cfg: Config, paths: Paths, device: torch.device, steps: int = 3, batch: int | None = None
) -> tuple[budget.Rates, dict[str, Any]]:
    """The step's img/s at every training size the run and its study use (the schedule's included), and the loader's."""
    sizes = budget.sizes_needed(cfg.to_dict(), cfg.variants)
    timed = {size: time_training(cfg, device, steps=steps, batch=batch, size=size) for size in sizes}
    first = timed[sizes[0]]
    timings = {"batch": first["batch"], "precision": first["precision"], "loader_img_per_s": time_loader(cfg, paths),
               "step_img_per_s": {size: t["train_img_per_s"] for size, t in timed.items()}}  # fmt: skip
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return budget.Rates(name, timings["step_img_per_s"], timings["loader_img_per_s"]), timings


def plan_for(cfg: Config, facts: dict[str, Any], rates: budget.Rates) -> budget.Plan:
    """The run of ``cfg`` and its study of VARIANTS, here and on a T4: the one computation behind the doctor's figures
    and notebook 04's plan."""
    extra = {"restval": facts["restval_images"]} if facts.get("restval_images") else None
    return budget.plan(cfg.to_dict(), cfg.variants, rates, facts["train_images"], facts["val_images"], extra,
                       prep_images=facts.get("prepared_images"))  # fmt: skip


def study_plan(cfg: Config, paths: Paths, rates: budget.Rates | None = None, steps: int = 3) -> budget.Plan:
    """Notebook 04, before its first training: the step timed here at every size the study uses (or ``rates``), then the
    doctor's plan for the same settings."""
    if rates is None:
        rates, _ = measure(cfg, paths, torch.device("cuda" if torch.cuda.is_available() else "cpu"), steps)
    return plan_for(cfg, image_counts(cfg, paths), rates)


def plan_markdown(plan: budget.Plan) -> str:
    """The plan as 04 prints it: each variant's predicted minutes (here and on a T4), the study's, and the verdict."""
    return "\n".join([markdown.table(["prediction", "time"], plan_rows(plan)), "", *verdict_lines(plan)])


def verdict_lines(plan: budget.Plan) -> list[str]:
    """Whether the lab fits one free session; if not, what would (each with its time); where the T4 figures come from."""
    lines = [plan.verdict(), *(f"- {what}: the lab in {_span(m)} on a T4" for what, m in plan.suggestions)]
    return [*lines, "", f"T4 figures: {plan.t4_basis}; sources and uncertainty in docs/PERFORMANCE.md."]


def warnings_for(facts: dict[str, Any], plan: budget.Plan | None = None) -> list[str]:
    """Everything that would waste a session, each with what to do."""
    out = []
    if not facts.get("gpu"):
        out.append(NO_GPU)
    if plan is not None and plan.fits() is False:
        out.append(f"{plan.verdict()} Every notebook resumes after a disconnect; what would fit is listed above the warnings.")
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


def diagnose(cfg: Config, paths: Paths, steps: int = 3, batch: int | None = None, device: str | None = None,
             rates: budget.Rates | None = None) -> Diagnosis:  # fmt: skip
    """Inspect, time (or take ``rates``: a test's), predict, warn."""
    device_t = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    facts = inspect(cfg, paths)
    timings: dict[str, Any] = {}
    if rates is None:
        rates, timings = measure(cfg, paths, device_t, steps, batch)
    plan = plan_for(cfg, facts, rates)
    return Diagnosis(facts, timings, plan, warnings_for(facts, plan))


def _at_least_one(text: str) -> int:
    """``--steps``: a whole number of timed steps, 1 or more (0 would divide by zero, a negative predict nothing)."""
    import argparse

    try:
        steps = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps {text}: give a whole number of training steps to time, e.g. --steps 3") from None
    if steps < 1:
        raise argparse.ArgumentTypeError(f"--steps {steps}: at least 1 training step must be timed (the default is 3)")
    return steps


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .core import config as config_mod
    from .core import env

    parser = argparse.ArgumentParser(description="Check the machine and the caches, and predict the training time.")
    parser.add_argument("--config", default=None, help="a JSON config file (Config.save); default: the lab's defaults")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, values as JSON")
    parser.add_argument("--steps", type=_at_least_one, default=3, help="timed training steps (1 or more)")
    parser.add_argument(
        "--modification", action="append", default=[], metavar="FILE.py",
        help="a .py file that registers your own modification (as python -m helpers.train takes it), loaded before the config",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from .training.train import load_modification

    for path in args.modification:
        load_modification(path)
    overrides = config_mod.parse_sets(args.set)
    cfg = config_mod.load(args.config, **overrides) if args.config else config_mod.from_params(overrides)
    paths = env.resolve_paths(cfg)
    print(f"ARTIFACTS_DIR: {paths.artifacts_dir}\n")
    print(diagnose(cfg, paths, steps=args.steps).markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Diagnosis", "diagnose", "inspect", "measure", "plan_for", "time_loader", "time_training", "warnings_for"]
