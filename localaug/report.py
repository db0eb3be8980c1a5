"""What a run did, for people: the per-iteration table, report.md and accuracy.png."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from . import layout
from .files import atomic_file, atomic_write_text
from .records import AugmentSummary, DedupSummary, FinalModel, IterationRow, Preflight, TeacherServer, VerifySummary
from .store import RunStore

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


def _cell(row: IterationRow, key: str, fmt: str) -> str:
    v = getattr(row, key)
    return "-" if v is None else fmt.format(v)


def iteration_table(rows: list[IterationRow], title: str = "LLM2LLM iterations") -> Table:
    table = Table(title=title)
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for r in rows:
        table.add_row(*[_cell(r, key, fmt) for key, _, fmt in COLUMNS])
    return table


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
            "held-out seeds. One run is one sample: compare over several seeds (bench/study.py).")


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
    text += (" One run is one sample: compare over several seeds (bench/study.py) before drawing "
             "conclusions.")
    return text


def plot_accuracy(rows: list[IterationRow], path: Path, final: FinalModel | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on these machines
    import matplotlib.pyplot as plt

    xs = [r.iteration for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(xs, [r.test_accuracy * 100 for r in rows], marker="o", label="LLM2LLM student (test)")
    ax.plot(xs, [r.seed_accuracy * 100 for r in rows], marker=".", linestyle=":", label="seed accuracy")
    if rows:
        ax.axhline(rows[0].test_accuracy * 100, color="grey", linestyle="--",
                   label="plain fine-tuning (iteration 0)")
    if final:
        ax.scatter([xs[-1]], [final.test_accuracy * 100], marker="*", s=120, color="tab:red", zorder=3,
                   label=f"final model (data of iteration {final.kept_iteration}, all seeds)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(xs)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def preflight_lines(pre: Preflight | None) -> list[str]:
    """The teacher preflight beside the first student, for report.md."""
    if not pre:
        return []
    out = ["## Teacher preflight", "",
           f"Before the loop, the teacher labelled {pre.correct} of {pre.total} seed examples right "
           f"({pre.teacher_accuracy:.1%}), asked as its verifier asks it (`{layout.PREFLIGHT.teacher_labels}`)."]
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
    if pre.warning:
        out.append(f"**Warning:** {pre.warning}")
    return [*out, ""]


def teacher_lines(store: RunStore) -> list[str]:
    """What the teacher did in each round, for report.md."""
    m = store.manifest
    augments = sorted(k for k in m.stages if layout.stage_name(k) == layout.AUGMENT)
    if not augments:
        return []
    lines = ["## Teacher", "",
             "| stage | targets | completions | parsed | parse failures | repeats | verified | added | cached |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in augments:
        folder = key.rsplit("/", 1)[0]
        aug, ver, dd = (m.stages.get(f"{folder}/{name}") for name in (layout.AUGMENT, layout.VERIFY, layout.DEDUP))
        assert isinstance(aug, AugmentSummary)
        verified = ver.verified if isinstance(ver, VerifySummary) else "-"
        added = dd.accepted if isinstance(dd, DedupSummary) else "-"
        lines.append(f"| {key} | {aug.wrong} | {aug.completions} | {aug.parsed} | {aug.parse_failure_rate:.0%} | "
                     f"{aug.repeats} | {verified} | {added} | {aug.cached} |")
    return [*lines, ""]


def teacher_server_lines(servers: list[TeacherServer]) -> list[str]:
    """The teacher's servers: what each answered, which constraint field it honours."""
    if not servers:
        return []
    out = ["## Teacher servers", "", "| server | model | software | constraint | requests answered | set aside |",
           "|---|---|---|---|---:|---:|"]
    for r in servers:
        software = " ".join(p for p in (r.software, r.version) if p) or "-"
        out.append(f"| {r.url} | {r.model} | {software} | {r.constraint} | {r.answered} | {r.set_aside} |")
    out.append("")
    loose = [r.url for r in servers if r.constraint == "none"]
    if loose:
        out += [f"**Note:** {', '.join(loose)} honoured no constraint field (structured_outputs, guided_choice, "
                "grammar): the verifier read each label from the first line of free text, which rejects more "
                "candidates (docs/teachers.md).", ""]
    return out


def write_report(store: RunStore) -> Path:
    """Rebuild report.md and accuracy.png from the manifest (no model is loaded)."""
    m = store.manifest
    rows = m.rows()
    config_path = store.path(layout.CONFIG)
    config = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    lines = ["# localaug run report", "", f"Run directory: `{store.root}`", "", "## Result", "",
             verdict(rows, m.final), ""]
    if m.stopped_early:
        lines += [f"Stopped early: {m.stopped_early}.", ""]
    lines += ["## Iterations", "", "| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
              "|" + "---:|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r, k, f) for k, _, f in COLUMNS) + " |")
    lines += [""]
    lines += preflight_lines(m.preflight)
    lines += teacher_lines(store)
    lines += teacher_server_lines(m.teacher_servers)
    if rows:
        plot_accuracy(rows, store.path(layout.PLOT), m.final)
        lines += [f"![test accuracy per iteration]({layout.PLOT})", ""]
    lines += ["## Config", "", "```yaml", config.rstrip(), "```", "", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in sorted(m.versions.items())]
    for role, info in sorted(m.models.items()):
        lines.append(f"- {role}: {info}")
    path = store.path(layout.REPORT)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
