"""`localaug report`, `localaug runs`: a run's record, rebuilt or listed."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..config import load_settings
from ..errors import UserError
from ..layout import CONFIG, MANIFEST, REPORT_HTML
from ..store import RunStore
from .run import RUNS_DIR


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir: str) -> None:
    """Rebuild RUN_DIR's report.md, report.html and accuracy.png from the run directory."""
    from ..report import closing_line, iteration_table, verdict, write_report

    store = RunStore.open_existing(Path(run_dir))
    path = write_report(store)
    rows = store.manifest.rows()
    console = Console()
    console.print(iteration_table(rows, width=console.width))
    console.print(verdict(rows, store.manifest.final))
    console.print(f"Report: {path}", soft_wrap=True)
    console.print(closing_line(store.manifest, Path(run_dir) / REPORT_HTML), soft_wrap=True)


@click.command()
@click.option("--dir", "runs_dir", type=click.Path(file_okay=False), default=str(RUNS_DIR), show_default=True)
def runs(runs_dir: str) -> None:
    """List the runs under a folder: each one's state, plain and final test accuracy, teacher examples added."""
    from ..report import run_status, teacher_added
    from ..report.summary import plain_and_final

    table = Table(title=f"runs in {runs_dir}", caption="plain: test accuracy of plain fine-tuning (iteration 0); "
                  "final: of the final model (or the last iteration); added: teacher examples added")
    for col in ("run", "task", "created", "status", "plain", "final", "added"):
        table.add_column(col, justify="right" if col in ("plain", "final", "added") else "left",
                         no_wrap=col in ("run", "created", "plain", "final", "added"))
    root = Path(runs_dir)
    for d in sorted(p for p in root.glob("*") if (p / MANIFEST).exists()) if root.exists() else []:
        try:
            store = RunStore.open_existing(d)
        except UserError as e:  # one damaged run does not hide the others
            table.add_row(d.name, "?", "?", f"unreadable: {e}", "-", "-", "-")
            continue
        m = store.manifest
        plain, final = plain_and_final(m)
        task_name = _task_of(d)
        table.add_row(d.name, task_name, m.created[:16].replace("T", " "), run_status(store, why=False),
                      "-" if plain is None else f"{plain:.1%}", "-" if final is None else f"{final:.1%}",
                      str(teacher_added(m)))
    Console().print(table)


def _task_of(run_dir: Path) -> str:
    try:
        return load_settings(run_dir / CONFIG).task
    except UserError:
        return "?"
