"""The words and numbers every view of a run shares: the terminal's table, report.md, report.html, the closing line."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from .. import layout
from ..records import (
    AugmentSummary,
    DedupSummary,
    FinalModel,
    IterationRow,
    Manifest,
    Preflight,
    TeacherServer,
    VerifySummary,
)

COLUMNS = [
    ("iteration", "iter", "{}"),
    ("train_size", "train", "{}"),
    ("seed_accuracy", "seed acc", "{:.1%}"),
    ("wrong", "wrong", "{}"),
    ("new_examples", "new", "{}"),
    ("holdout_accuracy", "held-out acc", "{:.1%}"),
    ("test_accuracy", "test acc", "{:.1%}"),
    ("seconds", "time (s)", "{:.0f}"),
]


def cell(row: IterationRow, key: str, fmt: str) -> str:
    v = getattr(row, key)
    return "-" if v is None else fmt.format(v)


# The wide table's natural width: its eight headers, padding and borders.
WIDE_TABLE_COLUMNS = 78


def iteration_table(rows: list[IterationRow], title: str = "LLM2LLM iterations", width: int | None = None) -> Table:
    """One row per iteration; in a terminal narrower than the wide table (`width` columns), one row per
    measure and one column per iteration instead, so no header or number is cut to an ellipsis."""
    table = Table(title=title)
    if width is not None and width < WIDE_TABLE_COLUMNS:
        table.add_column("iter", no_wrap=True)
        for r in rows:
            table.add_column(str(r.iteration), justify="right")
        for key, header, fmt in COLUMNS[1:]:
            table.add_row(header, *[cell(r, key, fmt) for r in rows])
        return table
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for r in rows:
        table.add_row(*[cell(r, key, fmt) for key, _, fmt in COLUMNS])
    return table


ONE_RUN = "One run is one sample: compare over several seeds (bench/study.py) before drawing conclusions."


def final_verdict(final: FinalModel) -> str:
    """For runs that held seeds out: which model was kept, and why."""
    scores = ", ".join(f"iteration {i}: {a:.1%}" for i, a in enumerate(final.holdout_accuracy))
    k = final.kept_iteration
    if k == 0:
        choice = ("No augmented student beat plain fine-tuning on the held-out seeds, so the teacher's data "
                  "was NOT used: the final model is plain fine-tuning on all seed examples")
    else:
        choice = (f"The student of iteration {k} beat plain fine-tuning on the held-out seeds, so its "
                  f"{final.added} teacher examples were kept: the final model is trained on all seed "
                  "examples plus those")
    return (f"Held-out seed accuracy ({scores}). {choice} (final/adapter). Its test accuracy is "
            f"{final.test_accuracy:.1%}. The iteration rows are the loop's students, trained without the "
            f"held-out seeds. {ONE_RUN}")


def verdict(rows: list[IterationRow], final: FinalModel | None = None) -> str:
    """One honest sentence: did augmentation beat plain fine-tuning (iteration 0) on the test set?"""
    if not rows:
        return "No iteration has finished yet."
    if final:
        return final_verdict(final)
    base = rows[0].test_accuracy
    if len(rows) == 1:
        return f"Only plain fine-tuning ran (test accuracy {base:.1%}); no augmented student to compare."
    best = max(rows, key=lambda r: r.test_accuracy)
    last = rows[-1]
    delta = last.test_accuracy - base
    text = (f"Plain fine-tuning (iteration 0): {base:.1%}. Final student (iteration {last.iteration}): "
            f"{last.test_accuracy:.1%} ({delta * 100:+.1f} points).")
    if delta < 0:
        text += (" The augmented student is WORSE than plain fine-tuning on this run: keep the iteration-0 "
                 "adapter (iter_00/adapter), or use a stronger teacher.")
    elif best.iteration != last.iteration:
        text += f" The best test accuracy was at iteration {best.iteration} ({best.test_accuracy:.1%})."
    return f"{text} {ONE_RUN}"


def plain_and_final(m: Manifest) -> tuple[float | None, float | None]:
    """(plain fine-tuning's test accuracy, the result's): iteration 0 and the final model, or the last round."""
    rows = m.rows()
    if not rows:
        return None, None
    return rows[0].test_accuracy, (m.final.test_accuracy if m.final else rows[-1].test_accuracy)


def teacher_added(m: Manifest) -> int:
    """The teacher's examples added to the training data over the rounds (each round's dedup stage)."""
    total = 0
    for key, summary in m.stages.items():
        folder = layout.folder_of(key)
        if (isinstance(summary, DedupSummary) and folder is not None and folder.iteration >= 0
                and not folder.label):
            total += summary.accepted
    return total


def closing_line(m: Manifest, html: Path) -> str:
    """What the terminal says last: how many examples the teacher added, and where to read them."""
    rounds = sum(1 for k in m.stages if layout.stage_name(k) == layout.DEDUP)
    added = teacher_added(m)
    kept = ""
    if m.final is not None and m.final.kept_iteration > 0:
        kept = f"; the final model keeps {m.final.added} of them (the data of iteration {m.final.kept_iteration})"
    elif m.final is not None:
        kept = "; the final model uses none of them"
    return (f"The teacher added {added} example{'s' if added != 1 else ''} in {rounds} "
            f"round{'s' if rounds != 1 else ''}{kept}. Every teacher example, kept or refused and why: {html}")


def preflight_sentences(pre: Preflight | None) -> list[str]:
    """The teacher preflight beside the first student, in sentences (its warning is the caller's to show)."""
    if not pre:
        return []
    out = [f"Before the loop, the teacher labelled {pre.correct} of {pre.total} seed examples right "
           f"({pre.teacher_accuracy:.1%}), asked as its verifier asks it ({layout.PREFLIGHT.teacher_labels})."]
    if pre.student_oof_accuracy is not None:
        out.append(f"Students trained without them (out of fold) got {pre.student_oof_accuracy:.1%} of the seed "
                   f"examples right; plain fine-tuning got {pre.student_seed_accuracy or 0:.1%} of its own training "
                   "examples right.")
    elif pre.student_holdout_accuracy is not None:
        out.append(f"Plain fine-tuning (iteration 0) got {pre.student_holdout_accuracy:.1%} of the held-out seed "
                   f"examples right ({pre.student_seed_accuracy or 0:.1%} of its own training examples).")
    elif pre.student_seed_accuracy is not None:
        out.append(f"Plain fine-tuning (iteration 0) got {pre.student_seed_accuracy:.1%} of its own training "
                   "examples right (no held-out seeds in this recipe).")
    return out


TEACHER_COLUMNS = ("stage", "targets", "completions", "parsed", "parse failures", "repeats", "verified", "added",
                   "cached")


def teacher_rows(m: Manifest) -> list[list[str]]:
    """What the teacher did in each round (TEACHER_COLUMNS), from the stage summaries."""
    out = []
    for key in sorted(k for k in m.stages if layout.stage_name(k) == layout.AUGMENT):
        folder = key.rsplit("/", 1)[0]
        aug, ver, dd = (m.stages.get(f"{folder}/{name}") for name in (layout.AUGMENT, layout.VERIFY, layout.DEDUP))
        assert isinstance(aug, AugmentSummary)
        verified = str(ver.verified) if isinstance(ver, VerifySummary) else "-"
        added = str(dd.accepted) if isinstance(dd, DedupSummary) else "-"
        out.append([key, str(aug.wrong), str(aug.completions), str(aug.parsed), f"{aug.parse_failure_rate:.0%}",
                    str(aug.repeats), verified, added, str(aug.cached)])
    return out


SERVER_COLUMNS = ("server", "model", "software", "constraint", "requests answered", "set aside")


def server_rows(servers: list[TeacherServer]) -> list[list[str]]:
    """The teacher's servers (manifest `teacher_servers`, SERVER_COLUMNS): what each answered."""
    return [[r.url, r.model, " ".join(p for p in (r.software, r.version) if p) or "-", r.constraint, str(r.answered),
             str(r.set_aside)] for r in servers]


def loose_server_note(servers: list[TeacherServer]) -> str | None:
    """What a server that honours no constraint field costs, or None."""
    loose = [r.url for r in servers if r.constraint == "none"]
    if not loose:
        return None
    return (f"{', '.join(loose)} honoured no constraint field (structured_outputs, guided_choice, grammar): the "
            "verifier read each label from the first line of free text, which rejects more candidates "
            "(docs/teachers.md).")
