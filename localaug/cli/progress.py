"""Rich live progress for `localaug run`: iteration (from 0, as everywhere), stage, items, accepted/rejected,
tokens/s, ETA."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import layout
from ..layout import FINAL
from ..records import AugmentSummary, DedupSummary, EvalSummary, IterationRow, LabelSummary, StageSummary, VerifySummary
from ..report.summary import iteration_table

STAGE_WORDS = {
    layout.TRAIN: "training student",
    layout.eval_stage("seed"): "evaluating on seed set",
    layout.eval_stage("test"): "evaluating on test set",
    layout.eval_stage("holdout"): "evaluating on held-out seeds",
    layout.eval_stage("fold"): "out-of-fold student judging its seed examples",
    layout.eval_stage("candidates"): "out-of-fold student judging teacher examples",
    layout.AUGMENT: "teacher writing examples",
    layout.VERIFY: "teacher checking labels",
    layout.DEDUP: "dedup + contamination guard",
    layout.LABEL: "teacher labelling seed examples",
}


def _words(stage: str) -> str:
    """What a stage is doing, for people ("train@fold1": the out-of-fold student of fold 1 training)."""
    base, _, sub = stage.partition("@")
    words = STAGE_WORDS.get(base, base)
    return f"{words} ({sub.replace('fold', 'fold ')})" if sub else words


def _where(iteration: int, total: int) -> str:
    """Which student, numbered as the table, the files (iter_00) and the reports number them: from 0."""
    if iteration < 0:
        return "final model" if iteration == FINAL.iteration else "preflight"
    return f"iter {iteration} of 0-{total - 1}" if total > 1 else f"iter {iteration}"


class RichObserver:
    def __init__(self, iterations: int, console: Console | None = None) -> None:
        self.console = console or Console()
        self.iterations = iterations
        self.rows: list[IterationRow] = []
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=True,
        )
        self._task_id: Any = None

    def __enter__(self) -> RichObserver:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def note(self, message: str) -> None:
        self.console.print(message, style="bold yellow", soft_wrap=True)  # one line: the terminal may fold it

    def stage_start(self, iteration: int, stage: str, total: int) -> None:
        if self._task_id is not None:
            self._bar.remove_task(self._task_id)
        desc = f"{_where(iteration, self.iterations)} · {_words(stage)}"
        self._task_id = self._bar.add_task(desc, total=max(total, 1), info="")

    def progress(self, done: int, total: int, info: dict[str, Any]) -> None:
        if self._task_id is None:
            return
        parts = []
        for key, fmt in (("loss", "loss {:.3f}"), ("accepted", "accepted {}"), ("rejected", "rejected {}"),
                         ("tokens_per_s", "{:.0f} tok/s")):
            if info.get(key) is not None:
                parts.append(fmt.format(info[key]))
        self._bar.update(self._task_id, completed=done, total=max(total, 1), info="  ".join(parts))

    def stage_end(self, iteration: int, stage: str, summary: StageSummary) -> None:
        # print, not log: a log line ends in the source location of this call, of no use to a user
        self.console.print(f"{_where(iteration, self.iterations)} {_words(stage)}: " + ", ".join(_said(summary)),
                           markup=False)

    def iteration_end(self, iteration: int, row: IterationRow) -> None:
        self.rows.append(row)
        self.console.print(iteration_table(self.rows, width=self.console.width))


def _said(summary: StageSummary) -> list[str]:
    """What a finished stage did, in a few words."""
    bits = [f"{summary.seconds:.1f}s"]
    if isinstance(summary, EvalSummary):
        bits.append(f"accuracy {summary.accuracy:.1%}")
    elif isinstance(summary, LabelSummary):
        bits.append(f"the teacher labels {summary.correct} of {summary.total} right ({summary.teacher_accuracy:.0%})")
    elif isinstance(summary, AugmentSummary):
        if summary.repeats:
            bits.append(f"{summary.repeats} repeated an earlier sample")
        bits.append(f"{summary.parsed} parsed of {summary.completions} ({summary.cached} from cache)")
    elif isinstance(summary, DedupSummary):
        bits.append(f"accepted {summary.accepted}, duplicate {summary.duplicate}, contaminated {summary.contaminated}")
    elif isinstance(summary, VerifySummary):
        bits.append(f"{summary.verified} of {summary.candidates} confirmed by {summary.verifier}")
    return bits
