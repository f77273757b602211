"""The lab report, assembled from the artifacts alone (nothing is recomputed).

``build_report`` reads ARTIFACTS_DIR (splits, cache manifest, each run's config,
metrics, history and evaluation, the ablation summary), copies every figure it links
into ``report/figures/`` and writes ``report/report.md``. A missing artifact never
crashes it: its section names the notebook that produces it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import ArtifactError, ArtifactMissing, load_eval, load_history, try_load_json
from .evaluate import results_markdown
from .storage import atomic_write_text

HYPERPARAMETERS = (
    "variant", "image_backbone", "image_weights", "hidden_dim", "epochs", "batch_size", "optimizer", "lr", "weight_decay",
    "lr_schedule", "warmup_steps", "grad_clip", "temperature", "learnable_temperature", "bank_size", "image_size", "amp", "seed",
    "train_images",
)  # fmt: skip

LOSS_INTUITION = """\
Each training batch holds B matching image-caption pairs. Every image is an **anchor**; its own
caption is the **positive**; the other B-1 captions of the batch are **negatives**. The model
scores all B x B pairs by cosine similarity (both embeddings are L2-normalised) and divides by a
**temperature** tau. The loss is a B-way cross-entropy "which caption is mine?" for every
image, plus the same from every caption's side ("which image is mine?"), averaged: the
*symmetric InfoNCE* loss. Minimising it pulls each matching pair together and pushes all
non-matching pairs apart, so a larger batch supplies more (and harder) negatives for free.
The temperature sets how peaked the softmax is: a small tau (0.07, logit scale ~14) makes the
loss concentrate on the hardest negatives, a large tau treats all negatives alike. Too small
and training becomes unstable, which is why CLIP learns log(1/tau) and clamps 1/tau at 100.
Here the text side is frozen, so the loss only moves the image tower into CLIP's text space."""

REFLECTION = """\
*To be completed by the student.*

- **Tools used:** _which LLM assistants, for which parts of the lab (code, debugging, writing)._
- **Most useful prompts:** _paste two or three prompts that helped most, and what they produced._
- **How outputs were validated:** _e.g. unit tests, comparing Recall@K against the published
  references, reading the loss curves, checking retrieved images by eye._
- **What went wrong:** _answers that were wrong or misleading, and how you noticed._
- **Link to the conversation:** _<paste the share link here>_"""


@dataclass
class Report:
    path: Path
    figures: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class _Builder:
    def __init__(self, artifacts: Path, out: Path):
        self.artifacts, self.out = artifacts, out
        self.lines: list[str] = []
        self.figures: list[Path] = []
        self.missing: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def missing_note(self, what: str, notebook: str) -> None:
        self.missing.append(what)
        self.add(f"_Missing: {what}. Run `{notebook}` (same ARTIFACTS_DIR) to produce it._", "")

    def figure(self, src: Path, name: str, caption: str, notebook: str) -> None:
        if not src.exists():
            self.missing_note(f"figure {src.relative_to(self.artifacts) if src.is_relative_to(self.artifacts) else src}", notebook)
            return
        dest = self.out / "figures" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        self.figures.append(dest)
        self.add(f"![{caption}](figures/{name})", f"*{caption}*", "")


DAMAGED: list[str] = []  # problems found while reading artifacts for the current report


def _load(path: Path, kind: str) -> Any | None:
    """The artifact, or None when absent or damaged (a damaged one is listed at the top of the report, with its fix)."""
    data, problem = try_load_json(path, kind)
    if problem:
        DAMAGED.append(problem)
    return data


def _history(run: Path) -> Any | None:
    try:
        return load_history(run)  # rewritten from checkpoint.pt when history.json is damaged
    except ArtifactMissing:
        return None
    except ArtifactError as exc:
        DAMAGED.append(str(exc))
        return None


def _eval(run: Path, split: str) -> Any | None:
    """The run's results, never stale ones: a results file of an earlier model is left out and named."""
    try:
        return load_eval(run, split)
    except ArtifactMissing:
        return None
    except ArtifactError as exc:  # damaged, or scored a model that was retrained since
        DAMAGED.append(str(exc))
        return None


def _runs(artifacts: Path) -> dict[str, dict[str, Any]]:
    runs = {}
    for run in sorted((artifacts / "runs").glob("*")) if (artifacts / "runs").exists() else []:
        if run.is_dir():
            runs[run.name] = {
                "dir": run,
                "config": _load(run / "config.json", "config"),
                "metrics": _load(run / "metrics.json", "metrics"),
                "history": _history(run),
                "eval": _eval(run, "test"),
            }
    return runs


def _main_run(runs: dict[str, dict[str, Any]], run_name: str | None) -> str | None:
    if run_name and run_name in runs:
        return run_name
    finished = [n for n, r in runs.items() if r["metrics"]]
    baselines = [n for n in finished if (runs[n]["config"] or {}).get("variant") == "baseline"]
    pool = baselines or finished
    return max(pool, key=lambda n: (runs[n]["dir"] / "metrics.json").stat().st_mtime) if pool else None


LOSS_TOLERANCE = 1e-3  # relative: a validation loss within 0.1% of its minimum has not "risen"


def convergence_sentence(history: list[dict[str, Any]], best_epoch: int) -> str:
    """One sentence on convergence, every judgement in it computed from the epoch records."""
    if len(history) < 2:
        return "Only one epoch was trained: no trend can be read from the curves."
    by_loss = min(history, key=lambda r: r["val_loss"])
    first, last = history[0], history[-1]
    rose = last["val_loss"] > by_loss["val_loss"] * (1 + LOSS_TOLERANCE) and by_loss is not last
    if rose and last["train_loss"] < by_loss["train_loss"]:
        return (
            f"Validation loss reached its minimum at epoch {by_loss['epoch']} ({by_loss['val_loss']:.3f}) and rose to "
            f"{last['val_loss']:.3f} by epoch {last['epoch']}, while the training loss kept falling ({by_loss['train_loss']:.3f} → "
            f"{last['train_loss']:.3f}): the model started to overfit. Selection on val rsum kept epoch {best_epoch}."
        )
    if rose:
        return (
            f"Validation loss rose after epoch {by_loss['epoch']} ({by_loss['val_loss']:.3f} → {last['val_loss']:.3f}) and the "
            f"training loss did not fall either ({by_loss['train_loss']:.3f} → {last['train_loss']:.3f}): unstable training "
            "rather than overfitting."
        )
    if by_loss is last:
        return (
            f"Validation loss was still falling at the last epoch ({history[-2]['val_loss']:.3f} → {last['val_loss']:.3f}; "
            f"{first['val_loss']:.3f} at epoch 1): more epochs may help."
        )
    return (
        f"Validation loss levelled off: its minimum was at epoch {by_loss['epoch']} ({by_loss['val_loss']:.3f}) and the last "
        f"epoch is within {100 * LOSS_TOLERANCE:.1f}% of it ({last['val_loss']:.3f})."
    )


def direction_sentence(metrics: dict[str, float]) -> str:
    """Which retrieval direction is stronger, as the figures say (never assumed)."""
    i2t, t2i = 100 * metrics["i2t_R@1"], 100 * metrics["t2i_R@1"]
    ranks = f"median ranks {metrics['i2t_median_rank']:.0f} (image→text) and {metrics['t2i_median_rank']:.0f} (text→image)"
    if i2t > t2i:
        return (
            f"Image→text R@1 is higher than text→image ({i2t:.1f} vs {t2i:.1f}); {ranks}. The usual reason on COCO: an image "
            "has about 5 correct captions and scores a hit when any of them ranks first, while a caption has one correct image."
        )
    if t2i > i2t:
        return (
            f"Text→image R@1 is higher than image→text ({t2i:.1f} vs {i2t:.1f}); {ranks}. On COCO the opposite is usual (an "
            "image has about 5 correct captions, a caption one image): worth examining in the qualitative figures."
        )
    return f"Image→text and text→image R@1 are equal ({i2t:.1f}); {ranks}."


def _observations(name: str, run: dict[str, Any]) -> list[str]:
    m, history = run["metrics"], (run["history"] or {}).get("epochs", [])
    if not m or not history:
        return [f"- `{name}`: no finished training history."]
    best = next(r for r in history if r["epoch"] == m["best_epoch"])
    events = m.get("events") or []
    return [
        f"- `{name}`: best epoch **{m['best_epoch']}** of {len(history)} by {m['selection_metric']} (val rsum "
        f"{100 * best['val_rsum']:.1f}); train/val loss at that epoch {best['train_loss']:.3f} / {best['val_loss']:.3f}; "
        f"{m['img_per_s']:.0f} img/s.",
        f"  Convergence: {convergence_sentence(history, m['best_epoch'])}",
        f"  Stability: {m.get('skipped_steps', 0)} skipped step(s), {len(events)} event(s)"
        + (": " + "; ".join(events[:5]) if events else " (no divergence, no out-of-memory)."),
    ]


DRAFT = "**Draft: rewrite in your own words.** The figures are computed from the artifacts; the explanation is yours to give."


def draft(*lines: str) -> list[str]:
    """A visibly marked draft, as a quote block: the student replaces it with their own analysis."""
    return ["> " + DRAFT, ">", *[f"> {line}" if line else ">" for text in lines for line in text.splitlines()], ""]


def build_report(artifacts_dir: str | Path, run_name: str | None = None) -> Report:
    """Write ``ARTIFACTS_DIR/report/report.md`` and its figures; return what was written and what is missing."""
    artifacts = Path(artifacts_dir)
    out = artifacts / "report"
    if (out / "figures").exists():
        shutil.rmtree(out / "figures")  # no stale figures from an earlier report
    b = _Builder(artifacts, out)
    DAMAGED.clear()
    runs = _runs(artifacts)
    main = _main_run(runs, run_name)
    splits, prep = _load(artifacts / "splits.json", "splits"), _load(artifacts / "config_01_dataset_prep.json", "config")
    manifest = _load(artifacts / "image_cache" / "manifest.json", "manifest")
    ablation = _load(artifacts / "ablation" / "ablation.json", "ablation")

    b.add("# CLIP fine-tuning on MS COCO 2014: lab report", "")
    for problem in DAMAGED:
        b.missing.append(problem)
        b.add(f"_Left out of this report: {problem}_", "")
    b.add("## 1. Summary", "")
    if main and runs[main]["eval"]:
        ev = runs[main]["eval"]["metrics"]
        b.add(
            f"A {(runs[main]['config'] or {}).get('image_backbone', 'resnet50')} image tower trained into the frozen text space "
            f"of `{(prep or {}).get('text_model', 'CLIP')}` "
            f"(run `{main}`) reaches, on the {runs[main]['eval']['split']} split "
            f"({runs[main]['eval']['num_images']:,} images, protocol `{runs[main]['eval']['protocol']}`): "
            f"image→text R@1/5/10 = {100 * ev['i2t_R@1']:.1f} / {100 * ev['i2t_R@5']:.1f} / {100 * ev['i2t_R@10']:.1f}, "
            f"text→image R@1/5/10 = {100 * ev['t2i_R@1']:.1f} / {100 * ev['t2i_R@5']:.1f} / {100 * ev['t2i_R@10']:.1f} "
            f"(rsum {100 * ev['rsum']:.1f}).",
            "",
        )
    else:
        b.missing_note("test-split results of a trained run", "03_evaluate_clip.ipynb")

    b.add("## 2. Data", "")
    if splits:
        sizes = {k: len(splits[k]) for k in ("train", "val", "test", "restval")}
        b.add(
            f"Split protocol: `{splits['protocol']}`. Train {sizes['train']:,} images (train2014), val {sizes['val']:,} "
            f"(model selection), test {sizes['test']:,} (reported), restval {sizes['restval']:,}.",
            "",
        )
        if manifest:
            failed = sum(len(s["failed"]) for p in manifest["parts"].values() for s in p["shards"].values())
            b.add(
                f"Images were decoded once, resized (shorter side {manifest['image_size']} px, centre crop) and cached as "
                f"quality-{manifest['quality']} JPEGs; {failed} unreadable image(s) were skipped. Captions were encoded once "
                "by the frozen CLIP text tower (max 77 tokens, truncation, per-batch padding).",
                "",
            )
        b.figure(
            artifacts / "figures" / "pairs_grid.png",
            "data_pairs_grid.png",
            "Random image-caption pairs from the prepared caches",
            "01_dataset_prep.ipynb",
        )
    else:
        b.missing_note("splits.json", "01_dataset_prep.ipynb")

    b.add("## 3. Hyperparameters", "")
    configured = {n: r for n, r in runs.items() if r["config"]}
    if configured:
        names = list(configured)
        b.add("| setting | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names))
        for key in HYPERPARAMETERS:
            b.add(f"| {key} | " + " | ".join(str(configured[n]["config"].get(key)) for n in names) + " |")
        b.add("")
    else:
        b.missing_note("training runs", "02_train_clip.ipynb")

    b.add("## 4. Hardware and runtime", "")
    finished = {n: r for n, r in runs.items() if r["metrics"]}
    if finished:
        b.add("| run | GPU | torch | epochs | training time | img/s | AMP |", "|---|---|---|---:|---:|---:|---|")
        for n, r in finished.items():
            m, hw = r["metrics"], r["metrics"]["hardware"]
            b.add(
                f"| `{n}` | {hw.get('gpu') or 'CPU'} | {hw.get('torch')} | {m['epochs']} | {m['total_train_seconds'] / 60:.1f} min | "
                f"{m['img_per_s']:.0f} | {m['amp_dtype']} |"
            )
        b.add("")
    else:
        b.missing_note("training metrics", "02_train_clip.ipynb")

    b.add("## 5. The CLIP loss: intuition", "", *draft(LOSS_INTUITION))

    b.add("## 6. Retrieval results", "")
    if main and runs[main]["eval"]:
        b.add(results_markdown(runs[main]["eval"]), "")
    else:
        b.missing_note("Recall@K of the main run", "03_evaluate_clip.ipynb")

    b.add("## 7. Training curves", "")
    if main:
        b.figure(runs[main]["dir"] / "loss_curves.png", f"{main}_loss_curves.png", f"Learning curves of `{main}`", "02_train_clip.ipynb")
    else:
        b.missing_note("a trained run", "02_train_clip.ipynb")

    b.add("## 8. Qualitative retrievals", "")
    if main:
        fig_dir = runs[main]["dir"] / "figures_test"
        for stem, caption in (
            ("text_queries", "Text → image: top-5 distinct images per query"),
            ("image_classes", "Image → class probabilities (prompt ensembling)"),
            ("similarity_heatmap", "Image-caption cosine similarities"),
            ("retrieval_successes", "Text → image successes"),
            ("retrieval_failures", "Text → image failures"),
        ):
            b.figure(fig_dir / f"{stem}.png", f"{main}_{stem}.png", caption, "03_evaluate_clip.ipynb")
    else:
        b.missing_note("qualitative figures", "03_evaluate_clip.ipynb")

    b.add("## 9. Observations: stability, convergence, retrieval quality", "")
    if finished:
        facts = [line for n, r in finished.items() for line in _observations(n, r)]
        if main and runs[main]["eval"]:
            facts.append(f"- Retrieval: {direction_sentence(runs[main]['eval']['metrics'])}")
        b.add(*draft(*facts))
    else:
        b.missing_note("training histories", "02_train_clip.ipynb")

    b.add("## 10. Ablation", "")
    if ablation:
        from .ablation import table_markdown

        b.add(table_markdown(ablation["table"]), "")
        b.figure(
            artifacts / "ablation" / ablation["chart"],
            "ablation_recall_delta.png",
            "Recall@K change against the baseline",
            "04_ablation.ipynb",
        )
    else:
        b.missing_note("ablation results", "04_ablation.ipynb")

    b.add("## 11. Reflection on LLM use", "", "> **Template: complete it yourself.** Answer each prompt; delete this line.", ">")
    b.add(*[f"> {line}" if line else ">" for line in REFLECTION.splitlines()], "")
    path = atomic_write_text(out / "report.md", "\n".join(b.lines) + "\n")
    return Report(path, b.figures, b.missing)
