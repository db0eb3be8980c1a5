"""A run's state in a few words, for `localaug runs` and the head of report.html."""

from __future__ import annotations

from .. import layout
from ..store import RunStore


def run_status(store: RunStore, why: bool = True) -> str:
    """"finished", "running: <stage>", or "stopped at <stage>" (a run that died or was stopped there); with
    `why`, why a finished run stopped before its last iteration."""
    m = store.manifest
    if m.finished:  # (a finished run's own report is written while it still holds the lock)
        if not m.stopped_early:
            return "finished"
        return f"finished (stopped early: {m.stopped_early})" if why else "finished (stopped early)"
    if store.is_running():
        return f"running: {_where(m.in_progress)}" if m.in_progress else "running"
    if m.in_progress:
        return f"stopped at {_where(m.in_progress)}"
    if m.stages:  # a run of an earlier localaug records no stage in progress: say what it finished last
        last = max(m.stages, key=lambda k: m.stages[k].finished)
        return f"stopped after {_where(last)}"
    return "stopped before its first stage"


def _where(key: str | None) -> str:
    """A stage key for people: "iter_01/fold0/train" -> "iteration 1, train (fold0)"."""
    if not key:
        return "?"
    folder = layout.folder_of(key)
    name = layout.stage_name(key)
    if folder is None:
        return name
    if folder.iteration >= 0:
        where = f"iteration {folder.iteration}"
    else:
        where = folder.path.split("/", 1)[0]  # final, preflight
    sub = f" ({folder.label})" if folder.label else ""
    return f"{where}, {name}{sub}"
