"""What a run's manifest says about its teacher servers, and the check that a resumed run keeps its model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..records import TeacherServer
from .pool import TeacherPool

if TYPE_CHECKING:  # the run directory is the caller's; this module hands its store typed records
    from ..store import RunStore


def pool_of(teacher: Any) -> TeacherPool | None:
    """The server pool behind a (cached) teacher, or None for an in-process one."""
    inner = getattr(teacher, "teacher", teacher)  # CachedTeacher wraps it
    return inner if isinstance(inner, TeacherPool) else None


def _records(pool: TeacherPool, previous: list[TeacherServer]) -> list[TeacherServer]:
    return [TeacherServer(**r) for r in pool.server_records([p.to_json() for p in previous])]


def servers_at_start(store: RunStore, teacher: Any) -> list[TeacherServer]:
    """Refuse to resume a run whose servers now serve another model; record the servers (their counts so
    far). Returns the record of the run's earlier processes, for `servers_at_end`."""
    pool = pool_of(teacher)
    previous = list(store.manifest.teacher_servers)
    if pool is None:
        return previous
    before = store.manifest.models.get("teacher")
    # Runs of localaug before pools keyed the teacher by its URL ("http:http://..."): not comparable.
    if before and not before.startswith("http:http") and before != pool.identity:
        raise UserError(f"this run's teacher was {before}, and the servers now serve {pool.identity}: point "
                        "--teacher-url at servers of the run's model, or start another run (--out)",
                        file=store.root)
    store.record_teacher_servers(_records(pool, previous))
    return previous


def servers_at_end(store: RunStore, teacher: Any, previous: list[TeacherServer]) -> None:
    """Add what each server answered in this process to the record."""
    pool = pool_of(teacher)
    if pool is not None:
        store.record_teacher_servers(_records(pool, previous))
