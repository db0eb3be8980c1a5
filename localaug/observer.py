"""What a run reports as it goes: the loop calls an Observer; the CLI's is rich live progress."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .records import IterationRow, StageSummary


class Observer(Protocol):
    def note(self, message: str) -> None: ...
    def stage_start(self, iteration: int, stage: str, total: int) -> None: ...
    def progress(self, done: int, total: int, info: dict[str, Any]) -> None: ...
    def stage_end(self, iteration: int, stage: str, summary: StageSummary) -> None: ...
    def iteration_end(self, iteration: int, row: IterationRow) -> None: ...


class NullObserver:
    def note(self, message: str) -> None:
        pass

    def stage_start(self, iteration: int, stage: str, total: int) -> None:
        pass

    def progress(self, done: int, total: int, info: dict[str, Any]) -> None:
        pass

    def stage_end(self, iteration: int, stage: str, summary: StageSummary) -> None:
        pass

    def iteration_end(self, iteration: int, row: IterationRow) -> None:
        pass
