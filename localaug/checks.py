"""The pre-run checks: everything a run can check before its directory exists, in one phase.

`localaug run` calls `before_run` before `RunStore.open_for_run` (and `--dry-run` prints what it found and
stops), so a bad run ends in one line and exit 2 with nothing written. Cheapest first:

1. backends: the student and teacher specs name model cards or installed plug-ins (code only behind the
   command line's --student-factory / --teacher-factory: plugins.py);
2. model cards: the student's weights are found and in a format loaded without running code (safetensors,
   GGUF; never a pickle); an in-process teacher's card names a GGUF and takes the run's teacher settings;
3. the task card's templates, each rendered against the fields of its rows (task/templates.py);
4. the data: the train and test splits, the seed set drawn from them (size, holdout), and those rows against
   the student's context, with exact duplicates reported (rowcheck.py);
5. the run directory and the teacher cache's folder can be written;
6. each configured teacher server: it answers, lists the model, answers chat when the card writes in chat,
   and which constraint field it honours (teacher/servers.py, through `check_servers`).

`data check` runs 2-4 on every row of every split (`check_data`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Settings
from .data import sample_seed
from .errors import UserError
from .modelcards import DEFAULT_STUDENT, DEFAULT_TEACHER, ModelCard, TeacherRuntime, load_model_card
from .plugins import Backend, resolve
from .protocols import Student, Teacher
from .rowcheck import StudentContext, check_lengths, duplicate_notes
from .schema import validate
from .task import Example, Task
from .task.templates import check_templates


@dataclass(frozen=True)
class Factories:
    """The command line's --student-factory / --teacher-factory: the only code a run may be told to run."""

    student: str | None = None
    teacher: str | None = None


@dataclass
class Checked:
    plan: list[tuple[str, str]]  # what the run would do, for --dry-run
    notes: list[str] = field(default_factory=list)  # one-line warnings (duplicates, rows cut to fit)
    student: Student | None = None  # a plug-in student built for the checks; the run uses it
    teacher: Teacher | None = None  # the server teacher, built and checked


def before_run(task: Task, settings: Settings, factories: Factories = Factories(),
               sources: Mapping[str, str | Path | None] | None = None) -> Checked:
    """Every check of a run before anything is written (see the module's docstring); what the run would do.
    `sources`: per role, the file its spec came from (a config file, a run directory's config.yaml)."""
    sources = sources or {}
    student_backend = resolve("student", settings.student, factory=factories.student, source=sources.get("student"))
    card = _student_card(student_backend, settings.student_settings)
    if settings.eval_backend != "transformers" and card is None:  # llama.cpp needs the card's GGUF base
        raise UserError(f"eval_backend {settings.eval_backend} needs a model-card student, not the "
                        f"{student_backend.kind} '{settings.student}'", file=sources.get("student"),
                        field="eval_backend")
    if settings.eval_backend == "llamacpp" and card is not None and card.source.hf_path:
        check_llamacpp_convertible(Path(card.source.hf_path).expanduser())
    check_teacher(settings, factories, sources.get("teacher"))
    check_templates(task)
    if "test" not in task.splits():
        raise UserError(f"task '{task.name}' has no 'test' split", file=task.path, field="data.splits")
    seed, test, plan = _plan(task, settings, card)
    ctx, student = student_context(student_backend, card, settings.student_settings)
    notes = duplicate_notes(task)
    if ctx is not None:
        notes += check_lengths(task, {task.split_path("train"): seed, task.split_path("test"): test}, ctx)
    check_writable(Path(settings.out or "."), "the run directory")
    from .backends import teacher_cache_path

    check_writable(teacher_cache_path(settings), "the teacher cache")
    return Checked(plan, notes, student, check_servers(settings, factories))


def check_data(task: Task, student_spec: str = DEFAULT_STUDENT) -> tuple[dict[str, list[Example]], list[str]]:
    """`data check`: the templates, every row of every split, and each row against the student's context.
    (The rows of each split, the one-line notes.)"""
    check_templates(task)
    rows = {split: task.load_split(split) for split in task.splits()}
    backend = resolve("student", student_spec)
    settings = task.defaults.student_settings
    ctx, _ = student_context(backend, _student_card(backend, settings), settings)
    notes = duplicate_notes(task)
    if ctx is not None:
        notes += check_lengths(task, {task.split_path(split): r for split, r in rows.items()}, ctx)
    return rows, notes


# ---------------------------------------------------------------------- models


def _student_card(backend: Backend, overrides: dict[str, Any]) -> ModelCard | None:
    """The student's card with the run's settings over it, its weights checked (None for a plug-in)."""
    if not backend.is_card:
        return None
    from .student.plan import merge_overrides, with_source_overrides

    card, rest = with_source_overrides(load_model_card(backend.spec), overrides)
    merge_overrides(card.student, rest)  # an unknown student setting is named here, not after the first stage
    card.check_source()
    return card


def check_llamacpp_convertible(model_dir: Path) -> None:
    """eval_backend llamacpp converts a Hugging Face student to a GGUF after its first training stage: a model
    the converter cannot write (architecture, tokenizer) fails now, in one line, not an hour into the run."""
    from .convert.gguf_model import check_convertible

    try:
        check_convertible(model_dir, with_tokenizer=True)
    except UserError as e:
        why = e.message.replace("; export --format hf instead", "")
        raise UserError(f"{why} (eval_backend llamacpp needs the student as a GGUF; transformers does not)",
                        file=e.file, line=e.line, field=e.field) from None


def check_teacher(settings: Settings, factories: Factories, source: str | Path | None = None) -> None:
    """The teacher spec names a card or plug-in; an in-process teacher's card runs a GGUF with these settings."""
    if settings.teacher_servers:
        if settings.teacher != DEFAULT_TEACHER:  # a server's card only says whether it writes in chat
            load_model_card(settings.teacher)
        return
    backend = resolve("teacher", settings.teacher, factory=factories.teacher, source=source)
    if not backend.is_card:
        return
    card = load_model_card(backend.spec)
    if card.source.hf_path is not None:
        raise UserError("names a student model (source.hf_path, safetensors), but the in-process teacher runs a "
                        "GGUF with llama.cpp: give a teacher card with a GGUF source, or a server with "
                        "--teacher-url", file=card.path, field="source")
    card.check_source()
    runtime = {k: v for k, v in settings.teacher_settings.items() if k not in ("kv_unified", "verbose")}
    validate(TeacherRuntime, {**card.teacher.model_dump(), **runtime}, source, prefix="teacher_settings.")


def check_servers(settings: Settings, factories: Factories) -> Teacher | None:
    """The configured teacher server(s), built and checked, or None. Building the HTTP teacher (or pool) runs
    the teacher pool's capability checks (teacher/servers.py: models listed, chat endpoint, constraint field)."""
    if not settings.teacher_servers:
        return None
    from .backends import make_teacher

    return make_teacher(settings, factory=factories.teacher)


def student_context(backend: Backend, card: ModelCard | None, overrides: dict[str, Any]
                    ) -> tuple[StudentContext | None, Student | None]:
    """How the student counts a row's tokens and how many it takes; and, for a plug-in, the student built to
    ask it (a plug-in without `max_length` and `count_tokens` is not checked)."""
    if card is not None:
        from .student.plan import merge_overrides, with_source_overrides

        _, rest = with_source_overrides(card, overrides)
        return StudentContext(card.name or backend.spec, merge_overrides(card.student, rest).train.max_length,
                              _card_counter(card)), None
    student = backend.build(dict(overrides))
    limit, count = getattr(student, "max_length", None), getattr(student, "count_tokens", None)
    if limit is None or count is None:
        return None, student
    return StudentContext(backend.spec, int(limit), lambda p, answers: count(p) + max(map(count, answers))), student


def _card_counter(card: ModelCard) -> Any:
    """Tokens of prompt + longest answer + EOS, as training encodes them; the tokenizer loads on first use."""
    tok: Any = None

    def count(prompt: str, answers: Sequence[str]) -> int:
        nonlocal tok
        if tok is None:
            from .student.quiet import quiet_transformers
            from .student.weights import tokenizer_of

            quiet_transformers()
            tok = tokenizer_of(card)
        ids = tok([prompt, *answers], add_special_tokens=False)["input_ids"]
        prompt_ids = len(tok(prompt, add_special_tokens=True)["input_ids"])
        return prompt_ids + max(len(a) for a in ids[1:]) + (tok.eos_token_id is not None)

    return count


# ---------------------------------------------------------------------- where it writes


def check_writable(path: Path, what: str) -> None:
    """`path` (or, if it does not exist yet, the folder it will be made in) can be written by this process."""
    p = Path(path).expanduser().absolute()
    while not os.path.exists(p) and p != p.parent:  # os.path: a folder we may not enter reads as absent
        p = p.parent
    folder = p if os.path.isdir(p) else p.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        why = "is on a read-only file system" if read_only else "is not writable (permission denied)"
        raise UserError(f"{what} cannot be written: {folder} {why}", file=path)


# ---------------------------------------------------------------------- the plan


def _estimate_seconds(train_rows: int, seed_rows: int, test_rows: int, iterations: int, epochs: float) -> float:
    # Rough CPU figures for the default 270M student on 2 cores (bench/README.md): ~0.35 s per training
    # example-epoch, ~0.02 s per scored example, ~0.3 s per teacher example; training sets grow by the
    # wrong examples, taken here as a third of the seed set per iteration. Loading adds ~10 s.
    total = 10.0
    rows = train_rows
    for _ in range(iterations):
        total += rows * epochs * 0.35 + (seed_rows + test_rows) * 0.02 + seed_rows / 3 * 0.3
        rows += seed_rows // 3
    return total


def _plan(task: Task, settings: Settings, card: ModelCard | None
          ) -> tuple[list[Example], list[Example], list[tuple[str, str]]]:
    """(the seed set the run will draw, the test rows it will use, what the run would do), checked."""
    from .student.plan import merge_overrides, with_source_overrides

    pool = task.load_split("train")
    test = task.load_split("test")
    s = settings
    seed_n = s.seed_size or max(1, round((s.seed_fraction or 0) * len(pool)))
    if seed_n > len(pool):
        raise UserError(f"a seed set of {seed_n} rows was asked for, but the train split has {len(pool):,} rows "
                        f"({task.split_path('train')})", field="seed_size")
    held = s.held_out_count(seed_n)
    # The same draw as the run's prepare stage (stages.py), so the length check sees the rows the run will use.
    seed = sample_seed(pool, size=s.seed_size, fraction=s.seed_fraction, seed=s.seed, stratify_by=task.stratify())
    used_test = test[s.test_offset:][: s.test_size]
    epochs = (merge_overrides(card.student, with_source_overrides(card, s.student_settings)[1]).train.epochs
              if card is not None else float(s.student_settings.get("epochs", 1)))
    # The held-out recipe trains one more student at the end (the final model, on all seeds).
    est = _estimate_seconds(seed_n, seed_n, len(used_test), s.iterations + (1 if held else 0), epochs)
    plan = [("task", f"{task.name} ({task.kind.name})"), ("train pool", f"{len(pool):,} rows"),
            ("seed set", f"{seed_n} rows (seed {s.seed})" + (f", {held} of them held out" if held else "")),
            ("test set", f"{len(used_test)} rows"), ("iterations", str(s.iterations)),
            ("per wrong example", str(s.per_wrong)),
            ("recipe", f"{s.recipe} (shots {s.shots}, verify {s.verify}, holdout {s.holdout})"),
            ("student", s.student), ("teacher", " + ".join(s.teacher_servers) or s.teacher),
            ("eval", f"{task.eval_mode(s.eval_mode)} ({s.eval_backend})"), ("run dir", str(s.out or "")),
            ("estimated time", f"~{est / 60:.0f} min on 2 CPU cores (rough)")]
    return seed, used_test, plan
