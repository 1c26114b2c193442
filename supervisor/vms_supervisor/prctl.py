"""Linux's prctl for what vms asks of it: a child that dies with its parent, a parent that adopts orphans."""

import contextlib
import ctypes
import signal

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent's signal forwarding still applies
        ctypes.CDLL(None, use_errno=True).prctl(option, value)


def die_with_parent() -> None:
    """In a child: SIGTERM when the parent dies outright (SIGKILL included), rather than living on as an orphan."""
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
