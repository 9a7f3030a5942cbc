"""Processes that must not outlive the process that started them.

``torchrun`` starts its workers in sessions of their own, so SIGKILL to ``torchrun`` alone (an OOM killer, a
scheduler killing the launcher, ``kill -9`` of the pid a user sees) leaves the workers training and writing
checkpoints; a rerun then races them for the same folder. The same holds for the ANCE refresh worker when its
trainer dies. On Linux the kernel can send a signal to a process when its parent dies (``PR_SET_PDEATHSIG``):
densekit asks for SIGKILL in torchrun workers and in refresh workers started by a trainer.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
DIE_WITH_PARENT_ENV = "DENSEKIT_DIE_WITH_PARENT"  # set by a parent that starts densekit workers


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux); whether that is now in place."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
    return True


def bind_to_launcher() -> bool:
    """In a torchrun worker, or a worker whose parent asked for it: die with the parent."""
    if os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get(DIE_WITH_PARENT_ENV) == "1":
        return die_with_parent()
    return False
