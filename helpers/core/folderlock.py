"""One writer per folder: a lock file with the holder's PID, host and start time.

Why: two trainings of the same run (a second browser tab, notebook 02 and 04 at once, a
re-run while the first is still going) used to interleave their writes: ``config.json`` from
one, ``checkpoint.pt`` from the other; two notebook 01s preparing the same ARTIFACTS_DIR removed
each other's temporary files. Now the first takes the lock file (``runs/<run>/run.lock``,
``ARTIFACTS_DIR/prepare.lock``: helpers/store/runlock.py and notebook 01's steps); the second
stops at once with a message naming the holder.

Stale locks. A holder that dies (Colab disconnect, SIGKILL, out of memory) cannot remove
its lock, so a lock is taken over when its holder is provably gone:
- on the same host, when its PID no longer runs;
- on another host (a new Colab VM reading the same Drive folder), when its heartbeat is old:
  the holder touches the file every ``HEARTBEAT_SECONDS``; a lock untouched for
  ``STALE_AFTER_SECONDS`` belongs to a dead session.
The lock is created with ``O_CREAT | O_EXCL``, so of two processes racing for it one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 180.0  # six missed heartbeats: Drive can delay a write, never by minutes


class RunLocked(RuntimeError):
    """Another live process holds the folder (a run's, or ARTIFACTS_DIR while notebook 01 prepares it)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """``with FolderLock(lock_file): ...`` holds the folder of ``lock_file``; the lock goes when the block ends. ``advice``
    ends the message a second writer gets (what to do instead)."""

    def __init__(self, lock_file: str | os.PathLike, purpose: str = "training", log: Callable[[str], None] = print,
                 advice: str = "Wait for it to finish (or stop it), or use another RUN_NAME."):  # fmt: skip
        self.path = Path(lock_file)
        self.purpose, self.log, self.advice = purpose, log, advice
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose}

    # ----------------------------------------------------------------- inspection
    def holder(self) -> dict[str, Any] | None:
        """The lock's content, ``{}`` if unreadable (a writer died mid-write), None if there is no lock."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {}

    def stale_reason(self, holder: dict[str, Any]) -> str | None:
        """Why the holder is gone, or None if it may still be alive."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "released meanwhile"
        if holder.get("host") == self.me["host"] and isinstance(holder.get("pid"), int):
            if holder["pid"] == self.me["pid"]:
                return "left by this same process (an interrupted cell)"
            if not _pid_alive(holder["pid"]):
                return f"process {holder['pid']} on this host is no longer running"
            return None
        if age > STALE_AFTER_SECONDS:
            return f"no heartbeat for {age / 60:.0f} min (its session ended)"
        return None

    # ----------------------------------------------------------------- acquire / release
    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir():
            raise RunLocked(f"{self.path} is a folder, not this kit's lock file: delete it (rm -r '{self.path}'), then re-run")
        for _ in range(5):
            record = {**self.me, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue  # released between our two calls: try again
                reason = self.stale_reason(holder)
                if reason is None:
                    raise RunLocked(
                        f"{self.path.parent} is in use: {holder.get('purpose', 'a run')} by PID {holder.get('pid')} on host "
                        f"{holder.get('host')!r} since {holder.get('started')}. {self.advice} If that process is gone, its lock is "
                        f"taken over automatically once it is {STALE_AFTER_SECONDS / 60:.0f} min old; or delete {self.path} yourself."
                    ) from None
                self.log(f"Taking over a stale lock on {self.path.parent.name}: {reason}")
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh)
            self._thread = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
            self._thread.start()
            return self
        raise RunLocked(f"Could not take {self.path} after several attempts: another process keeps taking it")

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):  # a Drive hiccup: the next beat tries again
                os.utime(self.path)

    def release(self) -> None:
        """Remove the lock if it is still ours. A failure to (a read-only or vanished folder) is a warning, never an
        error: it must not hide the error that ended the run, and a lock left behind is taken over later."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            holder = self.holder()
            if holder is not None and holder.get("pid") == self.me["pid"] and holder.get("host") == self.me["host"]:
                self.path.unlink(missing_ok=True)
        except OSError as exc:
            warnings.warn(f"Could not remove the lock {self.path} ({exc}): the next run takes it over as stale", stacklevel=2)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def live_holder(lock_file: str | os.PathLike) -> dict[str, Any] | None:
    """The holder of a lock file when it is another live process (writing the folder now), else None."""
    lock = FolderLock(lock_file)
    holder = lock.holder()
    if not holder or (holder.get("pid") == lock.me["pid"] and holder.get("host") == lock.me["host"]):
        return None
    return holder if lock.stale_reason(holder) is None else None
