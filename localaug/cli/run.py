"""`localaug run`: the main job (its record: cli/runs.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click
from rich.console import Console

from ..checks import Factories, before_run
from ..config import RECIPES, Settings, build_config, load_settings, resolve
from ..errors import UserError, warn
from ..layout import CONFIG, PLOT, REPORT_HTML
from ..modelcards import DEFAULT_STUDENT, DEFAULT_TEACHER
from ..store import RunStore
from ..task import load_task
from ..teacher.record import servers_at_end, servers_at_start

RUNS_DIR = Path("runs")


def _default_out(cfg: Settings) -> Path:
    # Derived from the config, so rerunning the same command resumes the same run.
    return RUNS_DIR / f"{Path(cfg.task).stem}-seed{cfg.seed}-{cfg.fingerprint()[:8]}"


@click.command()
@click.option("--task", "task", help="Task name or card path (default: the built-in demo).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Run config YAML.")
@click.option("--iterations", type=int, help="Students to train (iteration 0 = plain fine-tuning).")
@click.option("--seed-size", type=int, help="Seed examples drawn from the train split.")
@click.option("--seed-fraction", type=float, help="Or: the fraction of the train split.")
@click.option("--student", help=f"Student model card (name or path) or installed plug-in [{DEFAULT_STUDENT}].")
@click.option("--teacher", help=f"Teacher model card (name or path) or installed plug-in [{DEFAULT_TEACHER}].")
@click.option("--student-factory", metavar="MODULE:FACTORY",
              help="Run this Python factory as the student (code: never taken from a config or run directory).")
@click.option("--teacher-factory", metavar="MODULE:FACTORY",
              help="Run this Python factory as the teacher (code: never taken from a config or run directory).")
@click.option("--teacher-url", "teacher_urls", multiple=True,
              help="OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1; repeat it for a pool of one model.")
@click.option("--teacher-model", help="Model name on the server(s) [the one they serve].")
@click.option("--teacher-identity", help="The served teacher's cache identity [the model the servers report].")
@click.option("--recipe", type=click.Choice(list(RECIPES)),
              help="localaug: out-of-fold error finding + list prompt + teacher verification; paper: as published.")
@click.option("--shots", type=int, help="Seed examples in the teacher's list prompt (0: the paper's prompt).")
@click.option("--verify", type=click.Choice(["none", "teacher"]), help="Check each new example's label.")
@click.option("--holdout", type=float, help="Fraction of seeds held out to choose the final model [0: none].")
@click.option("--per-wrong", type=int, help=f"New examples per wrong seed example [localaug "
              f"{RECIPES['localaug']['per_wrong']}, paper: the task card's].")
@click.option("--epochs", type=int, help="Student training epochs (overrides the model card).")
@click.option("--student-processes", type=click.IntRange(min=1),
              help="Train each student on N torchrun processes (one per GPU on CUDA) [the card's, 1].")
@click.option("--test-size", type=int, help="Evaluate on the first N test rows only.")
@click.option("--eval-mode", type=click.Choice(["score", "generate"]), help="How the student is judged.")
@click.option("--eval-backend", type=click.Choice(["transformers", "llamacpp"]),
              help="The student's evaluation engine [transformers]; llamacpp: the adapter as a llama.cpp LoRA.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Root of task data.")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False), help="Teacher cache file.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory [runs/<task>-seed<S>-<hash>].")
@click.option("--seed", type=int, help="One seed for sampling, training and teacher [0].")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="Continue the run in this directory with its own saved config.")
@click.option("--dry-run", is_flag=True, help="Print the plan; touch nothing.")
def run(config_file: str | None, resume_dir: str | None, dry_run: bool, student_factory: str | None,
        teacher_factory: str | None, **options: object) -> None:
    """Run LLM2LLM: train, find wrong seed examples, have the teacher write new ones, repeat."""
    factories = Factories(student_factory, teacher_factory)
    settings, sources = _settings(config_file, resume_dir, options, factories)  # resolved once; only Settings goes on
    task = load_task(settings.task, settings.data_dir)
    out = Path(settings.out)
    console = Console()
    checked = before_run(task, settings, factories, sources)  # every check, before the run directory exists
    for note in checked.notes:
        warn(note)
    if dry_run:
        _print_plan(console, checked.plan)
        return
    from ..backends import make_student, make_teacher, teacher_cache_path
    from ..loop import Loop
    from ..report import closing_line, verdict, write_report
    from .prepare import student_needs_preparing
    from .progress import RichObserver

    teacher = checked.teacher  # the checked server(s), or None: an in-process teacher loads when needed
    store = RunStore.open_for_run(out, settings)
    try:
        servers_before = servers_at_start(store, teacher)  # a resumed run: the same model, or a one-line error
        console.print(f"[bold]localaug[/bold] {task.name}: seed {settings.seed_size or settings.seed_fraction}, "
                      f"{settings.iterations} iterations -> {out}")
        student = checked.student
        if student is None:
            first_use = student_needs_preparing(settings.student, settings.student_settings, factories.student)
            if first_use:  # say why the start is slow, in a line of its own: a status line is cut at the width
                console.print("First use: the student's GGUF is converted once (about 40 s; `localaug prepare` "
                              "does it ahead).")
            with console.status("converting the student (once)") if first_use else contextlib.nullcontext():
                student = make_student(settings.student, settings.student_settings, factory=factories.student,
                                       eval_backend=settings.eval_backend)
        store.record_models(student=student.identity, teacher=teacher.identity if teacher else None,
                            teacher_cache=str(teacher_cache_path(settings)))
        with RichObserver(settings.iterations, console) as obs:
            loop = Loop(task, settings, store, student,
                        lambda: teacher or make_teacher(settings, factory=factories.teacher), obs)
            result = loop.run()
        store.record_models(teacher=loop.teacher_identity)
        servers_at_end(store, teacher, servers_before)
        path = write_report(store)
        console.print(verdict(result.iterations, result.final))
        if result.stopped_early:
            console.print(f"Stopped early: {result.stopped_early}.")
        console.print(f"Report: {path}  Plot: {out / PLOT}", soft_wrap=True)
        console.print(closing_line(store.manifest, out / REPORT_HTML), soft_wrap=True)
    finally:
        store.unlock()


def _settings(config_file: str | None, resume_dir: str | None, options: dict[str, object], factories: Factories
              ) -> tuple[Settings, dict[str, Path | str | None]]:
    """The run's settings, resolved once: a saved run's own (--resume), or the recipe <- task card <- config
    file <- options; `out` filled in (derived from the settings, so the same command resumes the same run).
    With them, where each backend spec was read (a file, or None for the command line), for messages."""
    for role, factory in (("student", factories.student), ("teacher", factories.teacher)):
        if factory is not None and options.get(role) not in (None, factory):
            raise UserError(f"give --{role} or --{role}-factory, not both")
    if resume_dir:
        saved = _saved_config(Path(resume_dir))
        settings = load_settings(saved)
        settings.out = str(resume_dir)
        for role, factory in (("student", factories.student), ("teacher", factories.teacher)):
            if factory is not None and getattr(settings, role) != factory:
                raise UserError(f"--{role}-factory {factory}: the run in {resume_dir} has {role} "
                                f"'{getattr(settings, role)}'", file=saved, field=role)
        return settings, {"student": saved, "teacher": saved}
    options.update({role: f for role, f in (("student", factories.student), ("teacher", factories.teacher)) if f})
    card_keys = {"epochs": options.pop("epochs"), "processes": options.pop("student_processes")}
    urls = list(options.pop("teacher_urls") or ())  # type: ignore[call-overload]
    cfg = build_config(config_file, **options)
    if urls:  # the command line's servers replace the config file's
        cfg.teacher_url, cfg.teacher_urls = None, urls
    given = {k: v for k, v in card_keys.items() if v is not None}
    if given:  # the student card's settings given on the command line
        cfg.student_settings = {**(cfg.student_settings or {}), **given}
    task = load_task(cfg.task or "demo", cfg.data_dir)
    settings = resolve(cfg, task.defaults, config_file)
    settings.out = settings.out or str(_default_out(settings))  # recorded in config.yaml, not in the fingerprint
    sources = {role: None if options.get(role) is not None or not config_file else config_file
               for role in ("student", "teacher")}
    return settings, sources


def _saved_config(run_dir: Path) -> Path:
    saved = run_dir / CONFIG
    if not saved.exists():
        raise UserError("is not a localaug run directory (no config.yaml)", file=run_dir)
    return saved


def _print_plan(console: Console, plan: list[tuple[str, str]]) -> None:
    console.print("[bold]localaug run --dry-run[/bold] (nothing was written)")
    width = max(len(k) for k, _ in plan)
    for k, v in plan:  # one line each, never wrapped: readable and greppable at any terminal width
        console.print(f"  {k:<{width}}  {v}", soft_wrap=True, highlight=False)
