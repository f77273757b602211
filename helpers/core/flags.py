"""A run's variant: ``"baseline"`` or flags joined by ``+``, parsed and spelt one way everywhere.

Why in the core: the variant is part of a run's identity (its name, its stored config), so the
config reads it when it is built (``Config.flags``), below any code that acts on a flag. What each
flag *does* lives with the model and the training (helpers/clip/variants.py and its docstring).
"""

from __future__ import annotations

FLAGS = ("head_ln", "head_bn", "attn_pool", "augment", "optim", "disc_lr", "freeze_bn", "restval", "temp", "bank", "bigbatch", "hardneg")
PRESETS = {"best": ("optim", "disc_lr", "temp", "bank")}  # why these four: helpers/clip/variants.py
EXCLUSIVE = (("head_ln", "head_bn"),)
BASELINE = "baseline"


def parse_variant(variant: str) -> frozenset[str]:
    """``"baseline"`` -> {}; ``"head_ln+augment"`` -> {"head_ln", "augment"}; unknown flags are errors.

    Spaces around the name and the flags are ignored (``"baseline "`` from a form field is ``"baseline"``).
    """
    variant = variant.strip()
    if variant == BASELINE:
        return frozenset()
    given = [f.strip() for f in variant.split("+") if f.strip()]
    unknown = [f for f in given if f not in FLAGS and f not in PRESETS]
    if unknown or not given:
        raise ValueError(
            f"VARIANT={variant!r}: unknown flag(s) {unknown}. Use 'baseline', a preset ({', '.join(PRESETS)}) or "
            f"'+'-joined flags from {', '.join(FLAGS)}"
        )
    repeated = sorted({f for f in given if given.count(f) > 1})
    if repeated:
        raise ValueError(f"VARIANT={variant!r}: flag(s) {', '.join(repeated)} given twice; name each flag once")
    flags = [f for token in given for f in PRESETS.get(token, (token,))]
    for group in EXCLUSIVE:
        both = [f for f in group if f in flags]
        if len(both) > 1:
            raise ValueError(f"VARIANT={variant!r}: {' and '.join(both)} are alternatives; pick one")
    return frozenset(flags)


def spelling(flags: frozenset[str]) -> str:
    """The one spelling of a set of flags (FLAGS order; ``"baseline"`` for none)."""
    return "+".join(f for f in FLAGS if f in flags) or BASELINE


def canonical(variant: str) -> str:
    """A stable spelling (flags in FLAGS order), so equal variants share a run name."""
    return spelling(parse_variant(variant))
