"""One typed run configuration, shared by every notebook.

Why: a one-character typo in a notebook's parameter cell (``EPOCS = 3``) must fail at
once with the key named, not run for an hour with a default. Notebook parameters are
UPPERCASE names; :func:`from_params` maps them onto the lowercase fields of
:class:`Config`, checks every type and choice, and the resulting config is saved as
JSON (a plain dict) beside every artifact it produced.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import re
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .lab import LabCode
from .resolution import schedule_problem
from .storage import atomic_write_json, read_json

DATA_SOURCES = ("coco", "coco-subset", "kaggle", "local")
OPTIMIZERS = ("adamw", "adam", "sgd")
EVAL_SPLITS = ("test", "val", "val2014")
LR_SCHEDULES = ("constant", "cosine")
BACKBONES = ("resnet50", "resnet18")  # resnet18 only to keep CPU tests fast


class ConfigError(ValueError):
    """A parameter is unknown, has the wrong type, or an invalid value. The message names it."""


# Every field is one of two kinds, written beside it:
# - identity: changes what a run produces (the recipe, the data it selects, the text model, the image size,
#   the weights, the seed). A run folder holds one identity; resuming or reusing it with another is refused.
# - free: where things live, how fast or how visibly they run, how long (EPOCHS: raising it continues the run),
#   and what notebooks 03-05 do with a finished run. The data itself is identified by the digests of the
#   artifacts a run trained on (helpers/core/provenance.py), not by the settings that fetched it.
def identity(default: Any = dataclasses.MISSING, **options: Any) -> Any:
    return field(default=default, metadata={"kind": "identity"}, **options)


def free(default: Any = dataclasses.MISSING, **options: Any) -> Any:
    return field(default=default, metadata={"kind": "free"}, **options)


@dataclass
class Config:
    # --- where things live -------------------------------------------------------------
    artifacts_dir: str | None = free(None)  # None: Drive in Colab, /kaggle/working on Kaggle, ./artifacts locally
    data_dir: str | None = free(None)  # None: fast local disk (/content/coco in Colab); never on Drive
    cache_dir: str | None = free(None)  # local working copy of the image cache; None: beside DATA_DIR
    # --- data --------------------------------------------------------------------------
    data_source: str = free("coco")  # coco | coco-subset | kaggle | local
    coco_url: str = free("http://images.cocodataset.org")  # official mirror; tests point it at 127.0.0.1
    kaggle_dataset: str = free("jeffaudi/coco-2014-dataset-for-yolov3")
    train_images: int | None = identity(None)  # None: all of train2014 (82,783); an int: a seeded subset
    val_images: int | None = identity(None)  # None: the 5k Karpathy val split (model selection)
    test_images: int | None = identity(None)  # None: the 5k Karpathy test split (reporting)
    include_restval: bool = free(False)  # also cache the ~30k val2014 images in neither Karpathy split
    image_size: int = identity(224)  # the lab's 224x224: shorter side resized, then centre crop
    train_sizes: list[int] = identity(default_factory=list)  # early epochs' sizes, e.g. [160, 160, 192]; the rest at IMAGE_SIZE
    cache_quality: int = identity(90)  # JPEG quality of the prepared cache: ~20 KB/image, visually lossless
    shard_size: int = free(10_000)  # images per cache shard: a few large files keep Drive happy
    # --- text tower --------------------------------------------------------------------
    text_model: str = identity("openai/clip-vit-base-patch32")  # hub name or a local save_pretrained folder
    text_batch_size: int = free(512)
    caption_part_size: int = free(50_000)  # captions per resumable part of the caption cache
    # --- model and training ------------------------------------------------------------
    variant: str = identity("baseline")
    image_weights: str | None = identity("IMAGENET1K_V2")  # torchvision weights enum name; None: random init
    image_backbone: str = identity("resnet50")
    hidden_dim: int = identity(1024)  # projection head: 2048 -> hidden -> 512
    epochs: int = free(10)
    batch_size: int = identity(64)
    lr: float = identity(1e-4)
    weight_decay: float = identity(0.01)
    optimizer: str = identity("adamw")
    lr_schedule: str = identity("constant")  # the lab's baseline; "cosine" decays to 0 after WARMUP_STEPS
    warmup_steps: int = identity(0)  # linear warmup from 0 to LR over this many steps
    grad_clip: float | None = identity(None)  # max global gradient norm; None: no clipping
    temperature: float = identity(0.07)
    bank_size: int = identity(32_768)  # ``bank`` variant: cached captions drawn per step as extra negatives; 0: all of them
    learnable_temperature: bool = identity(False)
    seed: int = identity(0)
    run_name: str | None = free(None)  # None: derived from the variant and key settings
    num_workers: int | None = free(None)  # None: one per CPU core, at most 4
    amp: bool = identity(True)  # fp16/bf16 autocast on CUDA; ignored on CPU
    channels_last: bool = free(True)
    live_plot: bool = free(True)  # refresh a learning-curve panel during training (off for headless runs)
    force_retrain: bool = free(False)  # retrain even when the run already finished
    max_steps_per_epoch: int | None = identity(None)  # cap for smoke tests and quick looks
    # --- evaluation --------------------------------------------------------------------
    eval_split: str = free("test")
    queries: list[str] = free(default_factory=lambda: ["a dog playing", "sport"])
    classes: list[str] = free(default_factory=lambda: ["a person", "an animal", "a landscape"])
    compare_zero_shot: bool = free(False)
    category_prompt: str = free("a photo of a {}.")  # COCO's category names go into {}: 03's classification over categories
    flickr30k: bool = free(False)  # 03 also scores transfer to Flickr30k's 1k test split (downloads 134 MB once)
    flickr_dir: str | None = free(None)  # where Flickr30k's files are (or go); None: beside DATA_DIR, on local disk
    flickr_url: str = free("https://huggingface.co/datasets/nlphuji/flickr_1k_test_image_text_retrieval/resolve/main")
    interactive: bool = free(True)  # show the ipywidgets explorer; False for headless runs (papermill)
    # --- ablation ------------------------------------------------------------------------
    variants: list[str] = free(default_factory=lambda: ["head_ln", "augment"])  # + baseline: two of the handout's single changes
    seeds: list[int] = free(default_factory=lambda: [0])  # several seeds: mean and spread
    # --- derived from the fields above: never given, never saved -------------------------------
    # the lab's code (the notebooks' cells tagged "lab"): a notebook kernel's own cells (from_notebook), else the notebooks'
    lab: LabCode = field(init=False, repr=False, compare=False, metadata={"kind": "derived"})

    def __post_init__(self) -> None:
        _check_types(self)  # checks change no value ...
        _normalise(self)  # ... this step alone does (one spelling per value)
        _check_values(self)
        self.lab = LabCode.shipped()  # from_notebook and replace hand over another

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain types, so the dict can live inside a ``weights_only`` checkpoint (no derived field)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata["kind"] != "derived"}

    def replace(self, **changes: Any) -> Config:
        """The same settings with ``changes``, and the same lab code."""
        return with_lab(from_params({**self.to_dict(), **changes}), self.lab)

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Config) if f.metadata["kind"] != "derived")
IDENTITY_FIELDS = tuple(f.name for f in dataclasses.fields(Config) if f.metadata["kind"] == "identity")
FREE_FIELDS = tuple(f.name for f in dataclasses.fields(Config) if f.metadata["kind"] == "free")


def identity_differences(stored: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """``["WEIGHT_DECAY: 0.01 (stored) vs 0.5 (now)", ...]`` for every identity field that differs."""
    return [
        f"{k.upper()}: {stored.get(k)!r} (stored) vs {requested.get(k)!r} (now)"
        for k in dict.fromkeys([*stored, *requested])
        if stored.get(k) != requested.get(k)
    ]


def from_params(params: dict[str, Any] | None = None, **kwargs: Any) -> Config:
    """Build a :class:`Config` from notebook parameters (UPPER or lower case keys)."""
    merged = {**(params or {}), **kwargs}
    values: dict[str, Any] = {}
    for key, value in merged.items():
        name = key.lower()
        if name not in FIELD_NAMES:
            close = difflib.get_close_matches(name, FIELD_NAMES, n=1)
            hint = f" Did you mean {close[0].upper()}?" if close else ""
            raise ConfigError(f"Unknown config key {key!r}.{hint} Known keys: {', '.join(n.upper() for n in FIELD_NAMES)}")
        if name in values:
            raise ConfigError(f"Config key {key!r} given twice (keys are case-insensitive)")
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, tuple):
            value = list(value)
        values[name] = value
    return Config(**values)


def from_notebook(namespace: dict[str, Any]) -> Config:
    """Collect a notebook's UPPERCASE globals (its parameter cell) into a Config.

    Every all-caps name counts, so a misspelt parameter (or one injected by papermill
    with ``-p``) is reported instead of silently ignored.
    """
    lab = LabCode.from_kernel(namespace)
    return with_lab(from_params(notebook_params(namespace, code={*lab.binds(), *code_constants(namespace)})), lab)


def code_constants(namespace: dict[str, Any]) -> set[str]:
    """UPPERCASE names that a code cell of this kernel assigns (a cell that defines a function or a class: the student's
    modification or step, say ``BIAS = -10.0``), that are no parameter: the code's own constants, not settings. The
    kernel's cell history (IPython's ``In``) says which cell assigned what; a parameter name (``EPOCHS``) stays a
    setting wherever it is written, so no setting is ever dropped silently."""
    import ast

    parameters = {name.upper() for name in FIELD_NAMES}
    out: set[str] = set()
    for text in namespace.get("In") or []:
        try:
            body = ast.parse(text).body if isinstance(text, str) else []
        except SyntaxError:  # IPython magics and the like
            continue
        if not any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for node in body):
            continue
        for node in body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            out |= {t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper() and t.id not in parameters}
    return out


def with_lab(cfg: Config, lab: LabCode) -> Config:
    """``cfg`` running ``lab``'s code (a notebook kernel's cells, or a stored run's)."""
    cfg.lab = lab
    return cfg


def notebook_params(namespace: dict[str, Any], code: Collection[str] = ()) -> dict[str, Any]:
    """A notebook's UPPERCASE globals: its parameter cell, papermill's injected cell, and anything else set in capitals,
    but for the names the lab's cells bind (``code``: their constants, ``import ... as F``) and modules."""
    return {
        k: v for k, v in namespace.items()
        if k.isupper() and not k.startswith("_") and k not in code and not callable(v) and not isinstance(v, types.ModuleType)
    }  # fmt: skip


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["EPOCHS=3", 'VARIANTS=["head_ln"]', "DATA_SOURCE=coco"]`` -> parameters (values as JSON, else strings).

    JSON's ``NaN`` and ``Infinity`` parse as floats and are refused by the range checks, like any other value.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (values as JSON, e.g. EPOCHS=3), got {item!r}")
        try:
            out[key.upper()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.upper()] = value  # a bare string
    return out


def load(path: str | os.PathLike, **overrides: Any) -> Config:
    """Load a JSON config file (as written by :meth:`Config.save`), then apply overrides."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Config file {path} does not exist")
    try:
        data = read_json(path)
    except ValueError as exc:
        raise ConfigError(f"Config file {path} is not valid JSON ({exc}): fix it, or write it again with Config.save") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a JSON object, not {type(data).__name__}")
    return from_params({**data, **{k.lower(): v for k, v in overrides.items()}})


def _check_types(cfg: Config) -> None:
    hints = typing.get_type_hints(Config)
    for name in FIELD_NAMES:
        value, expected = getattr(cfg, name), hints[name]
        if not _matches(value, expected):
            raise ConfigError(f"Config key {name.upper()} must be {_describe(expected)}, got {value!r} ({type(value).__name__})")


def _normalise(cfg: Config) -> None:
    """One spelling per value, so equal settings are equal records: LR=1 as 1.0 (like GRAD_CLIP=1), the variant and
    every entry of VARIANTS without surrounding spaces. A variant is a string here: its names are checked, spelt in one
    order and resolved into their records once per run, in the layer that holds the records (helpers/clip/flags.py);
    here only its form is checked (names of lowercase letters, digits and '_', joined by '+')."""
    hints = typing.get_type_hints(Config)
    for name in FIELD_NAMES:
        value = getattr(cfg, name)
        if isinstance(value, int) and not isinstance(value, bool) and float in (hints[name], *typing.get_args(hints[name])):
            setattr(cfg, name, float(value))
    cfg.variant = "+".join(part.strip() for part in cfg.variant.split("+"))
    cfg.variants = ["+".join(part.strip() for part in v.split("+")) for v in cfg.variants]
    for key, value in [("VARIANT", cfg.variant), *(("VARIANTS", v) for v in cfg.variants)]:
        if not VARIANT_FORM.fullmatch(value):
            raise ConfigError(
                f"{key}={value!r} is not a variant: write 'baseline', or names of modifications joined by '+' "
                "(e.g. 'head_ln+augment'; notebook 04 lists them)"
            )


VARIANT_FORM = re.compile(r"[a-z][a-z0-9_]*(\+[a-z][a-z0-9_]*)*")


def _matches(value: Any, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if origin is list:
        (item_type,) = typing.get_args(expected)
        return isinstance(value, list) and all(_matches(v, item_type) for v in value)
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, expected)


def _describe(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(expected))
    if expected is type(None):
        return "None"
    if origin is list:
        return f"a list of {_describe(typing.get_args(expected)[0])}"
    return expected.__name__


# Ranges that make sense, with the reason a value outside them is refused. Every message names
# the parameter, the value given and the allowed range; the same check runs for notebook
# parameters, papermill ``-p``, ``--set`` and ``--config`` files (they all build a Config).
MIN_TEMPERATURE = 0.01  # CLIP clamps the logit scale at 100, i.e. tau >= 0.01
MAX_TEMPERATURE = 1.0  # above 1 the softmax over cosines in [-1, 1] is nearly flat: nothing trains
MIN_BATCH_SIZE = 2  # the contrastive loss needs at least one negative, BatchNorm at least 2 values
MAX_IMAGE_SIZE = 1024  # CLIP and ResNet50 work at 224; beyond ~1k px a COCO image (640x480) is only upsampled
MAX_WEIGHT_DECAY = 1.0  # AdamW's decoupled decay multiplies weights by (1 - LR*WD) per step; the lab uses 0.01
MAX_GRAD_CLIP = 1e4  # a larger clip never clips
# Usual ranges: a value outside them is legal, but a divergence message names it as a likely cause.
USUAL_RANGES = {"lr": (1e-6, 1e-2), "weight_decay": (0.0, 0.2), "temperature": (0.02, 0.2)}
RUN_NAME_CHARACTERS = "letters, digits, '-', '_', '.' and '+' (variant names join flags with '+')"
_RUN_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*")


def unusual_settings(cfg: Config | dict[str, Any]) -> list[str]:
    """``["WEIGHT_DECAY=1000000000.0 (usual 0 to 0.2)"]``: settings far outside their usual range."""
    values = cfg.to_dict() if isinstance(cfg, Config) else cfg
    out = []
    for name, (low, high) in USUAL_RANGES.items():
        value = values.get(name)
        if isinstance(value, (int, float)) and not low <= value <= high:
            out.append(f"{name.upper()}={value!r} (usual {low:g} to {high:g})")
    return out


class TrainingDiverged(RuntimeError):
    """A run's loss or weights became non-finite or exploded (after rollbacks): its settings need changing."""


def divergence_advice(cfg: Config | dict[str, Any]) -> str:
    """What to change after a divergence: any setting far outside its usual range first, then the usual remedies."""
    unusual = unusual_settings(cfg)
    first = f"Likely cause: {', '.join(unusual)}, far outside the usual range; bring it back into range. " if unusual else ""
    return first + "Lower LR (e.g. 1e-5), set WARMUP_STEPS (e.g. 500) and GRAD_CLIP (e.g. 1.0), or set AMP=False."


def check_run_name(name: str) -> str:
    """A run name is a folder name under ARTIFACTS_DIR/runs, never a path: no separators, no leading dot."""
    if not _RUN_NAME.fullmatch(name) or len(name) > 200:
        raise ConfigError(
            f"Config key RUN_NAME={name!r} is not a valid run name: use {RUN_NAME_CHARACTERS}, not starting with '.', "
            "at most 200 characters (it names a folder under ARTIFACTS_DIR/runs, never a path)"
        )
    return name


def _check_values(cfg: Config) -> None:
    def fail(name: str, allowed: str) -> None:
        raise ConfigError(f"Config key {name.upper()}={getattr(cfg, name)!r} is out of range: {allowed}")

    def choice(name: str, allowed: tuple[str, ...]) -> None:
        value = getattr(cfg, name)
        if value not in allowed:
            raise ConfigError(f"Config key {name.upper()}={value!r} is not one of {', '.join(map(repr, allowed))}")

    def positive(name: str, allow_none: bool = False) -> None:
        value = getattr(cfg, name)
        if value is None and allow_none:
            return
        if value is None or value <= 0:
            raise ConfigError(f"Config key {name.upper()} must be positive, got {value!r}")

    lr_range = "0 < LR < 1 (the lab uses 1e-4)"
    temperature_range = (
        f"{MIN_TEMPERATURE} < TEMPERATURE <= {MAX_TEMPERATURE} (CLIP starts at 0.07; below {MIN_TEMPERATURE} CLIP's clamp "
        f"would change it silently, above {MAX_TEMPERATURE} the softmax is too flat to train)"
    )
    ranges = {
        "lr": lr_range,
        "temperature": temperature_range,
        "weight_decay": f"0 <= WEIGHT_DECAY <= {MAX_WEIGHT_DECAY:g}",
        "grad_clip": f"0 < GRAD_CLIP <= {MAX_GRAD_CLIP:g} or None",
    }
    for name in FIELD_NAMES:  # NaN and infinity pass every comparison below: refuse them first
        value = getattr(cfg, name)
        if isinstance(value, float) and not math.isfinite(value):
            fail(name, f"{ranges.get(name, 'a number')}, and finite (not NaN or infinity)")
    choice("data_source", DATA_SOURCES)
    choice("optimizer", OPTIMIZERS)
    choice("eval_split", EVAL_SPLITS)
    choice("image_backbone", BACKBONES)
    choice("lr_schedule", LR_SCHEDULES)
    if not cfg.seeds:
        raise ConfigError("Config key SEEDS must hold at least one seed, e.g. [0]")
    if len(set(cfg.seeds)) < len(cfg.seeds):
        fail("seeds", "each seed at most once, e.g. [0, 1, 2]")
    if not cfg.queries:
        fail("queries", "at least one text query, e.g. ['a dog playing', 'sport']")
    if len(cfg.classes) < 2:
        fail("classes", "at least two class prompts to choose between, e.g. ['a person', 'an animal', 'a landscape']")
    if cfg.category_prompt.count("{}") != 1 or "{" in cfg.category_prompt.replace("{}", ""):
        fail("category_prompt", "a prompt with one {} where each category name goes, e.g. 'a photo of a {}.'")
    if cfg.bank_size < 0:
        fail("bank_size", "BANK_SIZE >= 0 (0: the whole training caption cache; default 32768)")
    if cfg.warmup_steps < 0:
        raise ConfigError(f"Config key WARMUP_STEPS must be >= 0, got {cfg.warmup_steps}")
    if cfg.grad_clip is not None and cfg.grad_clip <= 0:
        raise ConfigError(f"Config key GRAD_CLIP must be positive or None, got {cfg.grad_clip}")
    if cfg.num_workers is not None and cfg.num_workers < 0:
        raise ConfigError(f"Config key NUM_WORKERS must be >= 0 or None, got {cfg.num_workers}")
    for name in ("train_images", "val_images", "test_images", "max_steps_per_epoch"):
        positive(name, allow_none=True)
    for name in ("image_size", "shard_size", "text_batch_size", "caption_part_size", "hidden_dim", "epochs", "batch_size"):
        positive(name)
    if cfg.batch_size < MIN_BATCH_SIZE:
        fail("batch_size", f"the contrastive loss needs >= {MIN_BATCH_SIZE} pairs per batch (the lab uses 64)")
    if not 0 < cfg.lr < 1:
        fail("lr", lr_range)
    if not MIN_TEMPERATURE < cfg.temperature <= MAX_TEMPERATURE:
        fail("temperature", temperature_range)
    if not 0 <= cfg.weight_decay <= MAX_WEIGHT_DECAY:
        fail("weight_decay", f"0 <= WEIGHT_DECAY <= {MAX_WEIGHT_DECAY:g} (the lab uses 0.01)")
    if cfg.grad_clip is not None and cfg.grad_clip > MAX_GRAD_CLIP:
        fail("grad_clip", f"0 < GRAD_CLIP <= {MAX_GRAD_CLIP:g}, or None (no clipping); 1.0 is usual")
    if cfg.run_name is not None:
        check_run_name(cfg.run_name)
    if not 1 <= cfg.cache_quality <= 100:
        raise ConfigError(f"Config key CACHE_QUALITY must be between 1 and 100, got {cfg.cache_quality}")
    if cfg.image_size < 32:
        raise ConfigError(f"Config key IMAGE_SIZE must be at least 32 pixels, got {cfg.image_size}")
    if cfg.image_size > MAX_IMAGE_SIZE:
        fail("image_size", f"32 <= IMAGE_SIZE <= {MAX_IMAGE_SIZE} (the lab uses 224, CLIP's input size)")
    problem = schedule_problem(cfg.train_sizes, cfg.image_size)
    if problem:
        fail("train_sizes", problem)
