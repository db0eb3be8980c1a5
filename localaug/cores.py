"""How many cores this process may use."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The CPUs this process's affinity mask allows (taskset, a container's cpuset, a scheduler's share), not the
    machine's count: llama.cpp's threads spin while they wait for each other, and two of them on one allowed core
    run several times slower than one."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
