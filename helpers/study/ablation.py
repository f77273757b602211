"""The ablation study: train and evaluate each variant (and the baseline) per seed, then compare.

Runs go through the same resumable trainer and the same evaluation, so a baseline trained
earlier with the same settings is reused, not retrained, and a disconnect loses at most one
epoch. Honest selection: variants are *compared* on the val split (rsum: the sum of
Recall@1/5/10 in both directions, the same figure that picks each run's best epoch); the
test split is *reported* for every variant but never used to choose one. With several SEEDS
the table reports mean and standard deviation, and a change no larger than the seeds' spread
is flagged as noise.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..clip.flags import BASELINE, canonical
from ..clip.variants import describe, flags_of
from ..core import markdown
from ..core.artifacts import ArtifactError
from ..core.config import Config
from ..core.env import Paths
from ..core.figures import save_figure
from ..core.lab import EVALUATION
from ..core.provenance import SYNTHETIC_WORDS, digest, synthetic_artifacts
from ..core.storage import atomic_write_json, atomic_write_text
from ..evaluation.evaluate import RECALL_KEYS, evaluate, load_eval_data
from ..evaluation.transfer import SPLIT as TRANSFER_SPLIT
from ..evaluation.transfer import evaluate_transfer
from ..store.runs import RunDir, load_eval, seal
from ..training.train import train  # the one call that starts a training
from .base_settings import BaseSettings, overrides_markdown

METRIC_KEYS = (*RECALL_KEYS, "rsum")


@dataclass
class RunOutcome:
    variant: str
    seed: int
    run_name: str
    metrics: dict[str, float]  # test-split Recall@K (fractions) and rsum: reported
    train_minutes: float
    reused: bool
    val_metrics: dict[str, float] | None = None  # val-split Recall@K and rsum: used to compare variants
    checkpoint: dict[str, Any] | None = None  # path name and sha256 of the weights scored: the report checks they are current
    trained: dict[str, Any] | None = None  # the settings the run trained with (as requested; EPOCHS: the epochs it has)
    flickr_metrics: dict[str, float] | None = None  # FLICKR30K: Recall@K on Flickr30k's 1k test split (transfer; reported)


def run_ablation(cfg: Config, paths: Paths, variants: list[str], seeds: list[int], progress: bool = True,
                 order: list[str] | None = None) -> list[RunOutcome]:  # fmt: skip
    """Train (or reuse) and evaluate the baseline and every variant for every seed.

    ``order``: the order to *train* them in (notebook 04 passes its plan's, cheapest first, so a session cut short has
    the most results); the outcomes come back in one order whatever it is: the baseline first, then ``variants``."""
    variants = [canonical(v) for v in variants]  # one spelling each (their names known: a student's record registered)
    shown = list(dict.fromkeys([BASELINE] + [v for v in variants if v != BASELINE]))
    trained = list(dict.fromkeys([BASELINE, *(v for v in order or shown if v in shown), *shown]))
    outcomes = []
    for seed in seeds:
        for variant in trained:
            run_cfg = cfg.replace(variant=variant, seed=seed, run_name=None)
            name = RunDir.for_config(paths, run_cfg).name  # the name the trainer gives it (01's Dataset as the caches hold it)
            print(f"── {variant} (seed {seed}): run {name}")
            result = train(run_cfg, paths, progress=progress, live_plot=False, log=lambda m: print("   ", m))
            val = _cached_or_new_eval(run_cfg.replace(run_name=name, eval_split="val"), paths, progress)
            test = _cached_or_new_eval(run_cfg.replace(run_name=name, eval_split="test"), paths, progress)
            minutes = result.metrics["total_train_seconds"] / 60
            flickr = _cached_or_new_transfer(run_cfg.replace(run_name=name, eval_split="test"), paths, progress) if cfg.flickr30k else None
            scored = {"path": Path(str(test["checkpoint"]["path"])).name, "sha256": test["checkpoint"]["sha256"]}
            outcomes.append(RunOutcome(variant, seed, name, test["metrics"], minutes, result.skipped, val["metrics"], scored,
                                       trained_with(result.metrics), flickr))  # fmt: skip
    return sorted(outcomes, key=lambda o: (seeds.index(o.seed), shown.index(o.variant)))


def trained_with(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's settings as its study asked for them: the config before its variant's own changes (bigbatch's batch is
    asked for as the study's), and EPOCHS as the epochs it trained (a finished run reused with more than asked for)."""
    requested = {k: v["requested"] for k, v in (metrics.get("variant_overrides") or {}).items()}
    return {**metrics.get("config", {}), **requested, "epochs": metrics.get("epochs")}


def base_record(base: BaseSettings, outcomes: list[RunOutcome]) -> dict[str, Any]:
    """``ablation.json``'s ``base``: the base run, and each override of 04 with the rows it does *not* hold for
    (``not_held_by``: {row: the value that row trained with}), so the table never claims more than happened."""
    record = {**base.record(), "synthetic": synthetic_artifacts(base.paths.artifacts_dir)}  # the data's own record says
    several = len({o.seed for o in outcomes}) > 1
    for name, override in record["overrides"].items():
        override["not_held_by"] = {
            f"{o.variant} (seed {o.seed})" if several else o.variant: o.trained.get(name)
            for o in outcomes
            if o.trained is not None and o.trained.get(name) != override["here"]
        }
    return record


def _cached_or_new_eval(cfg: Config, paths: Paths, progress: bool) -> dict[str, Any]:
    """Reuse the run's results of ``cfg.eval_split`` when they scored its current best checkpoint with the study's 03 cells;
    else evaluate."""
    try:
        record = load_eval(RunDir.named(paths, cfg.run_name), cfg.eval_split)
        if scored_by_these_cells(record, cfg):
            return record
    except ArtifactError:  # absent, damaged, or scored an earlier model of the run: score the current one
        pass
    return evaluate(cfg, paths, progress=progress).record


def scored_by_these_cells(record: dict[str, Any], cfg: Config) -> bool:
    """Whether a results record was scored by the notebook-03 cells this study scores with: figures of another Recall@K
    code (03's kernel with an unsaved edit, or an edit since) are never tabled beside this study's own."""
    return (record.get("lab_code") or {}).get("digest") == cfg.lab.digest(EVALUATION)


def _cached_or_new_transfer(cfg: Config, paths: Paths, progress: bool) -> dict[str, float]:
    """The run's Flickr30k transfer figures (FLICKR30K): reused while they scored its current best checkpoint with the
    study's 03 cells; else the run is scored there (its weights read as 03 reads them; its COCO results and figures are
    left as they are)."""
    try:
        record = load_eval(RunDir.named(paths, cfg.run_name), TRANSFER_SPLIT)
        if scored_by_these_cells(record, cfg):
            return record["metrics"]
    except ArtifactError:
        pass
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return evaluate_transfer(cfg, paths, load_eval_data(cfg, paths, device), progress)["metrics"]


def summarise(outcomes: list[RunOutcome]) -> dict[str, dict[str, Any]]:
    """Per variant: mean and std (over seeds) of each metric, its delta to the baseline, minutes."""
    by_variant: dict[str, list[RunOutcome]] = {}
    for o in outcomes:
        by_variant.setdefault(o.variant, []).append(o)
    table: dict[str, dict[str, Any]] = {}
    for variant, runs in by_variant.items():
        row: dict[str, Any] = {"seeds": [r.seed for r in runs], "runs": [r.run_name for r in runs]}
        for key in METRIC_KEYS:
            values = [100 * r.metrics[key] for r in runs]
            row[key] = statistics.fmean(values)
            row[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["train_minutes"] = statistics.fmean(r.train_minutes for r in runs)
        if all(r.val_metrics for r in runs):  # val: every Recall@K too (the comparison summary reads them)
            for key in METRIC_KEYS:
                values = [100 * r.val_metrics[key] for r in runs if key in r.val_metrics]
                if len(values) == len(runs):
                    row["val_" + key] = statistics.fmean(values)
                    row["val_" + key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        if all(r.flickr_metrics for r in runs):  # FLICKR30K: the transfer's Recall@K beside the test split's
            for key in METRIC_KEYS:
                values = [100 * r.flickr_metrics[key] for r in runs]  # type: ignore[index]
                row["flickr_" + key] = statistics.fmean(values)
                row["flickr_" + key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table[variant] = row
    base = table.get(BASELINE)
    for row in table.values():
        keys = METRIC_KEYS + tuple(f"{split}_{k}" for split in ("val", "flickr") for k in METRIC_KEYS
                                   if f"{split}_{k}" in row and base and f"{split}_{k}" in base)  # fmt: skip
        for key in keys:
            row[key + "_delta"] = row[key] - base[key] if base else None
            spread = max(row[key + "_std"], base[key + "_std"]) if base else 0.0
            row[key + "_within_noise"] = bool(base) and len(row["seeds"]) > 1 and abs(row[key + "_delta"]) <= spread
    return table


def chosen_variant(table: dict[str, dict[str, Any]]) -> str | None:
    """The variant with the highest mean val rsum: the choice the val split makes (None without val figures)."""
    scored = {v: row["val_rsum"] for v, row in table.items() if "val_rsum" in row}
    return max(scored, key=scored.__getitem__) if scored else None


def table_markdown(table: dict[str, dict[str, Any]], base: dict[str, Any] | None = None) -> str:
    """Val rsum (compares), test R@1/5/10 both directions and rsum (reported), training time; deltas against the baseline;
    then the base run and every setting the study overrode (``base``: :meth:`BaseSettings.record`)."""
    multi = any(len(r["seeds"]) > 1 for r in table.values())
    chosen = chosen_variant(table)
    synthetic = [f"**{SYNTHETIC_WORDS}: every figure below comes from generated images (the offline demo), not MS COCO.**", ""]

    def cell(row: dict[str, Any], key: str) -> str:
        if key not in row:
            return "—"
        text = f"{row[key]:.1f}" + (f" ± {row[key + '_std']:.1f}" if multi else "")
        delta = row.get(key + "_delta")
        if delta is not None and row is not table.get(BASELINE):
            text += f" ({delta:+.1f}{'~' if row[key + '_within_noise'] else ''})"
        return text

    flickr = any("flickr_rsum" in row for row in table.values())  # FLICKR30K: transfer columns beside the test split's
    header = ["variant", "**val rsum** (compares)", "test I→T R@1", "I→T R@5", "I→T R@10", "T→I R@1", "T→I R@5", "T→I R@10",
              "test rsum", *(["Flickr30k I→T R@1", "Flickr30k T→I R@1", "Flickr30k rsum"] if flickr else []),
              "training time (m:ss)"]  # fmt: skip
    transfer = ("flickr_i2t_R@1", "flickr_t2i_R@1", "flickr_rsum") if flickr else ()
    rows = [
        [f"**{variant}** ★" if variant == chosen else variant, cell(row, "val_rsum"), *(cell(row, k) for k in METRIC_KEYS),
         *(cell(row, k) for k in transfer), markdown.duration(60 * row["train_minutes"])]
        for variant, row in sorted(table.items(), key=lambda item: item[0] != BASELINE)  # baseline first, then the table's order
    ]  # fmt: skip
    lines = [*(synthetic if (base or {}).get("synthetic") else []), markdown.table(header, rows, numeric=range(1, len(header)))]
    seeds = sorted({s for r in table.values() for s in r["seeds"]})
    lines += [
        "",
        "Variants are **compared on the val split** (rsum: the sum of the six Recall@K, out of 600); ★ marks the one val "
        "chooses. Test-split Recall@K (in %) is reported for every variant and never used to choose. "
        f"(±x.x) is the change against the baseline. Seeds: {seeds}.",
    ]
    if flickr:
        lines[-1] += (" The Flickr30k columns score each run on Flickr30k's 1k test split (transfer to photos none of them "
                      "trained on; reported, never used to choose).")  # fmt: skip
    if multi:
        lines.append("`~` marks a change no larger than the standard deviation across seeds: indistinguishable from noise.")
    else:
        lines.append("One seed only: differences of a point or two may be noise. Add seeds (SEEDS = [0, 1, 2]) to measure the spread.")
    lines += ["", overrides_markdown(base)]
    return "\n".join(lines)


COMPARISON_QUESTIONS = (
    "Which modification helped, and which did not? By how much: the val rsum change, and test R@1 in both directions?",
    "Is each change beyond the spread across seeds (`~` marks one that is not)? With one seed the spread is unknown: say so.",
    "Did a variant trade one direction for the other (image→text against text→image), or R@1 for R@10?",
    "Why might it have helped or hurt here (data size, epochs, the baseline's weaknesses)? What would you try next?",
)  # the handout's questions: notebook 04 ends with them, the report's section 10 leaves them to the student


def questions_markdown() -> str:
    """The comparison the student writes, as a marked quote block of the handout's questions (nothing is answered)."""
    lines = ["> **Your comparison: write it yourself.** Answer from the table and the chart, in your own words:", ">"]
    return "\n".join([*lines, *(f"> - {q}" for q in COMPARISON_QUESTIONS)])


SHORT_NAMES = {"i2t_R@1": "I→T R@1", "i2t_R@5": "R@5", "i2t_R@10": "R@10", "t2i_R@1": "T→I R@1", "t2i_R@5": "R@5", "t2i_R@10": "R@10"}


def _moved(delta: float, unit: str) -> str:
    """A change in words, from its sign: "rose by 3.2 points", "fell by 0.4 points", "did not change"."""
    if round(delta, 1) == 0:
        return "did not change (±0.0)"
    return f"{'rose' if delta > 0 else 'fell'} by {abs(delta):.1f} {unit}"


def _split_changes(row: dict[str, Any], prefix: str) -> str | None:
    """One split's changes against the baseline: rsum in words, then the six Recall@K as signed figures."""
    if row.get(prefix + "rsum_delta") is None:
        return None
    shown = [k for k in RECALL_KEYS if row.get(prefix + k + "_delta") is not None]
    recalls = ", ".join(f"{SHORT_NAMES[k]} {row[prefix + k + '_delta']:+.1f}" for k in shown)
    return f"rsum {_moved(row[prefix + 'rsum_delta'], 'points of 600')}" + (f" ({recalls})" if recalls else "")


def _spread_sentence(row: dict[str, Any]) -> str:
    """Whether the changes are outside the spread across seeds, or that one seed cannot tell."""
    if len(row["seeds"]) < 2:
        return "With one seed the spread across seeds is unknown: no change here can be told from noise."
    keys = [k for k in ("val_rsum", *(("val_" + k) for k in RECALL_KEYS), "rsum", *RECALL_KEYS) if k + "_within_noise" in row]
    outside = [k for k in keys if not row[k + "_within_noise"]]
    val_rsum = "outside" if "val_rsum" in outside else "within"
    return (
        f"Across {len(row['seeds'])} seeds, the val rsum change is {val_rsum} the spread (standard deviation); "
        f"{len(outside)} of the {len(keys)} changes listed are outside it."
    )


def comparison_summary(table: dict[str, dict[str, Any]]) -> list[str]:
    """The handout's generated comparison (2.5.3): per modification its val and test changes against the baseline (rsum
    and each Recall@K), whether they are outside the seeds' spread, then the variant val chooses and where test puts it.
    Every sentence is computed from ``table`` (:func:`summarise`); the interpretation stays the student's."""
    if BASELINE not in table:
        return ["No baseline row in this study: no change can be computed."]
    lines = []
    for variant, row in table.items():
        if variant == BASELINE:
            continue
        parts = [f"**{variant}** against the baseline:"]
        for split, prefix in (("val", "val_"), ("test", "")):
            changes = _split_changes(row, prefix)
            parts.append(f"On {split}, {changes}." if changes else f"On {split}, not scored.")
        parts.append(_spread_sentence(row))
        lines.append(" ".join(parts))
    chosen = chosen_variant(table)
    if chosen is None:
        lines.append("Val chooses no variant: the study has no val figures.")
        return lines
    by_test = sorted(table, key=lambda v: table[v]["rsum"], reverse=True)
    best_test = by_test[0]
    verdict = "Test agrees" if best_test == chosen else f"Test would rank **{best_test}** first (test is reported, never used to choose)"
    lines.append(
        f"Val chooses **{chosen}** (val rsum {table[chosen]['val_rsum']:.1f} of 600"
        + ("" if chosen == BASELINE else f", {table[chosen]['val_rsum_delta']:+.1f} against the baseline")
        + f"); on test it ranks {by_test.index(chosen) + 1} of {len(table)} by rsum. {verdict}."
    )
    return lines


def comparison_markdown(table: dict[str, dict[str, Any]]) -> str:
    """:func:`comparison_summary` as a Markdown list under its heading words: computed, not written by anyone."""
    return "\n".join(["**Generated comparison** (computed from the table; the interpretation is yours):", "",
                      *(f"- {line}" for line in comparison_summary(table))])  # fmt: skip


def in_order(record: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """``ablation.json``'s table and its modifications' records in the study's order (``order``: the baseline, then
    VARIANTS), not the alphabetical order a JSON file keeps its keys in. A record without ``order``: the baseline first."""
    table = record["table"]
    order = [v for v in record.get("order") or sorted(table, key=lambda v: v != BASELINE) if v in table]
    described = record.get("variants") or describe(order)  # an ablation.json of an earlier kit: today's records
    used = flags_of(order)
    flags = [f for f in used if f in described] + [f for f in described if f not in used]
    return {v: table[v] for v in order}, {f: described[f] for f in flags}


def variants_markdown(described: dict[str, dict[str, Any]]) -> str:
    """What each modification of the study changes, why, and its code: from ``ablation.json``'s ``variants``
    (:func:`helpers.clip.variants.describe`), so a student's own modification reads as it trained."""
    rows = [[f"`{name}`" + ("" if d.get("builtin", True) else " (yours)"), d["changes"], d["why"]] for name, d in described.items()]
    parts = [markdown.table(["variant", "what changes", "why it might help"], rows)]
    parts += ["", "The code of each modification (the baseline's is untouched):"]
    parts += ["\n" + d["code"] for d in described.values()]
    return "\n".join(parts) if described else "No modification beside the baseline."


def delta_chart(table: dict[str, dict[str, Any]]) -> Any:
    """Left: each variant's val rsum change (the comparison). Right: its test Recall@K changes (the report).
    Error bars: the standard deviation across seeds."""
    import matplotlib.pyplot as plt
    import numpy as np

    variants = [v for v in table if v != BASELINE]
    fig, (ax_val, ax) = plt.subplots(1, 2, figsize=(max(10, 1.6 * len(RECALL_KEYS) + 4), 4.4), gridspec_kw={"width_ratios": [1, 3]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    with_val = [v for v in variants if table[v].get("val_rsum_delta") is not None]
    val_bars = ax_val.bar(
        range(len(with_val)),
        [table[v]["val_rsum_delta"] for v in with_val],
        yerr=[table[v]["val_rsum_std"] for v in with_val] if any(table[v]["val_rsum_std"] for v in with_val) else None,
        color=[colours[variants.index(v) % len(colours)] for v in with_val],
        capsize=3,
    )
    ax_val.bar_label(val_bars, fmt="%+.1f", fontsize=7, padding=2)  # a +0.0 change is a labelled bar, not missing data
    ax_val.set_xticks(range(len(with_val)), with_val, rotation=30, ha="right", fontsize=8)
    ax_val.set(title="val rsum change (compares)", ylabel="change vs baseline (rsum points, of 600)")
    width = 0.8 / max(1, len(variants))
    x = np.arange(len(RECALL_KEYS))
    for i, variant in enumerate(variants):
        row = table[variant]
        deltas = [row[k + "_delta"] or 0.0 for k in RECALL_KEYS]
        errors = [row[k + "_std"] for k in RECALL_KEYS]
        bars = ax.bar(
            x + (i - (len(variants) - 1) / 2) * width, deltas, width, yerr=errors if any(errors) else None, label=variant, capsize=3,
            color=colours[i % len(colours)],
        )  # fmt: skip
        ax.bar_label(bars, fmt="%+.1f", fontsize=6 if len(variants) > 2 else 7, padding=2)
    ax.set_xticks(x, [k.replace("i2t_", "I→T ").replace("t2i_", "T→I ") for k in RECALL_KEYS])
    ax.set(title="test Recall@K change (reported, never used to choose)", ylabel="change vs baseline (Recall@K, percentage points)")
    if variants:
        ax.legend(fontsize=8)
    for a in (ax_val, ax):
        a.axhline(0, color="black", linewidth=0.8)
        a.grid(axis="y", alpha=0.3)
        low, high = a.get_ylim()
        pad = 0.12 * (high - low) or 1.0  # room for the value labels on both sides of zero (bars stick to 0 otherwise)
        a.set_ylim(min(low, 0) - pad, max(high, 0) + pad)
    fig.suptitle("Ablation against the baseline")
    fig.tight_layout()
    return fig


STUDIES = "studies"  # ablation/studies/<study>/: every study's files, kept when the next one is written


def study_name(record: dict[str, Any]) -> str:
    """A study's folder name: its base run, its variants and seeds in words, and a digest of all that defines it (the
    base run's overrides, the runs it compares). The same study run again gets the same name; any other study, another."""
    variants = ",".join(v for v in record["order"] if v != BASELINE) or BASELINE
    seeds = "-".join(str(s) for s in sorted({o["seed"] for o in record["runs"]}))
    words = re.sub(r"[^A-Za-z0-9_.,+=-]", "-", f"{record['base'].get('run') or 'defaults'}__{variants}__seeds-{seeds}")[:100]
    runs = sorted(str(o["run_name"]) for o in record["runs"])  # each names its code: an edited modification is another study
    return f"{words}__{digest([record['order'], seeds, record['base'].get('run'), record['base'].get('overrides'), runs])[:8]}"


def kept_studies(out_dir: Path) -> list[str]:
    """The studies kept under ``ablation/studies/`` (those with an ablation.json), oldest first."""
    folders = [p for p in (out_dir / STUDIES).glob("*/ablation.json")] if (out_dir / STUDIES).is_dir() else []
    return [p.parent.name for p in sorted(folders, key=lambda p: (p.stat().st_mtime, p.parent.name))]


def save(table: dict[str, dict[str, Any]], outcomes: list[RunOutcome], base: BaseSettings, out_dir: Path) -> Path:
    """``ablation.json`` (+ ``ablation.md``, the chart): the table, every run, the config and the base run with the
    overrides, for notebook 05. Written twice: into ``studies/<study>/`` (kept when another study follows) and at the top
    of ``out_dir`` (the newest study, the one the report shows). Returns the chart at the top."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "table": table,
        "runs": [o.__dict__ for o in outcomes],
        "config": base.cfg.to_dict(),
        "base": base_record(base, outcomes),
        "variants": describe(list(table), base.cfg.lab),  # each modification's text and code as it trained (a student's too)
        "scored_by": {"digest": base.cfg.lab.digest(EVALUATION), "edited": base.cfg.lab.edited(EVALUATION)},  # 03's cells, as 04 ran them
        "order": list(table),  # the baseline, then VARIANTS' order: every reader shows the rows so (JSON sorts keys)
        "chart": "ablation_recall_delta.png",
    }
    record["study"] = study_name(record)
    record = seal(record)  # a hand edit of the table is noticed by the report
    import matplotlib.pyplot as plt

    fig = delta_chart(table)
    for folder in (out_dir / STUDIES / record["study"], out_dir):  # the kept copy first: the top is never ahead of it
        save_figure(fig, folder / record["chart"])
        atomic_write_text(folder / "ablation.md", "\n\n".join([table_markdown(table, record["base"]), comparison_markdown(table)]) + "\n")
        atomic_write_json(folder / "ablation.json", record)
    plt.close(fig)  # the notebook shows the saved PNG once; an open figure would be drawn a second time
    return out_dir / record["chart"]
