"""What makes a resumed run equal to an uninterrupted one: seeds, RNG states, and safe checkpoint writes.

Why: data order and caption draws are functions of (seed, epoch), and the RNG states of Python,
NumPy, torch and CUDA travel inside ``checkpoint.pt``; restoring them puts every random choice
of the next epoch back where it was. The run store writes a checkpoint in one piece or not at all
(helpers/store/runs.py: ``save_checkpoint``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


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
