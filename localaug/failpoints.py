"""Named points where the kill-and-resume tests make a run die (SIGKILL), instead of racing a timer.

A test in the same process may instead attach an action to a point (`on_failpoint`): e.g. kill one teacher
server exactly when half of a stage's requests are answered.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

FAILPOINT_ENV = "LOCALAUG_FAILPOINT"

_ACTIONS: dict[str, Callable[[], None]] = {}


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL at `name` when $LOCALAUG_FAILPOINT says so; run an attached action."""
    action = _ACTIONS.get(name)
    if action is not None:
        action()
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def halfway(name: str, done: int, total: int) -> None:
    """The failpoint `name`, once half of a stage's `total` items are done."""
    if done * 2 >= total > 1:
        failpoint(name)


@contextmanager
def on_failpoint(name: str, action: Callable[[], None]) -> Iterator[None]:
    """Run `action` in this process each time `name` is reached, while the context lasts (tests only)."""
    _ACTIONS[name] = action
    try:
        yield
    finally:
        _ACTIONS.pop(name, None)


def crash(name: str) -> None:
    """Raise at `name` when $LOCALAUG_FAILPOINT says so: a process that fails with a traceback of its own."""
    if os.environ.get(FAILPOINT_ENV) == name:
        raise RuntimeError(f"failpoint {name}")
