"""`localaug dedup`: run the deduplicator and contamination guard alone on JSONL/CSV files.

    localaug dedup --task gsm8k generated.jsonl            # vs the task's test split (contamination)
    localaug dedup --task gsm8k --against seed.jsonl gen.jsonl --out verdicts.jsonl
    localaug dedup --text-field text --test test.jsonl a.jsonl b.jsonl

The FILE rows are checked in order, each against the --against rows (role train), the test rows and
every earlier accepted FILE row -- exactly what the loop does with a batch of teacher candidates.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..data import read_rows
from ..dedup import DedupConfig, DedupIndex, Verdict, as_text
from ..errors import UserError
from ..files import write_jsonl_atomic


def _rows(path: Path, task: Any, text_field: str | None) -> list[tuple[str, int | None, str]]:
    """(id, line, text) for each row: via the task's reader and dedup_text, or one plain field."""
    if task is not None:
        return [(f"{path.name}:{ex.id}", None, task.dedup_text(ex)) for ex in task.read_file(path)]
    out = []
    for line, row in read_rows(path):
        if text_field not in row:
            raise UserError("missing field", file=path, line=line, field=text_field)
        rid = row.get("id")
        out.append((f"{path.name}:{rid if rid is not None else line}", line, as_text(row[text_field])))
    return out


def _snippet(text: str, n: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--task", "task_name", help="Task name or card path: rows are read and turned into text by it.")
@click.option("--text-field", help="Without --task: the field holding the text (any JSON value).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Root of task data (with --task).")
@click.option("--against", "against", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Existing training rows to check against (repeatable).")
@click.option("--test", "tests", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Test rows: near-copies of these are 'contaminated' (repeatable).")
@click.option("--task-test/--no-task-test", default=True, show_default=True,
              help="With --task, also guard against the task's own test split.")
@click.option("--rule", type=click.Choice(["jaccard", "rougeL"]), default="jaccard", show_default=True,
              help="Similarity that confirms a near-duplicate (rougeL: the paper's ROUGE-L > 0.95).")
@click.option("--threshold", type=float, help="Similarity threshold (default 0.7 Jaccard, 0.95 ROUGE-L).")
@click.option("--shingle", type=click.Choice(["word", "char"]), default="word", show_default=True)
@click.option("--ngram", type=int, default=1, show_default=True)
@click.option("--mask-digits/--no-mask-digits", default=False, show_default=True,
              help="Numbers-only variants count as duplicates among training rows too.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write every verdict to this JSONL.")
@click.option("--save-index", type=click.Path(dir_okay=False, path_type=Path), help="Save the final index (.npz).")
@click.option("--top", type=int, default=10, show_default=True, help="How many top matches to show.")
def dedup(files: tuple[Path, ...], task_name: str | None, text_field: str | None, data_dir: str | None,
          against: tuple[Path, ...], tests: tuple[Path, ...], task_test: bool, rule: str, threshold: float | None,
          shingle: str, ngram: int, mask_digits: bool, out: Path | None, save_index: Path | None,
          top: int) -> None:
    """Check FILE rows for exact/near duplicates and test-set contamination; print a summary."""
    if (task_name is None) == (text_field is None):
        raise UserError("give exactly one of --task T or --text-field FIELD")
    task = None
    if task_name is not None:
        from ..task.task import load_task  # only the --task path needs the task layer

        task = load_task(task_name, data_dir)
    config = DedupConfig(threshold=threshold, shingle=shingle, ngram=ngram, rule=rule,  # type: ignore[arg-type]
                         mask_digits=mask_digits)
    index = DedupIndex(config)
    console = Console()

    test_files = list(tests)
    if task is not None and task_test and "test" in task.splits():
        path = task.split_path("test")
        if path.exists():
            test_files.append(path)
        else:
            console.print(f"[yellow]note:[/yellow] task test split {path} not found; no contamination guard")
    for path in test_files:
        index.add_many(((i, t) for i, _, t in _rows(path, task, text_field)), role="test")
    for path in against:
        index.add_many(((i, t) for i, _, t in _rows(path, task, text_field)), role="train")

    counts: dict[str, Counter[str]] = {}
    verdicts: list[tuple[str, str, Verdict, str]] = []
    for path in files:
        rows = _rows(path, task, text_field)
        vs = index.check_and_add_many((i, t) for i, _, t in rows)
        counts[str(path)] = Counter(v.outcome for v in vs)
        verdicts.extend((str(path), i, v, t) for (i, _, t), v in zip(rows, vs, strict=True))

    summary = Table(title=f"dedup: {len(test_files)} test file(s) ({index.count('test'):,} rows), "
                          f"{len(against)} --against file(s), rule {rule} "
                          f"{config.dup_threshold:g}")
    for col, just in (("file", "left"), ("rows", "right"), ("accepted", "right"),
                      ("duplicate", "right"), ("contaminated", "right")):
        summary.add_column(col, justify=just)  # type: ignore[arg-type]
    for path, c in counts.items():
        summary.add_row(path, f"{sum(c.values()):,}", f"{c['accepted']:,}", f"{c['duplicate']:,}",
                        f"[red]{c['contaminated']:,}[/red]" if c["contaminated"] else "0")
    console.print(summary)

    rejected = sorted((x for x in verdicts if x[2].outcome != "accepted"), key=lambda x: -x[2].similarity)
    if rejected and top > 0:
        table = Table(title=f"top {min(top, len(rejected))} matches")
        table.add_column("id", overflow="fold", min_width=8)
        table.add_column("outcome", no_wrap=True)
        table.add_column("match", overflow="fold", min_width=8)
        table.add_column("similarity", no_wrap=True, justify="right")
        table.add_column("text", no_wrap=True, overflow="ellipsis", max_width=60)
        for _, rid, v, text in rejected[:top]:
            table.add_row(rid, v.outcome, str(v.match_id), f"{v.similarity:.3f}", _snippet(text))
        console.print(table)
    if out is not None:
        write_jsonl_atomic(out, [{"file": f, "id": rid, "outcome": v.outcome, "match_id": v.match_id,
                                  "similarity": round(v.similarity, 4)} for f, rid, v, _ in verdicts])
        console.print(f"verdicts written to {out}")
    if save_index is not None:
        index.save(save_index)
        console.print(f"index saved to {save_index}")
