"""Child processes that never outlive natrium."""

from __future__ import annotations

import contextlib
import ctypes
import signal

__all__ = ["die_with_parent"]


def die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when its parent dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
