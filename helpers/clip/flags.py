"""A run's variant: one record per modification, a registry of them, and the one way a variant is parsed and spelt.

A variant is ``"baseline"`` or names joined by ``+`` (``"head_ln+augment"``). Each name is a :class:`Variant`
record: what it changes and why, the code the notebooks show, and its hooks (the head, the pooling, the loss,
extra negatives, the train-time transform, LR factors, setting overrides, extra training images...). Every
consumer (the model, the trainer, validation, the doctor, notebook 04, the report, the docs) reads the records;
no module outside the variant code tests a variant's name.

Why here, beside the model: a record holds code (a head, a loss, a transform), so the registry lives in the layer of
that code, above the core, which keeps plain settings only (a variant is a string there). The built-in records are
registered by helpers/clip/variants.py, which the package ``helpers.clip`` imports first; a run resolves its variant
once (helpers/training/plan.py), and its identity (helpers/clip/identity.py) holds the digests of the student's code. A student's own
modification (notebook 04's cell tagged ``student-modification``) is a record too, registered with
:func:`register`; the digest of its source is part of the run's identity, so a changed line trains a new run.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import linecache
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.config import ConfigError
from ..core.lab import LabCode, LabHook

BASELINE = "baseline"
STUDENT_CELL = "the cell tagged `student-modification` in 04_ablation.ipynb"
_NAME = re.compile(r"[a-z][a-z0-9_]*")

# Hooks that one variant of a combination may set at most (two heads cannot both replace the head).
SINGLE_HOOKS = ("head", "pooling", "loss", "negatives")
HOOKS = (*SINGLE_HOOKS, "train_transform", "lr_multiplier", "on_train_mode", "overrides", "warmup", "extra_train_images", "notes")


class UnknownVariant(ConfigError):
    """A variant names a modification that no record defines (in this kernel)."""


@dataclass(frozen=True)
class Variant:
    """One modification of the baseline, whole: its text, its code and its hooks.

    Every hook is None when the variant leaves that part as the baseline has it. Signatures:

    - ``head(in_dim, hidden_dim, embed_dim) -> nn.Module``: the projection head, pooled trunk features -> embedding.
    - ``pooling(channels) -> nn.Module``: replaces global average pooling, ``[B, C, H, W] -> [B, C]``.
    - ``loss(image_features, text_features, logit_scale, negatives) -> loss``: the one signature of every loss
      (helpers/clip/loss.py); ``negatives`` is None or the extra negatives the ``negatives`` hook drew.
    - ``negatives(train_set, settings, rank) -> source``: extra negatives, a source with ``.to(device)`` and
      ``.draw(step, image_ids, text_features)`` (the caption bank; ``rank``: each process draws its own).
    - ``train_transform() -> transform``: applied to each uint8 CHW training image.
    - ``lr_multiplier(parameter_name, pretrained_trunk) -> float``: a factor on the LR of that parameter.
    - ``on_train_mode(model)``: called after ``model.train()`` at the start of each epoch.
    - ``overrides(settings) -> dict``: the settings it changes (``{"batch_size": 256, ...}``).
    - ``warmup(total_steps) -> int``: warmup steps when WARMUP_STEPS is 0.
    - ``extra_train_images(splits, cache) -> list[int]``: more training images (cached val2014 ids, with their captions).
    - ``notes(settings) -> list[str]``: messages logged (and kept in the run's events) when a run starts.
    """

    name: str
    changes: str  # what it changes: notebook 04's table, the report's section 10, docs/notebooks.md
    why: str  # why it might help
    code: tuple[Any, ...] = ()  # the functions and classes whose source the notebooks show; default: the hooks
    head: Callable[..., Any] | None = None
    pooling: Callable[..., Any] | None = None
    loss: Callable[..., Any] | None = None
    loss_text: str = ""  # the report's loss row when this record's loss trains
    negatives: Callable[..., Any] | None = None
    negatives_text: str = ""  # appended to the loss row
    train_transform: Callable[..., Any] | None = None
    lr_multiplier: Callable[..., float] | None = None
    on_train_mode: Callable[..., None] | None = None
    overrides: Callable[..., dict[str, Any]] | None = None
    warmup: Callable[..., int] | None = None
    extra_train_images: Callable[..., list[int]] | None = None
    notes: Callable[..., list[str]] | None = None
    settings: tuple[str, ...] = ()  # config fields that change nothing without this variant (BANK_SIZE)
    combines: tuple[str, ...] = ()  # a preset: the names it stands for, and no hook of its own
    builtin: bool = True
    source: str = ""  # the source of ``code`` (set by register): what notebook 04 and the report show
    source_digest: str = ""  # 16 hex of its sha256: a student's is part of the run identity

    def hooks(self) -> dict[str, Callable[..., Any]]:
        return {h: getattr(self, h) for h in HOOKS if getattr(self, h) is not None}


_REGISTRY: dict[str, Variant] = {}


def _registry() -> dict[str, Variant]:
    """The records: the built-ins (helpers/clip/variants.py registers them; the package helpers.clip imports it first)
    and the student's."""
    return _REGISTRY


def register(name: str, changes: str, why: str, *, code: tuple[Any, ...] | None = None, builtin: bool = False, **hooks: Any) -> Variant:
    """Add a modification under ``name`` (then put the name in VARIANTS, alone or joined to others with '+').

    ``hooks`` are the :class:`Variant` fields (``head=MyHead``, ``loss=my_loss``, ...). A record with a missing part is
    refused here: no name, no text, no hook, a hook that is not callable, or two records under one name. Registering the
    same name again (a notebook cell run twice) replaces a student's record; a built-in name is never replaced.
    """
    unknown = sorted(set(hooks) - {*HOOKS, "loss_text", "negatives_text", "settings", "combines"})
    if unknown:
        raise TypeError(f"register({name!r}): unknown part(s) {', '.join(unknown)}; the parts are {', '.join(HOOKS)}, "
                        "loss_text, negatives_text, settings, combines")  # fmt: skip
    record = Variant(name=name, changes=changes, why=why, builtin=builtin, **hooks)
    _check_record(record)
    shown = tuple(code) if code is not None else tuple(record.hooks().values())
    source = "\n\n".join(source_of(obj) for obj in shown)
    if not record.combines and not source.strip():
        raise ValueError(f"Variant record {name!r}: no code to show (code=... names the functions and classes it runs)")
    identity = source if builtin else "\n\n".join([source, *defining_texts(shown)])  # a student's: the whole cell or file
    record = dataclasses.replace(record, code=shown, source=source, source_digest=hashlib.sha256(identity.encode()).hexdigest()[:16])
    existing = _REGISTRY.get(name)
    if existing is not None and (existing.builtin or builtin):
        raise ValueError(f"A variant named {name!r} exists already (built in): pick another name for your modification")
    _REGISTRY[name] = record
    return record


def unregister(name: str) -> None:
    """Remove a student's record (a built-in stays). Runs trained with it keep their code in their metrics.json."""
    if name in _REGISTRY and _REGISTRY[name].builtin:
        raise ValueError(f"{name!r} is a built-in variant: it cannot be removed")
    _REGISTRY.pop(name, None)


def _check_record(record: Variant) -> None:
    """Every part a consumer reads is present: refused at registration (for the built-ins: when the kit is imported)."""
    where = f"Variant record {record.name!r}"
    if not _NAME.fullmatch(record.name or "") or record.name == BASELINE:
        raise ValueError(f"{where}: a name is lowercase letters, digits and '_', starting with a letter, and not 'baseline'")
    if not record.changes.strip() or not record.why.strip():
        raise ValueError(f"{where}: say what it changes (changes=...) and why it might help (why=...)")
    for hook, value in record.hooks().items():
        if not callable(value):
            raise TypeError(f"{where}: {hook} must be a function or a class, got {type(value).__name__}")
    if record.combines:
        if record.hooks():
            raise ValueError(f"{where}: a preset names other variants (combines=...) and has no hook of its own")
        return
    if not record.hooks():
        raise ValueError(f"{where}: it changes nothing; give at least one hook ({', '.join(HOOKS)})")
    if record.loss is not None and not record.loss_text:
        raise ValueError(f"{where}: a loss needs loss_text=... (the report's loss row)")
    if record.negatives is not None and not record.negatives_text:
        raise ValueError(f"{where}: extra negatives need negatives_text=... (the report's loss row)")


def defining_texts(objects: tuple[Any, ...]) -> list[str]:
    """The whole text of each notebook cell or .py file that defines ``objects`` (once each, in order): a student's
    modification is identified by all of it, so a module-level constant, a closure's argument or a helper it calls
    changed there is a new run, never a silent reuse of the old one."""
    texts: list[str] = []
    for obj in objects:
        if isinstance(obj, LabHook):
            continue  # a lab cell: identified by its own text (student_sources)
        codes = [getattr(obj, "__code__", None)]
        if isinstance(obj, type):
            codes += [getattr(getattr(m, "__func__", m), "__code__", None) for m in vars(obj).values()]
        files = [c.co_filename for c in codes if c is not None]
        try:
            files.append(inspect.getsourcefile(obj) or "")
        except (TypeError, OSError):  # a class of a notebook cell: its module __main__ has no file (its methods say)
            pass
        text = next(("".join(lines) for f in files if f and (lines := linecache.getlines(f))), "")
        if text and text not in texts:
            texts.append(text)
    return texts


def source_of(obj: Any) -> str:
    """The source of a function or class, also when it was defined in a notebook cell (where ``inspect.getsource``
    cannot find a class: its module ``__main__`` has no file); for a :class:`LabHook`, its lab cell's whole text."""
    if isinstance(obj, LabHook):
        return LabCode.shipped().defining(obj.name).source.rstrip()
    try:
        return textwrap.dedent(inspect.getsource(obj)).rstrip()
    except (OSError, TypeError):
        pass
    # a class defined in a Jupyter cell: find the cell through one of its methods, then the class in the cell's code
    for member in vars(obj).values() if isinstance(obj, type) else ():
        code = getattr(getattr(member, "__func__", member), "__code__", None)
        lines = linecache.getlines(code.co_filename) if code else []
        if lines:
            text = "".join(lines)
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.ClassDef) and node.name == obj.__name__:
                    return textwrap.dedent(ast.get_source_segment(text, node, padded=True) or "").rstrip()
    raise ValueError(f"Cannot read the source of {obj!r}: define it in a notebook cell or a .py file (not typed at a prompt)")


def records() -> dict[str, Variant]:
    """Every record by name, built-ins first in their order, then the student's."""
    return dict(_registry())


def record(name: str) -> Variant:
    known = _registry()
    if name not in known:
        raise UnknownVariant(_unknown_message(repr(name), [name]))
    return known[name]


def _unknown_message(variant: str, unknown: list[str]) -> str:
    builtins = [n for n, r in _registry().items() if r.builtin]
    own = [n for n, r in _registry().items() if not r.builtin]
    hint = (
        f" If {', '.join(map(repr, unknown))} is your own modification, run {STUDENT_CELL} first (it defines and registers "
        "it; after a kernel restart it must run again; `python -m helpers.run_all --set VARIANTS=...` runs that cell too, "
        "so write it there), or, with `python -m helpers.train`, pass its .py file with --modification."
    )
    return (
        f"VARIANT={variant}: unknown variant(s) {unknown}. Use 'baseline', or names joined by '+' from the built-ins "
        f"{', '.join(builtins)}" + (f" and your own {', '.join(own)}" if own else "") + "." + hint
    )


def parse_variant(variant: str) -> frozenset[str]:
    """``"baseline"`` -> {}; ``"head_ln+augment"`` -> {"head_ln", "augment"}; presets expanded; unknown names are errors.

    Spaces around the name and the parts are ignored (``"baseline "`` from a form field is ``"baseline"``). Two
    parts that both set the same single hook (two heads, two losses) are alternatives, refused.
    """
    variant = variant.strip()
    if variant == BASELINE:
        return frozenset()
    known = _registry()
    given = [f.strip() for f in variant.split("+") if f.strip()]
    unknown = [f for f in given if f not in known]
    if unknown or not given:
        raise UnknownVariant(_unknown_message(repr(variant), unknown))
    repeated = sorted({f for f in given if given.count(f) > 1})
    if repeated:
        raise ConfigError(f"VARIANT={variant!r}: {', '.join(repeated)} given twice; name each modification once")
    names = [f for token in given for f in (known[token].combines or (token,))]
    for hook in SINGLE_HOOKS:
        setting = [n for n in known if n in names and getattr(known[n], hook) is not None]  # in registry order
        if len(setting) > 1:
            raise ConfigError(f"VARIANT={variant!r}: {' and '.join(setting)} both replace the {hook}; they are alternatives, pick one")
    return frozenset(names)


def spelling(flags: frozenset[str]) -> str:
    """The one spelling of a set of names (registry order: built-ins, then the student's; ``"baseline"`` for none)."""
    order = list(_registry())
    return "+".join(sorted(flags, key=lambda f: (order.index(f) if f in order else len(order), f))) or BASELINE


def canonical(variant: str) -> str:
    """A stable spelling, so equal variants share a run name."""
    return spelling(parse_variant(variant))


def presets() -> dict[str, tuple[str, ...]]:
    return {n: r.combines for n, r in _registry().items() if r.combines}


def student_sources(flags: frozenset[str], lab: LabCode | None = None) -> dict[str, str]:
    """``{name: source digest}`` of the records among ``flags`` whose code the student writes: their own records, and
    those whose code is a lab cell (notebook 04's, as ``lab`` holds it). Part of the run identity."""
    known = _registry()
    out = {}
    for n in spelling(flags).split("+"):
        record = known.get(n)
        cells = [h.name for h in record.hooks().values() if isinstance(h, LabHook)] if record else []
        if cells:
            text = "\n".join((lab or LabCode.shipped()).defining(name).source for name in cells)
            out[n] = hashlib.sha256(text.encode()).hexdigest()[:16]
        elif record is not None and not record.builtin:
            out[n] = record.source_digest
    return out


def only_with(field_name: str) -> str | None:
    """The variant a setting belongs to (``bank_size`` -> ``"bank"``), or None for a setting of every run."""
    return next((n for n, r in _registry().items() if field_name in r.settings), None)


@dataclass(frozen=True)
class Recipe:
    """The records a variant combines, and each hook as the combination has it (read by the model and the trainer)."""

    records: tuple[Variant, ...]

    @classmethod
    def of(cls, flags: frozenset[str] | str, lab: LabCode | None = None) -> Recipe:
        """The records of ``flags``; a part whose code is a lab cell (:class:`LabHook`) taken from ``lab``, the run's lab
        code (a notebook kernel's cells, or a stored run's), else from the notebooks'."""
        flags = parse_variant(flags) if isinstance(flags, str) else flags
        known = _registry()
        missing = [f for f in flags if f not in known]
        if missing:
            raise UnknownVariant(_unknown_message(repr(spelling(flags)), missing))
        chosen = [known[n] for n in spelling(flags).split("+") if n in known]
        if lab is not None:
            chosen = [dataclasses.replace(r, **{h: v.resolve(lab) for h, v in r.hooks().items() if isinstance(v, LabHook)}) for r in chosen]
        return cls(tuple(chosen))

    def single(self, hook: str) -> Callable[..., Any] | None:
        """The one record's hook for a part only one variant may replace (the head, the loss...), or None."""
        return next((getattr(r, hook) for r in self.records if getattr(r, hook) is not None), None)

    def each(self, hook: str) -> list[Callable[..., Any]]:
        return [getattr(r, hook) for r in self.records if getattr(r, hook) is not None]

    def lr_multiplier(self, parameter_name: str, pretrained_trunk: bool) -> float:
        factor = 1.0
        for hook in self.each("lr_multiplier"):
            factor *= hook(parameter_name, pretrained_trunk)
        return factor

    def overrides(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The settings the records change, applied in order; ``{}`` for the baseline."""
        changed: dict[str, Any] = {}
        for hook in self.each("overrides"):
            changed.update(hook({**settings, **changed}))
        return {k: v for k, v in changed.items() if settings.get(k) != v}

    def changes_nothing(self, settings: dict[str, Any]) -> str | None:
        """Why this variant would train exactly the baseline with ``settings`` (a record that only changes settings,
        all of which already hold: ``lowres`` with EPOCHS=1 or under an explicit TRAIN_SIZES, ``bigbatch`` at batch
        256), or None when it changes something. Such a run would be the baseline under another name: refused."""
        if not self.records or any(set(r.hooks()) - {"overrides", "notes"} for r in self.records):
            return None  # no variant (the baseline), or one with code of its own: it changes the run
        if self.overrides(settings):
            return None
        names = "+".join(r.name for r in self.records)
        shown = ", ".join(f"{k.upper()}={settings.get(k)!r}" for k in ("epochs", "train_sizes", "batch_size", "image_size"))
        return (
            f"VARIANT={names!r} changes nothing with these settings ({shown}): it only changes settings "
            f"({'; '.join(r.changes for r in self.records)}), and here they already hold, so it would train exactly the "
            "baseline under another name. Change the settings it acts on (e.g. more EPOCHS, or no TRAIN_SIZES for lowres), "
            "or leave it out of VARIANTS."
        )

    def warmup(self, configured: int, total_steps: int) -> int:
        hooks = self.each("warmup")
        return configured if configured or not hooks else max(hook(total_steps) for hook in hooks)

    def loss_text(self, default: str) -> str:
        """The report's loss row: the loss that trains, and the extra negatives it scores."""
        text = next((r.loss_text for r in self.records if r.loss is not None), default)
        extra = next((r.negatives_text for r in self.records if r.negatives is not None), "")
        return text + (f", {extra}" if extra else "")
