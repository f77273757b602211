"""A run's identity: what a run folder must agree with to be resumed or reused, and what its name's hash covers.

Why beside the variant records: the identity holds the variant in its one spelling, the settings that belong to one
variant only when it is on (BANK_SIZE with ``bank``), and the digests of the code a student writes: their own
records, the handout's modifications (notebook 04's cells) and the lab cells a run trains with (01's and 02's). All
of it is read from the records and the run's lab code, which live here and below, never in the core.
"""

from __future__ import annotations

from typing import Any

from ..core.config import IDENTITY_FIELDS, Config
from ..core.lab import TRAINING
from ..core.provenance import text_tower_id
from .flags import only_with, parse_variant, spelling, student_sources


def run_identity(cfg: Config | dict[str, Any]) -> dict[str, Any]:
    """The identity fields of ``cfg`` (or of a stored config dict) that apply to its variant: what a run folder must
    agree with to be reused. The variant in its one spelling ("augment+head_ln" is "head_ln+augment"); a setting that
    belongs to one variant (BANK_SIZE to ``bank``) counts only with it; a student's own modification or a handout
    modification adds the digest of its code (``variant_code``), and a config the digest of the lab cells a run trains
    with (``lab_code``: 01's Dataset and caption encoding; 02's head, model, loss and step), so any change in one of
    those cells is a new run."""
    values = cfg.to_dict() if isinstance(cfg, Config) else cfg
    flags = parse_variant(str(values.get("variant", "baseline")))
    out = {k: values.get(k) for k in IDENTITY_FIELDS if only_with(k) is None or only_with(k) in flags}
    out["variant"] = spelling(flags)
    if not out.get("train_sizes"):  # no schedule: the same identity as a run trained before TRAIN_SIZES existed
        out.pop("train_sizes", None)
    code = student_sources(flags, cfg.lab if isinstance(cfg, Config) else None)
    if code:
        out["variant_code"] = code
    if isinstance(cfg, Config):  # what is asked for now (a stored record keeps what it was)
        out["text_model"] = text_tower_id(cfg.text_model)  # a local text tower by its content, not its path
        out["lab_code"] = cfg.lab.digest(TRAINING)  # the lab cells this run trains with, as this kernel ran them
    return out
