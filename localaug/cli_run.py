"""`localaug run`, `localaug report`, `localaug runs`: the main job and its record."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .config import RunConfig, build_config
from .errors import UserError
from .store import CONFIG, RunStore
from .tasks import load_task

RUNS_DIR = Path("runs")


def _default_out(cfg: RunConfig) -> Path:
    # Derived from the config, so rerunning the same command resumes the same run.
    return RUNS_DIR / f"{Path(cfg.task).stem}-seed{cfg.seed}-{cfg.fingerprint()[:8]}"


def _estimate_seconds(train_rows: int, seed_rows: int, test_rows: int, iterations: int, epochs: int) -> float:
    # Rough CPU figures for the default 270M student on 2 cores (bench/README.md): ~0.35 s per training
    # example-epoch, ~0.02 s per scored example, ~0.3 s per teacher example; training sets grow by the
    # wrong examples, taken here as a third of the seed set per iteration. Loading adds ~10 s.
    total = 10.0
    rows = train_rows
    for _ in range(iterations):
        total += rows * epochs * 0.35 + (seed_rows + test_rows) * 0.02 + seed_rows / 3 * 0.3
        rows += seed_rows // 3
    return total


@click.command()
@click.option("--task", "task", help="Task name or card path (default: the built-in demo).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Run config YAML.")
@click.option("--iterations", type=int, help="Students to train (iteration 0 = plain fine-tuning).")
@click.option("--seed-size", type=int, help="Seed examples drawn from the train split.")
@click.option("--seed-fraction", type=float, help="Or: the fraction of the train split.")
@click.option("--student", help="Student model card (name or path) [gemma3-270m].")
@click.option("--teacher", help="Teacher model card (name or path) [gemma3-270m].")
@click.option("--teacher-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1.")
@click.option("--teacher-model", help="Model name on that server.")
@click.option("--recipe", type=click.Choice(["localaug", "paper"]),
              help="localaug: list prompt + teacher verification + held-out model choice; paper: as published.")
@click.option("--shots", type=int, help="Seed examples in the teacher's list prompt (0: the paper's prompt).")
@click.option("--verify", type=click.Choice(["none", "teacher"]), help="Check each new example's label.")
@click.option("--holdout", type=float, help="Fraction of seeds held out to choose the final model (0: none).")
@click.option("--per-wrong", type=int, help="New examples per wrong seed example [localaug 3, paper 1].")
@click.option("--epochs", type=int, help="Student training epochs (overrides the model card).")
@click.option("--test-size", type=int, help="Evaluate on the first N test rows only.")
@click.option("--eval-mode", type=click.Choice(["score", "generate"]), help="How the student is judged.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Root of task data.")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False), help="Teacher cache file.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory [runs/<task>-seed<S>-<hash>].")
@click.option("--seed", type=int, help="One seed for sampling, training and teacher [0].")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="Continue the run in this directory with its own saved config.")
@click.option("--dry-run", is_flag=True, help="Print the plan; touch nothing.")
def run(config_file: str | None, resume_dir: str | None, dry_run: bool, **options: object) -> None:
    """Run LLM2LLM: train, find wrong seed examples, have the teacher write new ones, repeat."""
    if resume_dir:
        saved = Path(resume_dir) / CONFIG
        if not saved.exists():
            raise UserError("is not a localaug run directory (no config.yaml)", file=resume_dir)
        cfg = build_config(saved)
        cfg.out = str(resume_dir)
    else:
        epochs = options.pop("epochs")
        cfg = build_config(config_file, **options)
        if epochs is not None:
            cfg.student_settings = {**cfg.student_settings, "epochs": epochs}
    task = load_task(cfg.task, cfg.data_dir)
    cfg = cfg.resolve(task.defaults)
    out = Path(cfg.out) if cfg.out else _default_out(cfg)
    cfg.out = str(out)  # recorded in config.yaml; not part of the run's fingerprint
    console = Console()
    if dry_run:
        pool = task.load_split("train")
        test = task.load_split("test")
        seed_n = cfg.seed_size or max(1, round((cfg.seed_fraction or 0) * len(pool)))
        test_n = min(len(test), cfg.test_size or len(test))
        epochs = int(cfg.student_settings.get("epochs", 6))
        # The held-out recipe trains one more student at the end (the final model, on all seeds).
        est = _estimate_seconds(seed_n, seed_n, test_n, int(cfg.iterations or 1) + (1 if cfg.holdout else 0), epochs)
        table = Table(title="localaug run --dry-run (nothing was written)", show_header=False)
        for k, v in [("task", f"{task.name} ({task.kind.name})"), ("train pool", f"{len(pool):,} rows"),
                     ("seed set", f"{seed_n} rows (seed {cfg.seed})"), ("test set", f"{test_n} rows"),
                     ("iterations", str(cfg.iterations)), ("per wrong example", str(cfg.per_wrong)),
                     ("recipe", f"{cfg.recipe} (shots {cfg.shots}, verify {cfg.verify}, holdout {cfg.holdout})"),
                     ("student", cfg.student), ("teacher", cfg.teacher_url or cfg.teacher),
                     ("eval", task.eval_mode(cfg.eval_mode)), ("run dir", str(out)),
                     ("estimated time", f"~{est / 60:.0f} min on 2 CPU cores (rough)")]:
            table.add_row(k, v)
        console.print(table)
        return
    from .backends import make_student, make_teacher, teacher_cache_path
    from .loop import Loop, check_task_has_test
    from .progress_ui import RichObserver
    from .report import verdict, write_report

    check_task_has_test(task)
    store = RunStore.open_for_run(out, cfg)
    try:
        console.print(f"[bold]localaug[/bold] {task.name}: seed {cfg.seed_size or cfg.seed_fraction}, "
                      f"{cfg.iterations} iterations -> {out}")
        student = make_student(cfg.student, cfg.student_settings)
        store.manifest["models"]["student"] = getattr(student, "identity", cfg.student)
        store.manifest["teacher_cache"] = str(teacher_cache_path(cfg))
        store.save_manifest()
        with RichObserver(int(cfg.iterations or 1), console) as obs:
            loop = Loop(task, cfg, store, student, lambda: make_teacher(cfg), obs)
            result = loop.run()
        if loop._teacher is not None:
            store.manifest["models"]["teacher"] = loop._teacher.identity
            store.save_manifest()
        path = write_report(store)
        console.print(verdict(result.iterations, result.final))
        if result.stopped_early:
            console.print(f"Stopped early: {result.stopped_early}.")
        console.print(f"Report: {path}  Plot: {out / 'accuracy.png'}")
    finally:
        store.unlock()


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir: str) -> None:
    """Rebuild RUN_DIR/report.md and accuracy.png from the run's manifest."""
    from .report import iteration_rows, iteration_table, verdict, write_report

    store = RunStore.open_existing(Path(run_dir))
    path = write_report(store)
    rows = iteration_rows(store)
    console = Console()
    console.print(iteration_table(rows))
    console.print(verdict(rows, store.manifest.get("final")))
    console.print(f"Report: {path}")


@click.command()
@click.option("--dir", "runs_dir", type=click.Path(file_okay=False), default=str(RUNS_DIR), show_default=True)
def runs(runs_dir: str) -> None:
    """List the runs under a folder."""
    table = Table(title=f"runs in {runs_dir}")
    for col in ("run", "task", "created", "iterations", "test acc (first -> last)", "state"):
        table.add_column(col)
    root = Path(runs_dir)
    for d in sorted(p for p in root.glob("*") if (p / "manifest.json").exists()) if root.exists() else []:
        store = RunStore.open_existing(d)
        its = [store.manifest["iterations"][k] for k in sorted(store.manifest.get("iterations", {}))]
        final = store.manifest.get("final") or its[-1] if its else None
        acc = f"{its[0]['test_accuracy']:.1%} -> {final['test_accuracy']:.1%}" if its and final else "-"
        cfg = build_config(d / CONFIG) if (d / CONFIG).exists() else RunConfig()
        state = "finished" if store.manifest.get("finished") else "unfinished (resume with --resume)"
        table.add_row(d.name, cfg.task, store.manifest.get("created", "?"), str(len(its)), acc, state)
    Console().print(table)
