"""Zero-shot classification over COCO's object categories: the run and zero-shot CLIP on the same images.

Why: section 2.4 asks for image -> class on a few pictures; COCO's own annotations turn the same question into figures
for the whole split. Each category name is put into CATEGORY_PROMPT ("a photo of a {}."), encoded once by the frozen
text tower with notebook 01's ``encode_text`` (the cell that encoded the cached captions: one text space), and scored
by notebook 03's lab cell (``category_scores``, ``top_k_accuracy``, ``average_precision``). Top-1/top-5 accuracy count
an image as right when one of its categories is among the best k; mAP is the mean over the categories that occur of
their average precision. A random ranking's expected figures are printed beside them, computed from the labels.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from ..core import markdown
from ..core.config import Config
from ..core.lab import call_yours, came_back
from ..core.provenance import text_tower_id, tower_of
from ..data.categories import Categories, load_categories
from ..data.dataset import data_code
from ..data.text_tower import TextTower, display_name, encode_texts, load_text_tower

TOP_K = (1, 5)


def score_categories(cfg: Config, data: Any, features: torch.Tensor, zero_shot: torch.Tensor | None,
                     artifacts_dir: Any, device: torch.device) -> tuple[dict[str, Any], TextTower | None]:  # fmt: skip
    """The ``classification`` entry of ``eval_<split>.json`` (``{"skipped": why}`` when it cannot be scored) and the text
    tower it loaded (03's live queries reuse it)."""
    image_ids = data.dataset.image_ids
    categories = load_categories(artifacts_dir, (data.source or {}).get("val2014"), image_ids)
    if isinstance(categories, str):
        return {"skipped": categories}, None
    if text_tower_id(cfg.text_model) != tower_of(data.text):
        return {"skipped": f"TEXT_MODEL={cfg.text_model!r} is not the text tower that encoded the cached captions: "
                           "its prompts would land in another text space. Re-run 01_dataset_prep.ipynb."}, None  # fmt: skip
    tower = _tower(cfg.text_model, text_tower_id(cfg.text_model), str(device))
    prompts = [cfg.category_prompt.format(name) for name in categories.names]
    prompt_features = encode_texts(data_code(data.text), prompts, tower).float()  # notebook 01's cell, as the captions were encoded
    labels = categories.matrix(image_ids)
    record = {
        "prompt": cfg.category_prompt,
        "categories": len(categories.names),
        "categories_present": int(labels.any(0).sum()),
        "images": len(image_ids),
        "images_with_objects": int(labels.any(1).sum()),
        "instances_sha256": categories.sha256,
        "edited": "03:zero-shot-classification" in cfg.lab.edited(("03",)),  # the student's own cell scored it: the table says so
        "synthetic": categories.synthetic,  # the generated shapes' categories (the demo's), not COCO's: every table says so
        "chance": chance(labels),
        "run": _summary(cfg, features, prompt_features, labels, categories),
        "zero_shot": _summary(cfg, zero_shot, prompt_features, labels, categories) if zero_shot is not None else None,
        "zero_shot_model": display_name(cfg.text_model) if zero_shot is not None else None,  # the tables name what was measured
    }
    return record, tower


@functools.lru_cache(maxsize=1)
def _tower(name: str, tower_id: str, device: str) -> TextTower:
    """The frozen text tower, loaded once per process for every evaluation (04 scores val and test of each run): keyed by
    its content id too, so a folder that now holds another tower is loaded again."""
    return load_text_tower(name, device)


def _summary(cfg: Config, features: torch.Tensor, prompt_features: torch.Tensor, labels: torch.Tensor,
             categories: Categories) -> dict[str, Any]:  # fmt: skip
    lab = cfg.lab  # notebook 03's cells, as its kernel ran them
    expected = (len(features), len(categories.names))
    scores = call_yours(lab, "category_scores", features.float().cpu(), prompt_features.cpu(),
                        check=lambda out: _scores_problem(out, expected))  # fmt: skip
    ap = call_yours(lab, "average_precision", scores, labels, check=lambda out: _ap_problem(out, expected[1]))
    ap = [float(v) for v in (ap.tolist() if torch.is_tensor(ap) else ap)]
    present = [v for v in ap if not math.isnan(v)]
    out: dict[str, Any] = {f"top{k}": float(call_yours(lab, "top_k_accuracy", scores, labels, k, check=_accuracy_problem)) for k in TOP_K}
    out["mAP"] = sum(present) / len(present) if present else float("nan")
    out["ap"] = {name: v for name, v in zip(categories.names, ap, strict=True) if not math.isnan(v)}
    return out


def _scores_problem(out: Any, expected: tuple[int, int]) -> str | None:
    if not torch.is_tensor(out) or tuple(out.shape) != expected:
        return f"{came_back(out)}; the kit needs one score per image and category, a tensor of shape {expected}"
    if not torch.isfinite(out).all():
        return "scores that hold NaN or infinity; a ranking of them means nothing"
    return None


def _ap_problem(out: Any, categories: int) -> str | None:
    """One AP per category, each in [0, 1] or NaN (a category no image holds)."""
    values = out.tolist() if torch.is_tensor(out) and out.dim() == 1 else out if isinstance(out, (list, tuple)) else None
    if values is None or len(values) != categories:
        return f"{came_back(out)}; the kit needs one average precision per category, {categories} numbers (NaN where no image holds it)"
    bad = next((v for v in values if not isinstance(v, (int, float)) or not (math.isnan(v) or 0 <= v <= 1)), None)
    if bad is not None:
        return f"an average precision of {bad!r}; each is a fraction in [0, 1], or NaN for a category no image holds"
    return None


def _accuracy_problem(out: Any) -> str | None:
    if torch.is_tensor(out) and out.numel() == 1:
        out = out.item()
    if not isinstance(out, (int, float)) or isinstance(out, bool):
        return f"{came_back(out)}; the kit needs one number, the fraction of images counted as right"
    if not (math.isnan(out) or 0 <= out <= 1):
        return f"{out!r}; an accuracy is a fraction in [0, 1] (the tables show it x 100, in percent)"
    return None


def chance(labels: torch.Tensor) -> dict[str, float]:
    """What a random ranking of the categories scores on these labels, in expectation: top-k is the chance that k
    categories drawn at random include one of an image's (over images with an object); AP, about the category's share
    of images (its prevalence), averaged like mAP."""
    n_classes = labels.shape[1]
    held = labels.sum(1)[labels.any(1)].tolist()
    out = {}
    for k in TOP_K:
        drawn = min(k, n_classes)
        miss = [math.comb(n_classes - int(h), drawn) / math.comb(n_classes, drawn) for h in held]
        out[f"top{k}"] = 1 - sum(miss) / len(miss) if miss else float("nan")
    prevalence = labels.float().mean(0)[labels.any(0)]
    out["mAP"] = float(prevalence.mean()) if len(prevalence) else float("nan")
    return out


SYNTHETIC_CATEGORIES = (
    "**SYNTHETIC DATA: the categories are the generated shapes' colours and forms (\"red circle\"), not COCO's 80 "
    "object categories: the figures test the pipeline, not a model.**"
)


def edited_lines(keys: list[str]) -> list[str]:
    """The lines that say a table was computed by the student's edited lab cells ``keys`` ("03:recall-at-k"), not the
    notebook's: a pasted table says which code made it. None for no edited cell."""
    if not keys:
        return []
    names = ", ".join(f"`{key.split(':', 1)[1]}` ({key.split(':', 1)[0]})" for key in keys)
    return [f"**Computed by your edited lab cell {names}, not the notebook's:** these figures follow the standard "
            "definitions only as far as your edit does; say what you changed wherever you quote them.", ""]  # fmt: skip


def _zero_shot_name(record: dict[str, Any]) -> str:
    return str(record.get("zero_shot_model") or "CLIP")  # a record of an earlier kit named no model: CLIP, as it then was


def classification_markdown(record: dict[str, Any] | None, model_name: str = "this run") -> str:
    """The table of 03 and the report: top-1, top-5 and mAP in %, for the run, zero-shot CLIP and a random ranking."""
    if not record:
        return "*Classification over COCO's categories: not scored (this evaluation predates it: re-run 03).*"
    if "skipped" in record:
        return f"*Classification over COCO's categories: skipped. {record['skipped']}*"
    pct = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"  # noqa: E731
    header = ["model", "top-1 %", "top-5 %", f"mAP % ({record['categories_present']} categories)"]
    rows = [[model_name, *(pct(record["run"][k]) for k in ("top1", "top5", "mAP"))]]
    if record.get("zero_shot"):
        zero_shot = record["zero_shot"]
        rows.append([f"zero-shot {_zero_shot_name(record)} (measured here)", *(pct(zero_shot[k]) for k in ("top1", "top5", "mAP"))])
    rows.append(["random ranking (expected)", *(pct(record["chance"].get(k)) for k in ("top1", "top5", "mAP"))])
    lines = [SYNTHETIC_CATEGORIES, ""] if record.get("synthetic") else []
    lines += edited_lines(["03:zero-shot-classification"] if record.get("edited") else [])
    lines += [markdown.table(header, rows, numeric=range(1, 4)), ""]
    lines.append(
        f"Each of the {record['categories']} categories is scored through the prompt `{record['prompt']}`. Top-k: an image counts "
        f"when one of its categories is among the k best (ties count against it); {record['images_with_objects']:,} of the "
        f"{record['images']:,} images hold an annotated object and are counted (the others only enter mAP, as negatives). "
        "mAP: the mean over the categories present of their average precision over the images."
        + ("" if record.get("zero_shot") else " `COMPARE_ZERO_SHOT=True` adds zero-shot CLIP on the same images.")
    )
    return "\n".join(lines)


def category_figure(record: dict[str, Any], n: int = 10) -> Any:
    """Average precision of the best and the worst ``n`` categories of the run (all of them when there are few), with
    zero-shot CLIP's beside each when it was measured."""
    import matplotlib.pyplot as plt

    ap = record["run"]["ap"]
    ranked = sorted(ap, key=ap.__getitem__, reverse=True)
    shown = ranked if len(ranked) <= 2 * n else ranked[:n] + ranked[-n:]
    reference = (record.get("zero_shot") or {}).get("ap")
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(shown) + 1.4))
    y = list(range(len(shown)))[::-1]
    height = 0.4 if reference else 0.7
    ax.barh([v + (height / 2 if reference else 0) for v in y], [100 * ap[c] for c in shown], height, color="tab:blue", label="this run")
    if reference:
        ax.barh([v - height / 2 for v in y], [100 * reference.get(c, float("nan")) for c in shown], height, color="tab:gray",
                label=f"zero-shot {_zero_shot_name(record)}")  # fmt: skip
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, shown, fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("average precision (%)")
    if len(shown) < len(ranked):
        ax.axhline(n - 0.5, color="black", linewidth=0.8, linestyle="--")  # best above, worst below
    what = "every category" if len(shown) == len(ranked) else f"the {n} best and the {n} worst of {len(ranked)} categories"
    ax.set_title(f"Zero-shot classification: average precision per category ({what})\nprompt: {record['prompt']}", fontsize=10)
    fig.tight_layout()
    return fig
