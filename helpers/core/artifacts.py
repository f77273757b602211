"""One reader for every artifact a later notebook reads: damaged files become one clear error.

Why: a file truncated by a disconnect, emptied by a full disk or overwritten by hand used to
surface as ``PytorchStreamReader failed reading zip archive`` or a ``KeyError`` deep in the
report. Here every reader goes through :func:`load_json` / :func:`load_torch` with the
artifact's *kind*; whatever is wrong (unreadable, zero bytes, wrong JSON shape, wrong tensor
shape) becomes an :class:`ArtifactError` that names the file, says what it is, and which
notebook rebuilds it. A missing file raises :class:`ArtifactMissing` (also a
``FileNotFoundError``) with the notebook to run.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .storage import read_json, torch_load

RECALL_KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")  # the keys every results file holds
_IO_ERRNOS = {errno.EIO, errno.EBUSY, errno.ETIMEDOUT, errno.EAGAIN, errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC}


class ArtifactError(RuntimeError):
    """An artifact is unreadable or inconsistent. The message names the file, its kind and the fix."""


class ArtifactMissing(ArtifactError, FileNotFoundError):
    """An artifact does not exist yet: the notebook that writes it has not run (in this ARTIFACTS_DIR)."""


@dataclass(frozen=True)
class Kind:
    what: str  # "the caption-embedding cache"
    rebuild: str  # "re-run 01_dataset_prep.ipynb (caption cache)"
    required: tuple[str, ...] = ()  # top-level keys that must be present
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None


def _lists(*keys: str) -> Callable[[Any], str | None]:
    def check(data: Any) -> str | None:
        bad = [k for k in keys if not isinstance(data.get(k), list)]
        return f"{', '.join(bad)} must be list(s)" if bad else None

    return check


def _text_embeds(data: Any) -> str | None:
    import torch

    emb = data["embeddings"]
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] == 0:
        return f"'embeddings' must be a non-empty 2-D tensor, got {getattr(emb, 'shape', type(emb).__name__)}"
    for key in ("image_ids", "caption_ids"):
        ids = data[key]
        if not isinstance(ids, torch.Tensor) or ids.shape != (emb.shape[0],):
            return f"'{key}' must be a 1-D tensor of {emb.shape[0]} ids, got {getattr(ids, 'shape', type(ids).__name__)}"
    if not isinstance(data["captions"], list) or len(data["captions"]) != emb.shape[0]:
        return f"'captions' must list {emb.shape[0]} captions"
    return None


def _model_state(data: Any) -> str | None:
    if not isinstance(data["model"], dict) or not data["model"]:
        return "'model' must be a non-empty state dict"
    if not isinstance(data["arch"], dict) or "variant" not in data["arch"]:
        return "'arch' must describe the architecture"
    return None


def _eval(data: Any) -> str | None:
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or any(not isinstance(metrics.get(k), (int, float)) for k in RECALL_KEYS):
        return f"'metrics' must hold {', '.join(RECALL_KEYS)}"
    if not isinstance(data.get("checkpoint"), dict) or "sha256" not in data["checkpoint"]:
        return "'checkpoint' must record the scored checkpoint's sha256"
    return None


_NB01, _NB02, _NB03, _NB04 = "01_dataset_prep.ipynb", "02_train_clip.ipynb", "03_evaluate_clip.ipynb", "04_ablation.ipynb"
KINDS: dict[str, Kind] = {
    "text_embeds": Kind(
        "the caption-embedding cache",
        f"delete it and re-run {_NB01} (caption cache)",
        ("embeddings", "caption_ids", "image_ids", "captions", "model", "normalized", "config"),
        _text_embeds,
    ),
    "splits": Kind("the split lists", f"delete it and re-run {_NB01}", ("protocol", "train", "val", "test", "restval"),
                   _lists("train", "val", "test", "restval")),
    "manifest": Kind("the image-cache manifest", f"delete the image_cache folder and re-run {_NB01} (image cache)",
                     ("format", "image_size", "quality", "parts")),
    "checkpoint": Kind("the training checkpoint", f"delete it and re-run {_NB02} (it retrains the run from scratch)",
                       ("model", "optimizer", "scheduler", "epoch", "history", "arch", "config"), _model_state),
    "best": Kind("the best-epoch checkpoint", f"delete it and re-run {_NB02} with FORCE_RETRAIN=True",
                 ("model", "arch", "config", "epoch"), _model_state),
    "history": Kind("the training history", f"re-run {_NB02}: it rewrites the history from the checkpoint",
                    ("epochs", "steps"), _lists("epochs", "steps")),
    "metrics": Kind("the run's training summary", f"delete it and re-run {_NB02} (the run resumes, nothing is retrained)",
                    ("run_name", "best_epoch", "best_val", "hardware", "config", "epochs")),
    "config": Kind("the run's configuration", f"re-run {_NB02}", ()),
    "eval": Kind("the evaluation results", f"delete it and re-run {_NB03}", ("metrics", "checkpoint", "split", "num_images"), _eval),
    "figures": Kind("the figures' stamp", f"re-run {_NB03}", ("checkpoint",)),
    "ablation": Kind("the ablation summary", f"re-run {_NB04} (finished runs are reused)", ("table", "runs", "config")),
}  # fmt: skip


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, shortened (library messages can run to pages)."""
    return (str(exc).splitlines() or [""])[0][:limit]


def _fail(path: Path, kind: Kind, problem: str) -> ArtifactError:
    return ArtifactError(f"{path} ({kind.what}) is damaged: {problem}. To fix: {kind.rebuild}.")


def _validate(path: Path, kind_name: str, data: Any) -> Any:
    kind = KINDS[kind_name]
    if not isinstance(data, dict):
        raise _fail(path, kind, f"expected a mapping, found {type(data).__name__}")
    missing = [k for k in kind.required if k not in data]
    if missing:
        raise _fail(path, kind, f"missing {', '.join(missing)}")
    problem = kind.check(data) if kind.check else None
    if problem:
        raise _fail(path, kind, problem)
    return data


def _missing(path: Path, kind_name: str) -> ArtifactMissing:
    kind = KINDS[kind_name]
    notebook = kind.rebuild.split("re-run ", 1)[-1].split(" ", 1)[0]
    return ArtifactMissing(f"No {path} ({kind.what}): run {notebook} first, with the same ARTIFACTS_DIR")


def load_json(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Read a JSON artifact of ``kind`` and check its shape; any damage raises :class:`ArtifactError`."""
    path = Path(path)
    if not path.exists():
        raise _missing(path, kind)
    try:
        data = read_json(path)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: truncated, zero bytes, binary garbage
        raise _fail(path, KINDS[kind], f"not valid JSON ({exc.__class__.__name__}: {exc})") from None
    return _validate(path, kind, data)


def load_torch(path: str | os.PathLike, kind: str, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a ``.pt`` artifact of ``kind`` (weights_only) and check its shape."""
    path = Path(path)
    if not path.exists():
        raise _missing(path, kind)
    try:
        data = torch_load(path, map_location=map_location)
    except OSError as exc:
        if exc.errno in _IO_ERRNOS:  # the disk or Drive failed, not the file
            raise
        raise _fail(path, KINDS[kind], f"unreadable ({exc.__class__.__name__}: {first_line(exc)})") from None
    except Exception as exc:  # zip/pickle/EOF errors of a truncated or foreign file
        raise _fail(path, KINDS[kind], f"unreadable ({exc.__class__.__name__}: {first_line(exc)})") from None
    return _validate(path, kind, data)


def try_load_json(path: str | os.PathLike, kind: str) -> tuple[dict[str, Any] | None, str | None]:
    """For readers that degrade gracefully (the report): (data, None), (None, None) if absent, (None, problem) if damaged."""
    try:
        return load_json(path, kind), None
    except ArtifactMissing:
        return None, None
    except ArtifactError as exc:
        return None, str(exc)


def load_weights(model: Any, state: dict[str, Any], path: str | os.PathLike, kind: str) -> None:
    """``model.load_state_dict(state["model"])``; tensors of the wrong shape or names become an :class:`ArtifactError`."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise _fail(Path(path), KINDS[kind], f"its weights do not fit the stored architecture ({first_line(exc)})") from None


class StaleArtifact(ArtifactError):
    """A results file scored a model that is no longer the run's checkpoint (it was retrained)."""
