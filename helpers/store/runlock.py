"""One writer per run folder (``runs/<run>/run.lock``): the core's folder lock (helpers/core/folderlock.py) on a run.

Notebook 02 and 04 (the trainer) hold it while they write a run; 04 checks it before it bases a study on a baseline run
that another process may be continuing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..core import folderlock
from ..core.folderlock import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS, FolderLock, RunLocked  # noqa: F401  (this module's API)
from .runs import RunDir


class RunLock(FolderLock):
    """``with RunLock(run_dir): ...`` holds the run folder; the lock goes when the block ends."""

    def __init__(self, run_dir: str | os.PathLike, purpose: str = "training", log: Callable[[str], None] = print):
        super().__init__(RunDir(Path(run_dir)).lock, purpose, log)


def live_holder(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The holder of a run folder's lock when it is another live process (training it now), else None."""
    return folderlock.live_holder(RunDir(Path(run_dir)).lock)


@contextlib.contextmanager
def holding(run_dir: str | os.PathLike, purpose: str, enabled: bool = True, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the run folder's lock for the block (``enabled=False``: DDP ranks other than 0)."""
    if not enabled:
        yield
        return
    with RunLock(run_dir, purpose, log=log):
        yield
