"""The lab report, assembled from the artifacts alone (nothing is recomputed).

``build_report`` reads ARTIFACTS_DIR (splits, cache manifest, each run's config,
metrics, history and evaluation, the ablation summary), copies every figure it links
into ``report/figures/`` and writes ``report/report.md``. A missing artifact never
crashes it: its section names the notebook that produces it.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import markdown, resolution
from ..core.artifacts import ArtifactError, ArtifactMissing, try_load_json
from ..core.config import check_run_name
from ..core.env import Paths
from ..core.lab import LabCode
from ..core.provenance import SYNTHETIC_WORDS, is_synthetic, splits_digest, synthetic_artifacts
from ..core.storage import atomic_copy, atomic_write_text
from ..data.text_tower import display_name, parameter_count
from ..evaluation.classification import classification_markdown
from ..evaluation.evaluate import edited_note, results_markdown
from ..evaluation.transfer import SPLIT as TRANSFER_SPLIT
from ..evaluation.transfer import TRANSFER_OFF, transfer_markdown
from ..store.runs import (
    RunDir,
    all_runs,
    is_sealed,
    load_eval,
    load_figures,
    load_history,
    load_metrics,
    newest_finished,
    scores_current_weights,
)

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
    """The report's lines, the figures copied so far, and what is missing or damaged (listed at the top)."""

    def __init__(self, artifacts: Path, out: Path):
        self.artifacts, self.out = artifacts, out
        self.lines: list[str] = []
        self.figures: list[Path] = []
        self.missing: list[str] = []
        self.damaged: list[str] = []  # problems found while reading artifacts for this report

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def missing_note(self, what: str, notebook: str) -> None:
        self.missing.append(what)
        self.add(f"_Missing: {what}. Run `{notebook}` (same ARTIFACTS_DIR) to produce it._", "")

    def figure(self, src: Path, name: str, caption: str, notebook: str) -> None:
        if not src.exists():
            self.missing_note(f"figure {src.relative_to(self.artifacts) if src.is_relative_to(self.artifacts) else src}", notebook)
            return
        dest = atomic_copy(src, self.out / "figures" / name)  # a full disk: said, with what to free (storage.disk_full)
        self.figures.append(dest)
        self.add(f"![{caption}](figures/{name})", f"*{caption}*", "")

    def table(self, header: list[str], rows: list[list[str]], what: str, notebook: str, numeric: range = range(0)) -> None:
        """A Markdown table (``numeric`` columns right-aligned), or the note that names the notebook producing ``what``."""
        if not rows:
            self.missing_note(what, notebook)
            return
        self.add(markdown.table(header, rows, numeric), "")

    def load(self, path: Path, kind: str) -> Any | None:
        """The artifact, or None when absent or damaged (a damaged one is listed at the top of the report, with its fix)."""
        data, problem = try_load_json(path, kind)
        if problem:
            self.damaged.append(problem)
        return data

    def lenient(self, read: Any, *args: Any) -> Any | None:
        """``read(*args)``, or None when absent; damaged (or stale: scored a model retrained since) is listed and left out."""
        try:
            return read(*args)
        except ArtifactMissing:
            return None
        except ArtifactError as exc:
            self.damaged.append(str(exc))
            return None


@dataclass
class RunArtifacts:
    """What the report reads of one run folder; None where a file is absent or damaged."""

    run: RunDir
    config: dict[str, Any] | None
    metrics: dict[str, Any] | None
    history: dict[str, Any] | None  # rewritten from checkpoint.pt when history.json is damaged
    eval: dict[str, Any] | None  # the test split's results, never stale ones
    figures: Path | None  # notebook 03's test-split figures, only when they show the current checkpoint

    @classmethod
    def read(cls, run: RunDir, b: _Builder) -> RunArtifacts:
        config, metrics = b.load(run.config, "config"), b.lenient(load_metrics, run)
        figures = b.lenient(load_figures, run, "test")
        return cls(run, config, metrics, b.lenient(load_history, run), b.lenient(load_eval, run, "test"), figures)

    def status(self) -> str:
        """The run in a few words for the report's note: finished, unfinished (epochs done of those asked), or failed
        before its first epoch finished (no history at all)."""
        if self.metrics:
            return "finished"
        done = len((self.history or {}).get("epochs") or [])
        asked = (self.config or {}).get("epochs")
        if done and asked and done >= asked:
            return f"all {asked} epochs trained, no summary yet: re-run the notebook that trained it to finish it"
        if done:
            return f"unfinished: {done} of {asked} epochs" if asked else f"unfinished: {done} epoch(s)"
        return "failed or stopped before its first epoch ended"


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


def _observations(run: RunArtifacts) -> list[str]:
    m, history, name = run.metrics, (run.history or {}).get("epochs", []), run.run.name
    if not m or not history:
        return [f"- `{name}`: no finished training history."]
    best = next(r for r in history if r["epoch"] == m["best_epoch"])
    events = m.get("events") or []
    return [
        f"- `{name}`: best epoch **{m['best_epoch']}** of {len(history)}, chosen by the val rsum (the sum of the six "
        f"Recall@K on the val split, out of 600): {100 * best['val_rsum']:.1f}; train/val loss at that epoch "
        f"{best['train_loss']:.3f} / {best['val_loss']:.3f}; {m['img_per_s']:.0f} img/s.",
        f"  Convergence: {convergence_sentence(history, m['best_epoch'])}",
        f"  Stability: {m.get('skipped_steps', 0)} skipped step(s), {len(events)} event(s)"
        + (": " + "; ".join(events[:5]) if events else " (no divergence, no out-of-memory)."),
    ]


DRAFT = "**Draft: rewrite in your own words.** The figures are computed from the artifacts; the explanation is yours to give."


def draft(*lines: str) -> list[str]:
    """A visibly marked draft, as a quote block: the student replaces it with their own analysis."""
    return ["> " + DRAFT, ">", *[f"> {line}" if line else ">" for text in lines for line in text.splitlines()], ""]


def build_report(artifacts: str | Path | Paths, run_name: str | None = None) -> Report:
    """Write ``ARTIFACTS_DIR/report/report.md`` and its figures; return what was written and what is missing.

    The main run is RUN_NAME if it exists, else the newest finished baseline run, else the newest finished run.
    """
    paths = artifacts if isinstance(artifacts, Paths) else Paths.for_artifacts(Path(artifacts))
    out = paths.artifacts_dir / "report"
    if (out / "figures").exists():
        shutil.rmtree(out / "figures")  # no stale figures from an earlier report
    b = _Builder(paths.artifacts_dir, out)
    runs = {run.name: RunArtifacts.read(run, b) for run in all_runs(paths)}
    if run_name and run_name not in runs:  # a typo must not silently become the report of another run
        check_run_name(run_name)
        raise FileNotFoundError(f"No run {run_name!r} in {paths.runs_dir}. Known runs: {sorted(runs) or 'none'}. Run 02_train_clip.ipynb.")
    main = runs.get(run_name or "") or runs.get(newest_name(runs))
    splits = b.load(paths.splits_path, "splits")
    manifest = b.load(paths.image_cache_dir / "manifest.json", "manifest")
    ablation = b.load(paths.artifacts_dir / "ablation" / "ablation.json", "ablation")
    runs = in_study_order(runs, main, ablation)
    study, others = of_this_study(runs, main, ablation)

    trained_on = ((main.metrics or {}).get("data") or {}) if main else {}
    synthetic = synthetic_artifacts(paths.artifacts_dir) or bool(trained_on.get("synthetic"))
    if synthetic:  # from the data's own record (splits.json, the run's metrics): no setting can forget it
        b.add("# CLIP fine-tuning on SYNTHETIC demo data (not MS COCO 2014): lab report", "", SYNTHETIC_REPORT, "")
    else:
        b.add("# CLIP fine-tuning on MS COCO 2014: lab report", "")
    for problem in b.damaged:
        b.missing.append(problem)
        b.add(f"_Left out of this report: {problem}_", "")
    summary_section(b, main)
    data_section(b, paths, main, splits, manifest)
    if others:  # named once: the tables below describe this study's runs only
        b.add(f"_Other runs in `runs/`, not part of this report: {', '.join(f'`{n}` ({runs[n].status()})' for n in others)}._", "")
    hyperparameters_section(b, study, main)
    hardware_section(b, study)
    b.add("## 5. The CLIP loss: intuition", "", *draft(LOSS_INTUITION))
    results_section(b, main)
    curves_section(b, main)
    qualitative_section(b, main)
    observations_section(b, study, main)
    ablation_section(b, paths, ablation, main)
    b.add("## 11. Reflection on LLM use", "", "> **Template: complete it yourself.** Answer each prompt; delete this line.", ">")
    b.add(*[f"> {line}" if line else ">" for line in REFLECTION.splitlines()], "")
    path = atomic_write_text(out / "report.md", "\n".join(b.lines) + "\n")
    return Report(path, b.figures, b.missing)


SYNTHETIC_REPORT = (
    f"> **{SYNTHETIC_WORDS}.** Every number and figure in this report comes from generated images of coloured shapes "
    "(`helpers.data.synthetic`, the offline demo) and a tiny random text tower, not from MS COCO 2014 and CLIP: they show "
    "that the pipeline runs, not how well a model retrieves, and they do not compare with the published rows. Do not "
    "hand them in as COCO results."
)


def of_this_study(runs: dict[str, RunArtifacts], main: RunArtifacts | None, ablation: dict[str, Any] | None,
                  ) -> tuple[dict[str, RunArtifacts], list[str]]:  # fmt: skip
    """The runs this report is about, in the report's order: the main run and the runs of the study it shows (the
    newest ablation.json); and the names of every other run in the folder (stale or unrelated: named once, not tabled)."""
    wanted = {main.run.name} if main else set()
    wanted |= {str(o.get("run_name")) for o in (ablation or {}).get("runs") or []}
    return {n: r for n, r in runs.items() if n in wanted}, [n for n in runs if n not in wanted]


def in_study_order(runs: dict[str, RunArtifacts], main: RunArtifacts | None, ablation: dict[str, Any] | None) -> dict[str, RunArtifacts]:
    """The report's one order of runs, in every section: the main run, the other baselines, then the variants in the
    study's order (ablation.json's ``order``: VARIANTS'), then any other run by name."""
    study = [str(v) for v in (ablation or {}).get("order") or []]

    def key(name: str) -> tuple[bool, bool, int, str]:
        variant = _variant_of(runs[name])
        position = study.index(variant) if variant in study else len(study)
        return (main is None or name != main.run.name, variant != "baseline", position, name)

    return {name: runs[name] for name in sorted(runs, key=key)}


def preview_markdown(report: Report) -> str:
    """``report.md`` with every figure embedded (a base64 ``data:`` URI) for ``display(Markdown(...))`` in a notebook.

    Why: the report links its figures relative to ``ARTIFACTS_DIR/report/``, but a notebook resolves
    links against its own folder (and Colab cannot reach local files at all), so the preview showed alt
    text only. The file on disk keeps its relative links: that is what the student hands in.
    """
    import base64
    import re

    folder = report.path.parent

    def embed(match: re.Match[str]) -> str:
        figure = folder / match.group(2)
        if not figure.is_file():
            return match.group(0)
        data = base64.b64encode(figure.read_bytes()).decode("ascii")
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    return re.sub(r"!\[([^\]]*)\]\((figures/[^)]+\.png)\)", embed, report.path.read_text())


def newest_name(runs: dict[str, RunArtifacts]) -> str | None:
    """The default main run: the newest finished baseline (else finished) run whose metrics could be read."""
    chosen, _ = newest_finished(
        [r.run for r in runs.values()],
        usable=lambda run: runs[run.name].metrics is not None,
        variant=lambda run: (runs[run.name].config or {}).get("variant"),  # stored canonical (Config)
    )  # from the files already read: no second read of each config.json
    return chosen.name if chosen else None


def summary_section(b: _Builder, main: RunArtifacts | None) -> None:
    b.add("## 1. Summary", "")
    if not (main and main.eval):
        b.missing_note("test-split results of a trained run", "03_evaluate_clip.ipynb")
        return
    ev, result = main.eval["metrics"], main.eval
    trained = (main.metrics or {}).get("config") or result.get("checkpoint", {}).get("config") or {}  # the run's own record
    b.add(
        f"A {trained.get('image_backbone', 'resnet50')} image tower trained into the frozen text space "
        f"of `{display_name(trained.get('text_model', 'CLIP'))}` "
        f"(run `{main.run.name}`) reaches, on the {result['split']} split "
        f"({result['num_images']:,} images, protocol `{result['protocol']}`), in %: "
        f"image→text R@1/5/10 = {100 * ev['i2t_R@1']:.1f} / {100 * ev['i2t_R@5']:.1f} / {100 * ev['i2t_R@10']:.1f}, "
        f"text→image R@1/5/10 = {100 * ev['t2i_R@1']:.1f} / {100 * ev['t2i_R@5']:.1f} / {100 * ev['t2i_R@10']:.1f} "
        f"(rsum {100 * ev['rsum']:.1f} of 600).",
        "",
    )


def data_section(
    b: _Builder, paths: Paths, main: RunArtifacts | None, splits: dict[str, Any] | None, manifest: dict[str, Any] | None
) -> None:
    """The data the main run trained on, from its own record; the current data artifacts only when no run has one."""
    b.add("## 2. Data", "")
    data = (main.metrics or {}).get("data") if main else None
    if data:
        sizes, protocol = data["splits"], main.metrics["protocol"]
        image_size, quality, skipped = data["image_size"], data["cache_quality"], data["skipped_images"]
        source = f"as run `{main.run.name}` trained on them (its own record)"
        if splits is not None and main.metrics["inputs"]["splits"] != splits_digest(splits):
            b.add(
                f"_Note: `splits.json` was re-drawn after run `{main.run.name}` trained (notebook 01 ran again with other "
                "settings). This section describes the run's data; the current artifacts belong to no run in this report._",
                "",
            )
    elif splits:
        sizes = {k: len(splits[k]) for k in ("train", "val", "test", "restval")}
        protocol, source = splits["protocol"], "as prepared by notebook 01 (no finished run yet)"
        image_size = manifest["image_size"] if manifest else None
        quality = manifest["quality"] if manifest else None
        skipped = sum(len(s["failed"]) for p in manifest["parts"].values() for s in p["shards"].values()) if manifest else None
    else:
        b.missing_note("splits.json", "01_dataset_prep.ipynb")
        return
    synthetic = bool(data.get("synthetic")) if data else is_synthetic((splits or {}).get("source"))
    kind, layout = ("SYNTHETIC ", " layout, generated") if synthetic else ("", "")
    b.add(
        f"Split protocol: `{protocol}`. Train {sizes['train']:,} {kind}images (train2014{layout}), val {sizes['val']:,} "
        f"(model selection), test {sizes['test']:,} (reported), restval {sizes['restval']:,}; {source}.",
        "",
    )
    if image_size is not None:
        b.add(
            f"Images were decoded once, resized (shorter side {image_size} px, centre crop) and cached as "
            f"quality-{quality} JPEGs; {skipped} unreadable image(s) were skipped. Captions were encoded once "
            "by the frozen CLIP text tower (max 77 tokens, truncation, per-batch padding).",
            "",
        )
    b.figure(
        paths.artifacts_dir / "figures" / "pairs_grid.png",
        "data_pairs_grid.png",
        "Random image-caption pairs from the prepared caches",
        "01_dataset_prep.ipynb",
    )


def hyperparameters_section(b: _Builder, runs: dict[str, RunArtifacts], main: RunArtifacts | None) -> None:
    """One column per run (the main run first, then the other baseline runs), the settings the trainer actually used
    (metrics.json's config, after a variant's own changes), and only the rows that apply to at least one run."""
    b.add("## 3. Hyperparameters", "")
    described = {n: r for n, r in runs.items() if r.config}
    order = list(described)  # the report's one order (in_study_order): the main run, the baselines, the study's variants
    text_parameters = functools.cache(parameter_count)  # one config read per text model, not per run
    columns = {n: hyperparameters(described[n], text_parameters) for n in order}
    labels = list(dict.fromkeys(label for column in columns.values() for label in column))  # every column: the same order
    rows = [[label, *(columns[n][label] or "—" for n in order)] for label in labels if any(columns[n][label] for n in order)]
    b.table(["setting", *(f"`{n}`" for n in order)], rows, "training runs", "02_train_clip.ipynb")
    if columns:
        absent = "— : does not apply to that run. " if any("—" in row for row in rows) else ""  # only where the symbol is
        b.add(f"{absent}Settings are those the trainer used (a variant's own changes included).", "")
    edits = {n: (described[n].metrics or {}).get("lab_edited") or {} for n in order}
    if any(edits.values()):  # the code that trained, where a student changed a lab cell: read from the run, as it ran
        b.add("### The lab cells you edited, as each run trained with them", "")
        for name, cells in edits.items():
            for key, source in cells.items():
                b.add(f"`{name}`, cell `{key.split(':', 1)[1]}` of notebook {key.split(':', 1)[0]}:", "", f"```python\n{source}\n```", "")


def _variant_of(run: RunArtifacts) -> str:
    return str(((run.metrics or {}).get("config") or run.config or {}).get("variant", "baseline"))


def hyperparameters(run: RunArtifacts, text_parameters: Callable[[str], int | None] = parameter_count) -> dict[str, str | None]:
    """A run's settings as the report's rows (label: value), always the same labels in the same order; None where a
    setting does not apply to the run (a bank size without the bank) or is not recorded."""
    from ..clip.flags import Recipe, only_with
    from ..clip.loss import CLIP_LOSS_TEXT
    from ..clip.model import describe

    metrics = run.metrics or {}
    c = metrics.get("config") or run.config or {}
    flags = set(str(c.get("variant", "baseline")).split("+"))  # stored in its canonical spelling: presets expanded
    arch = metrics.get("arch") or {}
    rows: dict[str, str | None] = {"variant": f"`{c.get('variant')}`", "text model (frozen)": f"`{display_name(str(c.get('text_model')))}`"}
    lab = LabCode.from_record(metrics.get("lab_code"))  # the cells the run trained with (a run of an older kit: the notebooks')
    model = metrics.get("model") or (describe(arch, lab) if arch else None)  # the trainer's record: a student's head needs no code here
    text = text_parameters(str(c.get("text_model"))) if arch else None
    rows["embedding width"] = str(arch["embed_dim"]) if arch else None
    rows["image tower"] = f"{c.get('image_backbone')} ({c.get('image_weights') or 'random init'})"
    rows["projection head"] = model["head"] if model else None
    rows["image tower parameters (trainable / frozen)"] = f"{model['trainable']:,} / {model['frozen']:,}" if model else None
    rows["text tower parameters (frozen)"] = f"{text:,}" if text is not None else None
    rows["loss"] = metrics.get("loss") or Recipe.of(str(c.get("variant", "baseline"))).loss_text(CLIP_LOSS_TEXT)
    with_bank = only_with("bank_size") in flags
    rows["bank size"] = (f"{c['bank_size']:,}" if c.get("bank_size") else "all cached captions") if with_bank else None
    rows["epochs"] = str(metrics.get("epochs", c.get("epochs")))
    rows["batch size"] = str(c.get("batch_size"))
    rows["optimizer"] = f"{c.get('optimizer')}, lr {c.get('lr'):g}, weight decay {c.get('weight_decay'):g}"
    rows["LR schedule"] = str(c.get("lr_schedule")) + (f", {c.get('warmup_steps')} warmup steps" if c.get("warmup_steps") else "")
    rows["gradient clipping"] = f"max norm {c.get('grad_clip'):g}" if c.get("grad_clip") is not None else "none"
    if "02:training-step" in (metrics.get("lab_edited") or {}):  # the student's step decides (it may clip on its own)
        rows["gradient clipping"] = f"your step decides (`training-step` edited; GRAD_CLIP={c.get('grad_clip')} passed to it)"
    history = (run.history or {}).get("epochs") or []
    if c.get("learnable_temperature"):
        final = f", {history[-1]['temperature']:.3f} after epoch {len(history)}" if history and "temperature" in history[-1] else ""
        rows["temperature τ"] = f"learned, from {c.get('temperature'):g}{final}"
    else:
        rows["temperature τ"] = f"{c.get('temperature'):g} (fixed)"
    sizes, epochs = c.get("train_sizes") or [], int(metrics.get("epochs", c.get("epochs")) or 0)
    trained = [r["train_size"] for r in history if "train_size" in r]  # what each epoch trained at, when recorded
    schedule = resolution.describe_epochs(trained) if len(trained) == len(history) == epochs > 0 else (
        resolution.describe(sizes, c["image_size"], epochs))
    scheduled = f"training: {schedule}; validation and test: " if sizes else ""
    rows["image size"] = f"{scheduled}{c.get('image_size')} px"
    rows["precision"] = str(metrics["amp_dtype"]) if "amp_dtype" in metrics else ("mixed on CUDA" if c.get("amp") else "float32")
    counted = "num_train_images" in metrics
    rows["train / val images"] = f"{metrics['num_train_images']:,} / {metrics['num_val_images']:,}" if counted else None
    rows["steps per epoch (capped)"] = str(c["max_steps_per_epoch"]) if c.get("max_steps_per_epoch") else None
    rows["seed"] = str(c.get("seed"))
    edited = metrics.get("lab_edited") or {}
    rows["lab code (the notebooks' cells)"] = (
        "edited: " + ", ".join(f"`{key.split(':', 1)[1]}` ({key.split(':', 1)[0]})" for key in edited) if edited
        else "as in the notebooks" if "lab_code" in metrics else None
    )
    return rows


def hardware_section(b: _Builder, runs: dict[str, RunArtifacts]) -> None:
    b.add("## 4. Hardware and runtime", "")
    finished = {n: r.metrics for n, r in runs.items() if r.metrics}
    rows = [
        [f"`{n}`", m["hardware"].get("gpu") or "CPU", str(m["hardware"].get("torch")), str(m["epochs"]),
         markdown.duration(m["total_train_seconds"]), f"{m['img_per_s']:.0f}"]
        for n, m in finished.items()
    ]  # fmt: skip
    header = ["run", "GPU", "torch", "epochs", "training time (m:ss)", "img/s"]  # the precision: section 3
    b.table(header, rows, "training metrics", "02_train_clip.ipynb", numeric=range(3, 6))


def results_section(b: _Builder, main: RunArtifacts | None) -> None:
    b.add("## 6. Retrieval results", "")
    if main and main.eval:
        b.add(results_markdown(main.eval), "")
        classified = main.eval.get("classification")
        b.add("### Zero-shot classification over COCO's categories", "", classification_markdown(classified, f"`{main.run.name}`"), "")
        if classified and "run" in classified and main.figures is not None:  # the figure of the model scored, or none
            b.figure(main.figures / "category_ap.png", f"{main.run.name}_category_ap.png",
                     "Average precision per category: the best and the worst", "03_evaluate_clip.ipynb")  # fmt: skip
        b.add("### Transfer: Flickr30k's 1k test split", "")
        known = len(b.damaged)
        transferred = b.lenient(load_eval, main.run, TRANSFER_SPLIT)  # only while it scores the run's current weights
        if transferred:
            b.add(transfer_markdown(transferred), "")
        elif len(b.damaged) > known:  # edited, or scored weights the run has replaced since: said here, never "off"
            b.missing.append(b.damaged[-1])
            b.add(f"_Left out of this report: {b.damaged[-1]}_", "")
        else:
            b.add(f"*Not measured: {TRANSFER_OFF}*", "")
    else:
        b.missing_note("Recall@K of the main run", "03_evaluate_clip.ipynb")


def curves_section(b: _Builder, main: RunArtifacts | None) -> None:
    b.add("## 7. Training curves", "")
    if not main:
        b.missing_note("a trained run", "02_train_clip.ipynb")
        return
    name = main.run.name
    b.figure(main.run.loss_curves, f"{name}_loss_curves.png", f"Learning curves of `{name}`", "02_train_clip.ipynb")


QUALITATIVE_FIGURES = (
    ("text_queries", "Text → image: top-5 distinct images per query"),
    ("image_classes", "Image → class probabilities (prompt ensembling)"),
    ("similarity_heatmap", "Image-caption cosine similarities"),
    ("retrieval_successes", "Text → image successes"),
    ("retrieval_failures", "Text → image failures"),
)  # the stems notebook 03 saves into the run's figures of the test split


def qualitative_section(b: _Builder, main: RunArtifacts | None) -> None:
    b.add("## 8. Qualitative retrievals", "")
    if not main:
        b.missing_note("qualitative figures", "03_evaluate_clip.ipynb")
        return
    if main.figures is None:  # absent, or made for an earlier model of the run (listed at the top)
        b.missing_note(f"qualitative figures of the current model of `{main.run.name}`", "03_evaluate_clip.ipynb")
        return
    for stem, caption in QUALITATIVE_FIGURES:
        b.figure(main.figures / f"{stem}.png", f"{main.run.name}_{stem}.png", caption, "03_evaluate_clip.ipynb")


def observations_section(b: _Builder, runs: dict[str, RunArtifacts], main: RunArtifacts | None) -> None:
    b.add("## 9. Observations: stability, convergence, retrieval quality", "")
    finished = [r for r in runs.values() if r.metrics]
    if not finished:
        b.missing_note("training histories", "02_train_clip.ipynb")
        return
    facts = [line for run in finished for line in _observations(run)]
    if main and main.eval:
        facts.append(f"- Retrieval: {direction_sentence(main.eval['metrics'])}")
    b.add(*draft(*facts))


def _same_checkpoint(paths: Paths, outcome: dict[str, Any]) -> bool:
    """Whether an ablation row still describes its run's current weights (the sha256 its test eval scored)."""
    return scores_current_weights(RunDir.named(paths, outcome["run_name"]), outcome.get("checkpoint"))


def scored_by_note(scored_by: dict[str, Any] | None, main_eval: dict[str, Any] | None) -> list[str]:
    """What the report says when 04 scored the study with an edited Recall@K cell, or with other notebook-03 code than
    the one that scored section 6's table (then the baseline row and section 6 are not comparable figure for figure)."""
    if not scored_by:
        return []  # an ablation.json of an earlier kit recorded nothing
    lines = edited_note({"lab_code": scored_by})
    theirs = (main_eval or {}).get("lab_code") or {}
    if theirs.get("digest") and theirs["digest"] != scored_by.get("digest"):
        differ = sorted(set(theirs.get("edited") or {}) ^ set(scored_by.get("edited") or {})) or ["03's lab cells"]
        lines += [f"**Scored by other notebook-03 code than section 6** (differing: {', '.join(f'`{k}`' for k in differ)}): the "
                  "ablation's figures and section 6's are not comparable figure for figure. 04 scores with 03's cells as the "
                  "kit's copy of 03_evaluate_clip.ipynb holds them (beside helpers/: on Colab, the clone's), section 6 with "
                  "those 03's kernel ran. Re-run 03 with the notebook's cells to compare the two.", ""]  # fmt: skip
    return lines


def ablation_section(b: _Builder, paths: Paths, ablation: dict[str, Any] | None, main: RunArtifacts | None = None) -> None:
    b.add("## 10. Ablation", "")
    if not ablation:
        b.missing_note("ablation results", "04_ablation.ipynb")
        return
    from .ablation import in_order, kept_studies, table_markdown

    if not is_sealed(ablation):  # edited, or its seal removed
        problem = (
            f"{paths.artifacts_dir / 'ablation' / 'ablation.json'} was edited after it was written (or its seal removed): "
            "its figures are not shown. "
            "Re-run 04_ablation.ipynb (finished runs are reused: it only writes the comparison again)."
        )
        b.missing.append(problem)
        b.add(f"_Left out of this report: {problem}_", "")
        return
    stale = [o["run_name"] for o in ablation["runs"] if not _same_checkpoint(paths, o)]
    if stale:
        problem = (
            f"{paths.artifacts_dir / 'ablation' / 'ablation.json'} compares models that have been retrained or continued since "
            f"(run(s) {', '.join(stale)}): the ablation is out of date and not shown. Re-run 04_ablation.ipynb "
            "(finished runs are reused, only the changed ones are evaluated again)."
        )
        b.missing.append(problem)
        b.add(f"_Left out of this report: {problem}_", "")
        return
    table, described = in_order(ablation)  # the baseline, then VARIANTS' order (the file's keys are alphabetical)
    others = [name for name in kept_studies(paths.artifacts_dir / "ablation") if name != ablation.get("study")]
    if ablation.get("study"):
        b.add(f"Study `{ablation['study']}`: the newest notebook 04 wrote (`ablation/studies/{ablation['study']}/`)."
              + (f" Earlier studies kept beside it, not shown: {', '.join(f'`{n}`' for n in others)}." if others else ""), "")  # fmt: skip
    b.add(*scored_by_note(ablation.get("scored_by"), main.eval if main else None))
    b.add(table_markdown(table, ablation.get("base")), "")
    b.figure(
        paths.artifacts_dir / "ablation" / ablation["chart"],
        "ablation_recall_delta.png",
        "Recall@K change against the baseline",
        "04_ablation.ipynb",
    )
    from .ablation import comparison_markdown, questions_markdown, variants_markdown

    b.add(comparison_markdown(table), "")
    b.add("What each variant run here changes, and its code:", "", variants_markdown(described), "")
    b.add(questions_markdown(), "")
