"""What makes a resumed run equal to an uninterrupted one: seeds, RNG states, and safe checkpoint writes.

Why: data order and caption draws are functions of (seed, epoch), and the RNG states of Python,
NumPy, torch and CUDA travel inside ``checkpoint.pt``; restoring them puts every random choice
of the next epoch back where it was. A checkpoint is written in one piece or not at all.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.env import Paths
from ..core.storage import atomic_copy, atomic_torch_save


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state, as tensors and lists only (``torch.load(weights_only=True)`` reads them back)."""
    python = random.getstate()
    state = {
        "python": list(python[1]),
        "python_pos": python[2] if python[2] is not None else -1,
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(state["python"]), None if state["python_pos"] == -1 else state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], dest: Path, paths: Paths) -> None:
    """Write ``state`` to ``dest`` atomically. On Colab/Kaggle: to local disk first, then copy into ARTIFACTS_DIR.

    Drive's FUSE mount fails now and then (Errno 5); the copy is retried with backoff,
    and a failed copy never leaves a half-written checkpoint behind.
    """
    if paths.environment != "local":
        with tempfile.TemporaryDirectory(dir=paths.cache_dir) as tmp:
            local = atomic_torch_save(state, Path(tmp) / dest.name)
            atomic_copy(local, dest)
    else:
        atomic_torch_save(state, dest)
