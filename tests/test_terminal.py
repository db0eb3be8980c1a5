"""What `localaug run` prints, seen as a user sees it (a 100-column terminal): no source locations, one
iteration numbering everywhere, a closing line that counts the teacher's examples and points at report.html,
and a plot whose legend covers no data."""

from __future__ import annotations

import re
from pathlib import Path

from localaug.records import FinalModel, IterationRow
from localaug.report.plot import accuracy_figure
from localaug.store import RunStore
from tests.jsonl_counts import round_counts, teacher_rounds


def test_log_lines_carry_no_source_location(fake_demo_run: tuple[Path, str]) -> None:
    _, out = fake_demo_run
    assert "training student" in out  # the stage lines are there ...
    assert not re.search(r"\b\w+\.py:\d+", out), out  # ... without rich's "progress.py:92" column


def test_one_iteration_numbering_in_progress_table_files_and_report(fake_demo_run: tuple[Path, str]) -> None:
    run, out = fake_demo_run
    rows = RunStore.open_existing(run).manifest.rows()
    numbers = [r.iteration for r in rows]
    assert numbers == [0, 1, 2]
    folders = sorted(int(p.name[5:]) for p in run.glob("iter_*"))
    in_progress = {int(n) for n in re.findall(r"^iter (\d+)\b", out, re.M)}
    table = [int(m) for m in re.findall(r"^│\s+(\d+) │", out, re.M)]  # the first column of the last table
    assert folders == numbers and in_progress == set(numbers) and table[-len(numbers):] == numbers
    report = (run / "report.md").read_text()
    assert all(f"\n| {n} | " in report for n in numbers)
    fig = accuracy_figure(rows)
    assert list(fig.axes[0].get_xticks()) == numbers


def test_closing_line_counts_the_teacher_examples_and_points_at_the_page(fake_demo_run: tuple[Path, str]) -> None:
    run, out = fake_demo_run
    last = out.strip().splitlines()[-1]
    added = sum(round_counts(run, i)["kept"] for i in teacher_rounds(run))
    found = re.match(r"The teacher added (\d+) examples? in (\d+) rounds?\b.*: (\S+report\.html)$", last)
    assert found, last
    assert int(found.group(1)) == added > 0 and int(found.group(2)) == len(teacher_rounds(run))
    assert Path(found.group(3)).resolve() == (run / "report.html").resolve()


def test_plot_legend_covers_no_data() -> None:
    # The demo's shape: the last test point high on the right, where a corner legend used to sit.
    rows = [IterationRow(iteration=i, train_size=24, seed_accuracy=s, wrong=3, test_accuracy=t, holdout_accuracy=h)
            for i, (s, t, h) in enumerate([(0.9, 0.55, 0.5), (0.95, 0.6, 0.55), (1.0, 0.72, 0.7)])]
    final = FinalModel(kept_iteration=2, train_size=30, added=6, test_accuracy=0.7, holdout_accuracy=[0.5, 0.55, 0.7])
    fig = accuracy_figure(rows, final)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    ax, legend = fig.axes[0], fig.legends[0]
    box = legend.get_window_extent(renderer)
    assert not box.overlaps(ax.get_window_extent(renderer))  # beside the axes, so over no line or point
    assert len(legend.get_texts()) == 5  # and it names every series


def test_the_iteration_table_fits_a_narrow_terminal_without_ellipses() -> None:
    from rich.console import Console

    from localaug.report.summary import COLUMNS, iteration_table

    rows = [IterationRow(iteration=i, train_size=24 + 6 * i, seed_accuracy=0.9, wrong=3 - i, new_examples=6,
                         test_accuracy=0.55 + 0.1 * i, seconds=41.0) for i in range(3)]
    for width in (40, 60, 100):
        console = Console(width=width, record=True, force_terminal=False)
        console.print(iteration_table(rows, width=console.width))
        text = console.export_text()
        assert "…" not in text, (width, text)
        assert max(len(line) for line in text.splitlines()) <= width
        for _, header, _ in COLUMNS[1:]:
            assert header in text, (width, header, text)
        assert "75.0%" in text and "65.0%" in text  # the numbers whole
