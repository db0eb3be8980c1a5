"""Rows a student cannot take whole (longer than its context) and exact duplicate rows, found before a run.

A row's length is what the student trains on: its prompt plus its answer (and, for a scored task, the
longest choice), in the student's tokens, against `max_length`. Counting tokens needs the tokenizer, so two
bounds spare it: a row of at most `max_length - SPECIAL_TOKENS` UTF-8 bytes fits (a tokenizer writes at most
one token per byte, plus BOS, EOS and a word-start marker), and a row of more than `max_length *
MAX_TOKEN_CHARS` characters does not (no token localaug meets spans that many). So a 20 MB row is refused
without being tokenised, and the common short row is never tokenised at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .task import Example, Task

SPECIAL_TOKENS = 4
MAX_TOKEN_CHARS = 64


@dataclass
class StudentContext:
    """How long a row the student takes, and how it counts tokens (prompt, answers) -> tokens."""

    name: str
    max_length: int
    count: Callable[[str, Sequence[str]], int]


def row_tokens(task: Task, ex: Example, ctx: StudentContext) -> int | None:
    """The row's tokens when it is longer than the student's context (-1: longer, not counted), else None."""
    prompt, answers = task.student_texts(ex)
    longest = max(answers, key=len, default="")
    if len(prompt.encode()) + max((len(a.encode()) for a in answers), default=0) + SPECIAL_TOKENS <= ctx.max_length:
        return None
    if len(prompt) + len(longest) > ctx.max_length * MAX_TOKEN_CHARS:
        return -1
    n = ctx.count(prompt, answers)
    return n if n > ctx.max_length else None


def check_lengths(task: Task, files: dict[Path, list[Example]], ctx: StudentContext) -> list[str]:
    """Refuse the first row longer than the student's context, with its file and line; or, when the card says
    `data.too_long: truncate`, one note per file saying how many rows will be cut to fit."""
    notes = []
    truncate = task.card.data.too_long == "truncate"
    for path, rows in files.items():
        over = 0
        for ex in rows:
            n = row_tokens(task, ex, ctx)
            if n is None:
                continue
            if not truncate:
                size = f"{n:,} tokens" if n > 0 else f"over {ctx.max_length * MAX_TOKEN_CHARS:,} characters"
                raise UserError(
                    f"this row is {size} with its answer, longer than the student's context ({ctx.name}: "
                    f"max_length {ctx.max_length}); shorten it, raise the student's max_length "
                    "(student_settings), or set data.too_long: truncate in the task card", file=path, line=ex.line)
            over += 1
        if over:
            rows_are = "1 row is" if over == 1 else f"{over} rows are"
            notes.append(f"{path}: {rows_are} longer than the student's context (max_length {ctx.max_length}) "
                         "and cut to fit (data.too_long: truncate)")
    return notes


def duplicate_notes(task: Task) -> list[str]:
    """One note per file read so far that holds exact duplicate rows: how many, and the first one."""
    notes = []
    dropped = task.card.data.duplicates == "drop"
    for path, dups in task.duplicates.items():
        if dups:
            line, same = dups[0]
            fate = "dropped (data.duplicates: drop)" if dropped else "kept; data.duplicates: drop drops them"
            notes.append(f"{path}: {len(dups)} exact duplicate rows (the first: line {line} repeats line {same}), "
                         f"{fate}")
    return notes
