"""Named points where the kill-and-resume tests make a run die (SIGKILL), instead of racing a timer."""

from __future__ import annotations

import os
import signal

FAILPOINT_ENV = "LOCALAUG_FAILPOINT"


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL at `name` when $LOCALAUG_FAILPOINT says so."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def halfway(name: str, done: int, total: int) -> None:
    """The failpoint `name`, once half of a stage's `total` items are done."""
    if done * 2 >= total > 1:
        failpoint(name)
