"""The frozen CLIP text tower: loaded once, frozen, and handed to the one function that encodes cached captions
*and* live queries, ``encode_text`` (the lab's code: notebook 01's cell ``caption-encoding``).

Why one function: peers mixed ``pooler_output`` (512-d before projection) for cached
captions with projected features for queries and lost their results. Here everything
goes through ``encode_text``, which returns ``CLIPTextModelWithProjection(...)
.text_embeds``, the same in transformers 4.4x and 5.x (``CLIPModel.get_text_features``
changed its return type in v5); the caption caches record its text, and 03 encodes its
queries with the very cell that encoded the captions.

Why sort by length and pad per batch: CLIP's text transformer is causal and pools at
the EOS token, so tokens after EOS never influence the embedding. Padding a batch to
its longest caption instead of to 77 gives identical embeddings (tested) with several
times fewer tokens; sorting by length keeps batches uniform.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.artifacts import first_line
from ..core.lab import LabCode, call_yours, came_back

MAX_LENGTH = 77  # CLIP's context length: longer captions are truncated (EOS kept)


@dataclass
class TextTower:
    name: str
    tokenizer: Any
    model: Any  # CLIPTextModelWithProjection, eval mode, no grads
    device: torch.device

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)


@dataclass
class EncodeStats:
    captions: int = 0
    tokens: int = 0  # tokens actually run through the transformer (incl. padding)
    tokens_if_padded_to_77: int = 0
    truncated: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def token_reduction(self) -> float:
        return self.tokens_if_padded_to_77 / max(1, self.tokens)


@contextlib.contextmanager
def no_loading_bars(quiet: bool = False) -> Iterator[None]:
    """transformers' "Loading weights 0/37" bars off for the block (downloads keep theirs): they spilled into the
    notebooks' outputs on every load, between the lines a student reads. With ``quiet``, its warnings too: transformers 5
    logs a "LOAD REPORT" table of every unused key (about 200 lines of the vision half when the text tower is read from
    a whole CLIP checkpoint, as from the hub's openai/clip-vit-base-patch32), which reads as an error in red; the caller
    checks the loading information itself (:func:`load_text_tower`)."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    verbosity = logging.get_verbosity()
    logging.disable_progress_bar()
    if quiet:
        logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if was_enabled:
            logging.enable_progress_bar()


class MissingWeights(OSError):
    """A checkpoint lacks some of a tower's tensors: transformers would fill them with random values."""


def pretrained(model_class: Any, name: str, what: str) -> Any:
    """``model_class.from_pretrained(name)``, quietly (no bars, no load report of unused keys) and checked: a tensor the
    checkpoint lacks is an error, never a random value (every embedding of the tower would carry it)."""
    with no_loading_bars(quiet=True):
        model, info = model_class.from_pretrained(name, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise MissingWeights(
            f"TEXT_MODEL={name!r} holds no weights for {len(missing)} tensor(s) of the {what} (e.g. {missing[0]}): they would "
            "be random, and so would every embedding it makes. Point TEXT_MODEL at a CLIP model or tower saved whole with "
            "save_pretrained() (the hub's openai/clip-vit-base-patch32 is one)."
        )
    return model


def load_text_tower(name: str, device: str | torch.device | None = None) -> TextTower:
    """Load tokenizer + ``CLIPTextModelWithProjection`` from a hub name or a local folder, frozen."""
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    local = os.path.isdir(name)
    try:
        with no_loading_bars(quiet=True):
            tokenizer = AutoTokenizer.from_pretrained(name)
        model = pretrained(CLIPTextModelWithProjection, name, "text tower")
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: weights of another shape (transformers' own check)
        if isinstance(exc, MissingWeights):
            raise
        hint = (
            "the folder must hold a save_pretrained() text model and tokenizer"
            if local
            else "check the name and your internet connection, or set TEXT_MODEL to a local save_pretrained() folder"
        )
        raise OSError(f"Could not load TEXT_MODEL={name!r}: {hint}. ({first_line(exc, 300)})") from exc
    model.eval().requires_grad_(False).to(device)  # frozen: the image tower learns into this space
    return TextTower(name=name, tokenizer=tokenizer, model=model, device=device)


def display_name(name: str) -> str:
    """A hub id as it is; a local ``save_pretrained`` folder by its folder name, never the machine's full path."""
    return os.path.basename(os.path.normpath(name)) if os.path.isabs(name) or os.path.isdir(name) else name


def parameter_count(name: str) -> int | None:
    """Parameters of the text tower ``name`` (a hub id or a local folder) from its config alone: the model is built on
    PyTorch's meta device, so no weights are read and no memory is allocated. None when the config cannot be read.

    Why: notebook 02 trains against cached caption embeddings and never loads the tower, yet its parameter table must
    say what stays frozen (CLIP ViT-B/32's text transformer and projection: about 63M)."""
    from transformers import AutoConfig, CLIPTextConfig, CLIPTextModelWithProjection

    try:
        with no_loading_bars():
            config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return None
    if not isinstance(config, CLIPTextConfig):  # a whole CLIP model's config (the hub's openai/clip-*): its text half
        text_config = getattr(config, "text_config", None)
        if text_config is None:
            return None
        text_config.projection_dim = getattr(config, "projection_dim", text_config.projection_dim)
        config = text_config
    with torch.device("meta"):
        model = CLIPTextModelWithProjection(config)
    return sum(p.numel() for p in model.parameters())


def encode_texts(lab: LabCode, texts: list[str], tower: TextTower, **kwargs: Any) -> torch.Tensor:
    """``texts`` encoded by ``lab``'s ``encode_text`` (notebook 01's cell: the caption caches, 03's prompts and live queries,
    Flickr30k's captions), checked: one finite row per text, as wide as the tower's embedding and of unit length (the kit
    scores dot products as cosines), else the cell is named with what it returned."""
    expected = (len(texts), tower.dim)
    return call_yours(lab, "encode_text", texts, tower, check=lambda out: _embedding_problem(out, expected, kwargs.get("normalize", True)),
                      **kwargs)  # fmt: skip


UNIT_TOLERANCE = 1e-2  # float16 caches keep about 3 decimal digits: a unit vector's stored length is within 1e-3 of 1


def _embedding_problem(out: Any, expected: tuple[int, int], normalized: bool) -> str | None:
    if not torch.is_tensor(out) or tuple(out.shape) != expected or not out.is_floating_point():
        return f"{came_back(out)}; the kit needs one floating-point embedding per text, a tensor of shape {expected}"
    if not torch.isfinite(out).all():
        return f"embeddings holding NaN or infinity ({int((~torch.isfinite(out)).any(1).sum())} of {len(out)} rows)"
    if normalized and len(out):
        norms = out.float().norm(dim=1)
        worst = float((norms - 1).abs().max())
        if worst > UNIT_TOLERANCE:
            return (f"embeddings of length {float(norms.min()):.3g} to {float(norms.max()):.3g}; every score of the kit is a cosine: "
                    "return unit vectors (torch.nn.functional.normalize(emb, dim=-1))")  # fmt: skip
    return None
