"""Named kill points for the fault-injection tests.

Why in the package: a test that SIGKILLs a process at a random moment mostly hits the
same moment (the longest step). ``kill_point(name)`` makes each risky moment reachable
on purpose: when ``CLIP_LAB_KILL_AT`` is ``"name"`` or ``"name:N"``, the process kills
itself with SIGKILL (no cleanup, no ``finally``) the N-th time it passes that point.
Unset (always, outside tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "CLIP_LAB_KILL_AT"
_passes: dict[str, int] = {}


def kill_point(name: str) -> None:
    target = os.environ.get(ENV)
    if not target:
        return
    head, sep, tail = target.rpartition(":")
    wanted, nth = (head, int(tail)) if sep and tail.isdigit() else (target, 1)
    if wanted != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
