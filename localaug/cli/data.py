"""`localaug tasks` and `localaug data check`: what tasks exist and whether their files are sound."""

from __future__ import annotations

from collections import Counter

import click
from rich.console import Console
from rich.table import Table

from ..errors import UserError, warn
from ..modelcards import DEFAULT_STUDENT
from ..task.task import builtin_task_names, load_task

data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False),
                               help="Root of task data (default: $LOCALAUG_DATA_DIR, then ./data).")


@click.command()
@data_dir_option
def tasks(data_dir: str | None) -> None:
    """List the built-in tasks with the rows found for each split."""
    table = Table(title="localaug tasks")
    for col in ("task", "kind", "labels", "rows per split"):
        table.add_column(col)
    for name in builtin_task_names():
        task = load_task(name, data_dir)
        counts = []
        for split in task.splits():
            try:
                counts.append(f"{split} {len(task.load_split(split)):,}")
            except UserError as e:
                counts.append(f"{split}: [red]{'missing' if 'not found' in str(e) else 'invalid'}[/red]")
        if task.labels:
            words = ", ".join(task.labels.values())
            labels = f"{len(task.labels)}: " + (words if len(words) <= 40 else words[:39] + "…")
        else:
            labels = task.kind.answer_shape
        table.add_row(name, task.kind.name, labels, " / ".join(counts))
    Console().print(table)


@click.group()
def data() -> None:
    """Check a task's data files."""


@data.command("check")
@click.argument("task_name")
@data_dir_option
@click.option("--student", default=DEFAULT_STUDENT, show_default=True,
              help="The student whose context (max_length) every row must fit: a card or an installed plug-in.")
def check(task_name: str, data_dir: str | None, student: str) -> None:
    """Validate every row of TASK's files and the card's templates, and summarise them (the first bad row
    stops it, exit 2): rows longer than the student's context, and exact duplicates, are reported too."""
    from ..checks import check_data

    task = load_task(task_name, data_dir)
    split_rows, notes = check_data(task, student)
    table = Table(title=f"{task.name} ({task.kind.name})")
    for col in ("split", "file", "rows", "labels"):
        table.add_column(col)
    counts = []
    for split, rows in split_rows.items():
        labels = Counter(task.label_of(e) for e in rows)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) if None not in labels else "-"
        table.add_row(split, str(task.split_path(split)), f"{len(rows):,}", shown)
        counts.append(f"{split}: {len(rows):,} rows")
    Console().print(table)
    for note in notes:
        warn(note)
    click.echo(f"ok: every row of task '{task.name}' is valid ({', '.join(counts)})")
