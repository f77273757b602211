"""What a run, a study and the whole lab cost: on this device (from its measured step rates) and on a Colab T4.

Why its own module: the doctor (``python -m helpers.doctor``, notebook 02) and notebook 04's plan must give the same
figure for the same settings, so both call :func:`plan`. Nothing here measures: the rates come in (the doctor times
them), which is also what lets a test feed rates and check the verdict both ways.

No published figure gives ResNet-50 *training* on a T4. The T4's rate is therefore derived, with its range:

- NVIDIA DeepLearningExamples, ``PyTorch/Classification/ConvNets/resnet50v1.5/README.md`` (inference tables, mixed
  precision, batch 256): T4 **1,198 img/s**, V100 16GB **3,382 img/s**: a T4 does 0.354 of a V100's work.
- V100 16GB ResNet-50 mixed-precision *training* on one GPU: **833 img/s** (Lambda, ``lambdal/deeplearning-benchmark``,
  ``pytorch/pytorch-train-throughput-fp16.csv``, row "LambdaCloud V100 16GB") and **1,200 img/s** (the same NVIDIA
  README, "Training performance: NVIDIA DGX-1 16GB", 1 GPU).
- Hence a T4 trains ResNet-50 at 0.354 x 833-1,200 = **295-425 img/s** at 224 px (the inference ratio is assumed to
  hold for training: the derived part).
- Another GPU's training rate in the same Lambda CSV, over 295-425, gives its ratio to a T4 (:data:`T4_RATIOS`).

A T4 is compute-bound, so a lower training size is assumed to speed it up by the pixel ratio (224² / 160² = 1.96x);
that is an upper bound, not measured on a T4.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..clip.flags import Recipe, parse_variant
from ..core import resolution
from ..core.markdown import duration

T4_TRAIN_IMG_S = (295.0, 425.0)  # ResNet-50, 224 px, mixed precision: derived above (slow end, fast end)
T4_SIZE = 224
# GPU name (as torch reports it, first match wins) -> (low, high) times a T4's training rate. Lambda's fp16 ResNet-50
# training rate of that GPU over the T4's 425 (low) and 295 (high) img/s.
T4_RATIOS: tuple[tuple[str, tuple[float, float], str], ...] = (
    ("T4", (1.0, 1.0), "a T4"),
    ("H100 PCIe", (1866 / 425, 1866 / 295), "Lambda: H100 80GB PCIe Gen5, 1,866 img/s"),
    ("H100", (2616 / 425, 2616 / 295), "Lambda: H100 80GB SXM5, 2,616 img/s"),
    ("H200", (2616 / 425, 2616 / 295), "taken as an H100 SXM5 (same GH100 compute; Lambda lists no H200)"),
    ("A100", (1396 / 425, 1582 / 295), "Lambda: A100 40GB PCIe 1,396 to A100 80GB SXM4 1,582 img/s"),
    ("A10", (638 / 425, 638 / 295), "Lambda: A10, 638 img/s"),
    ("V100", (833 / 425, 833 / 295), "Lambda: V100 16GB, 833 img/s"),
)
# What notebook 01 costs before the first training, on Colab with all of COCO (docs/PERFORMANCE.md, time budget):
# download 8-20 min, extraction 3-5, the image cache 4, the caption cache 1-2.
PREP_MINUTES = (16.0, 31.0)
COCO_2014_IMAGES = 123_287  # train2014 + val2014: what PREP_MINUTES prepares; a smaller dataset costs its share
EVAL_MINUTES_PER_RUN = 1.0  # the 5k test split: 5k image forwards and Recall@K (< 1 min on a T4); with it the
# classification over COCO's 80 categories (80 prompts encoded once, one [5k, 80] product: seconds)
# FLICKR30K=True in 03 (docs/PERFORMANCE.md): 134 MB downloaded, 1k images cached and 5k captions encoded, once; then
# 1k image forwards per evaluation. Derived from the COCO figures above (386 img/s caching, 20-40 MB/s download).
FLICKR_PREP_MINUTES = (0.5, 1.5)
FLICKR_EVAL_MINUTES = 0.2
COLAB_LOADER_IMG_S = 1_745.0  # the loader on 2 vCPUs (Colab's), measured: docs/PERFORMANCE.md
# A free Colab session: runtimes last at most 12 h (Colab's FAQ), but GPU time is limited by unpublished, changing
# quotas; the kit plans for 3 h of T4 with margin, and every notebook resumes after a disconnect.
FREE_SESSION_MINUTES = 180.0


@dataclass(frozen=True)
class Rates:
    """Measured on this device: the training step's img/s by image size, the loader's img/s (None: no cache yet)."""

    device: str  # the GPU's name as torch reports it, or "CPU"
    step: dict[int, float]
    loader: float | None = None

    def at(self, size: int) -> float:
        """The step's rate at ``size``: measured, or scaled by the pixel ratio from the nearest measured size."""
        if size in self.step:
            return self.step[size]
        nearest = min(self.step, key=lambda s: abs(s - size))
        return self.step[nearest] * (nearest / size) ** 2


def t4_ratio(device: str) -> tuple[tuple[float, float], str] | None:
    """(low, high) times a T4 for a GPU ``device`` and the source, or None (a CPU, or a GPU no source covers)."""
    for key, ratio, source in T4_RATIOS:
        if key.lower() in device.lower():
            return ratio, source
    return None


def t4_rate_at_size(rates: Rates, image_size: int) -> tuple[tuple[float, float], str]:
    """(slow, fast) img/s a T4 would train this recipe at ``image_size``, and how that was derived."""
    known = t4_ratio(rates.device)
    if known is not None:
        (low, high), source = known
        measured = rates.at(image_size)
        return (measured / high, measured / low), f"measured here ({rates.device}) ÷ {low:.1f}-{high:.1f} ({source})"
    scale = (T4_SIZE / image_size) ** 2
    slow, fast = T4_TRAIN_IMG_S
    return (slow * scale, fast * scale), "published ResNet-50 rates (no ratio for this device): 295-425 img/s at 224 px"


@dataclass
class RunCost:
    """One training run's predicted minutes: here, and on a T4 (slow end, fast end)."""

    name: str
    epochs: int
    train_sizes: list[int]
    image_size: int
    train_images: int
    minutes: float
    t4_minutes: tuple[float, float]

    def schedule(self) -> str:
        return resolution.describe(self.train_sizes, self.image_size, self.epochs)


@dataclass
class Plan:
    """The configured run, every variant of the study (cheapest first), and the whole lab on a T4."""

    run: RunCost
    variants: list[RunCost]
    t4_basis: str
    session_minutes: float = FREE_SESSION_MINUTES
    suggestions: list[tuple[str, tuple[float, float]]] = field(default_factory=list)  # (what to set, lab minutes on a T4)
    prep_images: int | None = None  # the images notebook 01 prepares (None: all of COCO 2014, before 01 has run)
    flickr: bool = False  # FLICKR30K: 03 also prepares and scores Flickr30k's 1k test split (once, for the main run)

    @property
    def data_share(self) -> float:
        """The data in hand as a share of COCO 2014's images: what notebook 01 and each evaluation cost of COCO's."""
        return 1.0 if self.prep_images is None else min(1.0, self.prep_images / COCO_2014_IMAGES)

    @property
    def study_minutes(self) -> float:
        return sum(v.minutes for v in self.variants)

    @property
    def study_t4_minutes(self) -> tuple[float, float]:
        return (sum(v.t4_minutes[0] for v in self.variants), sum(v.t4_minutes[1] for v in self.variants))

    @property
    def lab_t4_minutes(self) -> tuple[float, float]:
        """Prep + the configured run + the study + one evaluation per run, on a T4 (slow end, fast end)."""
        return lab_minutes(self.run, self.variants, self.data_share, self.flickr)

    def fits(self) -> bool | None:
        """True: the lab fits one free session even at the T4's slow end; False: not even at its fast end; None: between."""
        slow, fast = self.lab_t4_minutes
        return True if slow <= self.session_minutes else False if fast > self.session_minutes else None

    def verdict(self) -> str:
        slow, fast = self.lab_t4_minutes
        span = f"{minutes_text(fast)}-{minutes_text(slow)}"
        limit = f"one free Colab session (planned as {minutes_text(self.session_minutes)} of T4)"
        fits = self.fits()
        if fits:
            return f"The whole lab is predicted to take {span} on a Colab T4: it fits {limit}."
        if fits is None:
            return f"The whole lab is predicted to take {span} on a Colab T4: it fits {limit} only at the T4's fast end."
        return f"The whole lab is predicted to take {span} on a Colab T4: more than {limit}."


def minutes_text(minutes: float) -> str:
    """``"42:10"``, ``"2:05:00"``: a predicted time as every time prints (m:ss, h:mm:ss from an hour)."""
    return duration(60 * minutes)


def lab_minutes(run: RunCost, variants: Sequence[RunCost], share: float = 1.0, flickr: bool = False) -> tuple[float, float]:
    """On a T4 (slow end, fast end): notebook 01's preparation and one evaluation per run, both at ``share`` of their
    cost for all of COCO (the data in hand against COCO's images), plus every run's training; with ``flickr``, 03's
    Flickr30k transfer (prepared once, scored once)."""
    runs = [run, *variants]
    evaluation = EVAL_MINUTES_PER_RUN * share * len(runs)
    slow_flickr, fast_flickr = flickr_minutes() if flickr else (0.0, 0.0)
    slow = PREP_MINUTES[1] * share + sum(r.t4_minutes[0] for r in runs) + evaluation + slow_flickr
    fast = PREP_MINUTES[0] * share + sum(r.t4_minutes[1] for r in runs) + evaluation + fast_flickr
    return slow, fast


def flickr_minutes() -> tuple[float, float]:
    """03's Flickr30k transfer on a T4 (slow end, fast end): preparation once, one evaluation."""
    return FLICKR_PREP_MINUTES[1] + FLICKR_EVAL_MINUTES, FLICKR_PREP_MINUTES[0] + FLICKR_EVAL_MINUTES


def run_cost(name: str, settings: dict[str, Any], train_images: int, val_images: int, rates: Rates) -> RunCost:
    """Minutes of one run of ``settings`` (a variant's own changes already applied): every epoch at its size, the slower
    of model and loader setting the pace; validation at the cached size, forward only (about a third of a step)."""
    epochs, sizes, image_size = int(settings["epochs"]), list(settings.get("train_sizes") or []), int(settings["image_size"])
    (t4_slow, t4_fast), _ = t4_rate_at_size(rates, image_size)

    epochs_at = Counter(sizes[:epochs])  # epochs per training size: a sum over sizes, not a loop over every epoch
    epochs_at[image_size] += max(0, epochs - len(sizes))  # after the schedule: the cached size

    def minutes(rate_at: Any, loader: float | None) -> float:
        training = sum(n * train_images / min(rate_at(size), loader or math.inf) for size, n in epochs_at.items())
        return (training + epochs * val_images / (3 * rate_at(image_size))) / 60

    def t4(rate: float) -> Any:
        return lambda size: rate * (image_size / size) ** 2  # compute-bound: the pixel ratio

    here = minutes(rates.at, rates.loader)
    on_t4 = (minutes(t4(t4_slow), COLAB_LOADER_IMG_S), minutes(t4(t4_fast), COLAB_LOADER_IMG_S))
    return RunCost(name, epochs, sizes, image_size, train_images, here, on_t4)


def resolved(settings: dict[str, Any], variant: str) -> dict[str, Any]:
    """``settings`` as the trainer would train ``variant``: the variant's own setting changes applied (e.g. lowres'
    schedule)."""
    values = {**settings, "variant": variant}
    return {**values, **Recipe.of(parse_variant(variant)).overrides(values)}


def sizes_needed(settings: dict[str, Any], variants: Sequence[str]) -> list[int]:
    """Every training size the run and the study's variants use: the sizes worth timing."""
    sizes = {int(settings["image_size"])}
    for variant in [str(settings.get("variant", "baseline")), *variants]:
        sizes.update(resolved(settings, variant).get("train_sizes") or [])
    return sorted(sizes)


def plan(settings: dict[str, Any], variants: Sequence[str], rates: Rates, train_images: int, val_images: int,
         extra_images: dict[str, int] | None = None, session_minutes: float = FREE_SESSION_MINUTES, suggest: bool = True,
         prep_images: int | None = None) -> Plan:  # fmt: skip
    """The run of ``settings`` and one run per entry of ``variants`` (the baseline is the run itself), cheapest first;
    ``extra_images``: images a variant adds (restval's count, when known). When the lab does not fit one session, what
    would, each with the lab's predicted minutes on a T4."""
    extra = extra_images or {}

    def cost(name: str, values: dict[str, Any]) -> RunCost:
        added = sum(n for flag, n in extra.items() if flag in parse_variant(str(values.get("variant", "baseline"))))
        return run_cost(name, values, train_images + added, val_images, rates)

    run = cost(str(settings.get("variant", "baseline")), resolved(settings, str(settings.get("variant", "baseline"))))
    costs = [cost(v, resolved(settings, v)) for v in variants]
    ordered = sorted(costs, key=lambda c: c.minutes)  # stable: equal costs keep VARIANTS' order
    t4_basis = t4_rate_at_size(rates, int(settings["image_size"]))[1]
    out = Plan(run, ordered, t4_basis, session_minutes, prep_images=prep_images, flickr=bool(settings.get("flickr30k")))
    if suggest and out.fits() is not True:
        out.suggestions = suggestions(settings, variants, out, lambda s, v: plan(s, v, rates, train_images, val_images, extra,
                                                                                session_minutes, False, prep_images))  # fmt: skip
    return out


def suggestions(settings: dict[str, Any], variants: Sequence[str], current: Plan, replan: Any) -> list[tuple[str, tuple[float, float]]]:
    """Settings that make the lab fit one session (at the T4's slow end), each with the lab's minutes on a T4."""
    out: list[tuple[str, tuple[float, float]]] = []
    if not resolved(settings, str(settings.get("variant", "baseline"))).get("train_sizes"):  # no schedule yet
        schedule = resolution.ramp(int(settings["epochs"]), int(settings["image_size"]))
        if schedule:
            trial = replan({**settings, "train_sizes": schedule}, variants)
            out.append((f"TRAIN_SIZES={schedule} (the resolution schedule) in 02 and 04", trial.lab_t4_minutes))
    low, high, found = 1, int(settings["epochs"]) - 1, None  # the most EPOCHS that fit: fewer epochs never cost more,
    while low <= high:  # so a binary search, ~log2(EPOCHS) plans (a plan per smaller EPOCHS was quadratic: it hung)
        middle = (low + high) // 2
        trial = replan({**settings, "epochs": middle}, variants)
        if trial.fits():
            found, low = (middle, trial), middle + 1
        else:
            high = middle - 1
    if found:
        out.append((f"EPOCHS={found[0]}", found[1].lab_t4_minutes))
    if len(variants) > 1:
        first = [current.variants[0].name]  # the cheapest
        out.append((f"VARIANTS={first!r} (one modification)", replan(settings, first).lab_t4_minutes))
    slow = current.lab_t4_minutes[0]
    sessions = math.ceil(slow / current.session_minutes)
    out.append((f"{sessions} sessions: run on after a disconnect (every notebook resumes where it stopped)", current.lab_t4_minutes))
    return out
