"""report.md: what a run did, for people, in Markdown (report.html shows the same and every example)."""

from __future__ import annotations

from pathlib import Path

from .. import layout
from ..files import atomic_write_text
from ..records import Manifest, Preflight, TeacherServer
from ..store import RunStore
from .summary import (
    COLUMNS,
    SERVER_COLUMNS,
    TEACHER_COLUMNS,
    cell,
    loose_server_note,
    preflight_sentences,
    server_rows,
    teacher_rows,
    verdict,
)


def preflight_lines(pre: Preflight | None) -> list[str]:
    """The teacher preflight beside the first student, for report.md."""
    said = preflight_sentences(pre)
    if not said:
        return []
    out = ["## Teacher preflight", "", *said]
    if pre and pre.warning:
        out.append(f"**Warning:** {pre.warning}")
    return [*out, ""]


def teacher_lines(m: Manifest) -> list[str]:
    """What the teacher did in each round, for report.md."""
    rows = teacher_rows(m)
    if not rows:
        return []
    lines = ["## Teacher", "", "| " + " | ".join(TEACHER_COLUMNS) + " |",
             "|---" + "|---:" * (len(TEACHER_COLUMNS) - 1) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]


def teacher_server_lines(servers: list[TeacherServer]) -> list[str]:
    """The teacher's servers: what each answered, which constraint field it honours."""
    if not servers:
        return []
    out = ["## Teacher servers", "", "| " + " | ".join(SERVER_COLUMNS) + " |", "|---|---|---|---|---:|---:|"]
    out += ["| " + " | ".join(r) + " |" for r in server_rows(servers)]
    out.append("")
    if note := loose_server_note(servers):
        out += [f"**Note:** {note}", ""]
    return out


def write_markdown(store: RunStore) -> Path:
    """report.md from the manifest (no model is loaded); the plot beside it is the caller's."""
    m = store.manifest
    rows = m.rows()
    config_path = store.path(layout.CONFIG)
    config = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    lines = ["# localaug run report", "", f"Run directory: `{store.root}`", "", "## Result", "",
             verdict(rows, m.final), "",
             f"Every teacher example, kept or refused and why, with the student's answers: [{layout.REPORT_HTML}]"
             f"({layout.REPORT_HTML}).", ""]
    if m.stopped_early:
        lines += [f"Stopped early: {m.stopped_early}.", ""]
    lines += ["## Iterations", "", "| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
              "|" + "---:|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(cell(r, k, f) for k, _, f in COLUMNS) + " |")
    lines += [""]
    lines += preflight_lines(m.preflight)
    lines += teacher_lines(m)
    lines += teacher_server_lines(m.teacher_servers)
    if rows:
        lines += [f"![test accuracy per iteration]({layout.PLOT})", ""]
    lines += ["## Config", "", "```yaml", config.rstrip(), "```", "", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in sorted(m.versions.items())]
    for role, info in sorted(m.models.items()):
        lines.append(f"- {role}: {info}")
    path = store.path(layout.REPORT)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
