"""What a run did, for people: report.md, report.html and accuracy.png beside them, the terminal's table and
closing line, the state of a run. Rebuilt from the run directory alone (no model is loaded).

    summary.py   the table, the verdict, the numbers every view shares
    plot.py      accuracy.png
    markdown.py  report.md
    gather.py    the run directory read for report.html (every teacher example and its fate)
    html.py      report.html (with page.css and page.js inline)
    status.py    finished / running / stopped at which stage
"""

from __future__ import annotations

from pathlib import Path

from .. import layout
from ..files import atomic_write_text
from ..store import RunStore
from .gather import gather, shown_for
from .html import render_page
from .markdown import write_markdown
from .plot import plot_accuracy
from .status import run_status
from .summary import closing_line, iteration_table, teacher_added, verdict

__all__ = ["closing_line", "iteration_table", "run_status", "teacher_added", "verdict", "write_html",
           "write_report"]


def write_report(store: RunStore) -> Path:
    """Rebuild accuracy.png, report.md and report.html; the path of report.md."""
    rows = store.manifest.rows()
    if rows:
        plot_accuracy(rows, store.path(layout.PLOT), store.manifest.final)
    path = write_markdown(store)
    write_html(store)
    return path


def write_html(store: RunStore) -> Path:
    """report.html from the run directory (its plot inline when accuracy.png exists)."""
    config = store.path(layout.CONFIG)
    plot = store.path(layout.PLOT)
    page = render_page(store.root.resolve().name, store.manifest, run_status(store),
                       config.read_text(encoding="utf-8") if config.exists() else "",
                       gather(store, shown_for(store)), plot.read_bytes() if plot.exists() else None)
    path = store.path(layout.REPORT_HTML)
    atomic_write_text(path, page)
    return path
