"""`localaug generate`, `train`, `eval`: one stage of the loop alone, for debugging and baselines."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..config import RECIPES, Settings, build_config, resolve
from ..data import sample_seed
from ..errors import UserError
from ..files import write_jsonl_atomic
from ..modelcards import DEFAULT_STUDENT, DEFAULT_TEACHER
from ..task import Example, Task, load_task

task_option = click.option("--task", "task_name", required=True, help="Task name or card path.")
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), help="Root of task data.")


def _bar(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TextColumn("ETA"), TimeRemainingColumn(), console=console)


def _settings(task: Task, **options: object) -> Settings:
    """The run settings these options make for `task` (None: not given): the same defaults as `localaug run`."""
    return resolve(build_config(task=task.name, **options), task.defaults)


@click.command()
@task_option
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="JSONL of wrong seed examples (task fields, optional 'prediction').")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Accepted examples.")
@click.option("--teacher", help=f"Teacher model card or installed plug-in [{DEFAULT_TEACHER}].")
@click.option("--teacher-url", "teacher_urls", multiple=True,
              help="OpenAI-compatible server instead of the in-process teacher; repeat it for a pool.")
@click.option("--teacher-model", help="Model name on the server(s) [the one they serve].")
@click.option("--teacher-identity", help="The served teacher's cache identity [the model the servers report].")
@click.option("--recipe", type=click.Choice(list(RECIPES)),
              help="Whose prompt and checks [localaug with --pool, paper without].")
@click.option("--per-wrong", type=int, help="New examples per wrong example [the recipe's: localaug 3, paper 1].")
@click.option("--seed", type=int, help="Teacher sampling seed [0].")
@click.option("--iteration", type=int, default=0, show_default=True, help="Recorded in lineage.")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False), help="Teacher cache file.")
@click.option("--pool", "pool_path", type=click.Path(dir_okay=False),
              help="The seed set (task fields): enables the list prompt and the teacher verifier.")
@click.option("--shots", type=int, help="List-prompt examples, with --pool [the recipe's].")
@click.option("--verify/--no-verify", default=None, help="Teacher verification, with --pool [the recipe's].")
@data_dir_option
def generate(task_name: str, input_path: str, out_path: str, teacher: str | None, teacher_urls: tuple[str, ...],
             teacher_model: str | None, teacher_identity: str | None, recipe: str | None, per_wrong: int | None,
             seed: int | None, iteration: int, cache_path: str | None, pool_path: str | None, shots: int | None,
             verify: bool | None, data_dir: str | None) -> None:
    """Have the teacher write new examples for the wrong examples in --input (the augment stage).

    Without --pool this is the paper's recipe (its prompt, every parsed example kept); with --pool the
    localaug recipe's list prompt and teacher verifier. Defaults are `localaug run`'s for that recipe."""
    from ..augment import Target, augment
    from ..backends import make_teacher
    from ..data import read_rows
    from ..teacher.record import pool_of
    from ..verify import verify_with_teacher

    task = load_task(task_name, data_dir)
    examples = task.read_file(Path(input_path))
    predictions = {}
    for line, row in read_rows(Path(input_path)):
        predictions[line] = row.get("prediction")
    wrong = [Target(ex, None if p is None else str(p)) for ex, p in zip(examples, predictions.values(), strict=True)]
    settings = _settings(task, teacher=teacher, teacher_urls=list(teacher_urls) or None, teacher_model=teacher_model,
                         teacher_identity=teacher_identity, recipe=recipe or ("localaug" if pool_path else "paper"),
                         per_wrong=per_wrong, seed=seed, cache_path=cache_path, shots=shots,
                         verify=None if verify is None else ("teacher" if verify else "none"))
    pool = task.read_file(Path(pool_path)) if pool_path else []  # bad input fails before the model loads
    checked = bool(pool) and settings.verify == "teacher"  # the verifier's shots come from the pool
    t = make_teacher(settings)  # every configured server is checked here, before anything is written
    console = Console()
    with _bar(console) as bar:
        tid = bar.add_task("teacher", total=len(wrong) * settings.per_wrong, info="")

        def progress(done: int, total: int, info: dict) -> None:
            tps = f"  {info['tokens_per_s']:.0f} tok/s" if info.get("tokens_per_s") else ""
            bar.update(tid, completed=done, total=total,
                       info=f"accepted {info.get('accepted', 0)}  rejected {info.get('rejected', 0)}{tps}")

        res = augment(task, t, wrong, iteration=iteration, per_wrong=settings.per_wrong, run_seed=settings.seed,
                      max_retries=settings.max_retries, shots=settings.shots if pool else 0, pool=pool,
                      progress=progress)
        parsed, kept, rejected_rows = len(res.accepted), res.accepted, list(res.rejected)
        if checked:
            vid = bar.add_task("verifier", total=max(1, len(res.accepted)), info="")
            ver = verify_with_teacher(task, t, res.accepted, pool, run_seed=settings.seed, iteration=iteration,
                                      progress=lambda d, n, i: bar.update(vid, completed=d, total=n))
            kept, rejected_rows = ver.accepted, rejected_rows + ver.rejected
    out = Path(out_path)
    write_jsonl_atomic(out, [e.to_json() for e in kept])
    rejected = out.with_name(out.stem + ".rejected.jsonl")
    write_jsonl_atomic(rejected, rejected_rows)
    tps = res.completion_tokens / res.seconds if res.seconds else 0.0
    distinct = len({" ".join(task.dedup_text(e).lower().split()) for e in res.accepted})
    confirmed = f", {len(kept)} confirmed by the verifier" if checked else ""
    console.print(f"{res.completions} completions ({res.cached} cached, {tps:.0f} tok/s): {parsed} parsed "
                  f"(parse failure rate {res.parse_failure_rate:.0%}), {res.repeats} repeats, "
                  f"{distinct} distinct texts{confirmed} -> {out}, {rejected}", soft_wrap=True)
    pool = pool_of(t)
    if pool is not None and len(pool.members) > 1:
        console.print("requests answered: " + ", ".join(f"{r['url']} {r['answered']}" + (
            f" (set aside {r['set_aside']}x)" if r["set_aside"] else "") for r in pool.server_records()),
            soft_wrap=True, highlight=False)
    t.close()


def _training_rows(task: Task, data_path: str | None, settings: Settings) -> list[Example]:
    if data_path:
        return task.read_file(Path(data_path))
    pool = task.load_split("train")
    return sample_seed(pool, size=settings.seed_size, fraction=settings.seed_fraction, seed=settings.seed,
                       stratify_by=task.stratify())


@click.command()
@task_option
@click.option("--data", "data_path", type=click.Path(dir_okay=False), help="Training JSONL (default: a seed sample).")
@click.option("--seed-size", type=int, help="Seed sample size when --data is not given [the task card's].")
@click.option("--student", help=f"Student model card or installed plug-in [{DEFAULT_STUDENT}].")
@click.option("--seed", type=int, help="Seed sampling and training seed [0].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Adapter directory.")
@data_dir_option
def train(task_name: str, data_path: str | None, seed_size: int | None, student: str | None, seed: int | None,
          out_dir: str, data_dir: str | None) -> None:
    """Fine-tune the student from its base weights (plain fine-tuning: the LLM2LLM baseline)."""
    from ..backends import make_student

    task = load_task(task_name, data_dir)
    settings = _settings(task, seed_size=seed_size, student=student, seed=seed)
    rows = _training_rows(task, data_path, settings)
    s = make_student(settings.student, settings.student_settings)
    console = Console()
    with _bar(console) as bar:
        tid = bar.add_task("training", total=1, info="")
        stats = s.train([task.train_item(e) for e in rows], Path(out_dir), seed=settings.training_seed,
                        progress=lambda d, t, i: bar.update(tid, completed=d, total=t,
                                                            info=f"loss {i['loss']:.3f}" if "loss" in i else ""))
    console.print(f"trained on {len(rows)} rows: {stats.steps} steps, {stats.seconds:.1f}s, "
                  f"final loss {stats.final_loss} -> {out_dir}")


@click.command("eval")
@task_option
@click.option("--adapter", type=click.Path(file_okay=False), help="Adapter directory (default: base model).")
@click.option("--split", default="test", show_default=True)
@click.option("--limit", type=int, help="First N rows only.")
@click.option("--mode", type=click.Choice(["score", "generate"]), help="Scoring or generate-and-parse [the task's].")
@click.option("--student", help=f"Student model card or installed plug-in [{DEFAULT_STUDENT}].")
@click.option("--eval-backend", type=click.Choice(["transformers", "llamacpp"]),
              help="The evaluation engine [transformers]; llamacpp: the base GGUF + the adapter as a llama.cpp LoRA.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write predictions JSONL here.")
@data_dir_option
def eval_cmd(task_name: str, adapter: str | None, split: str, limit: int | None, mode: str | None,
             student: str | None, eval_backend: str | None, out_path: str | None, data_dir: str | None) -> None:
    """Evaluate the student (base or base + adapter) on a split of a task."""
    from ..backends import make_student

    task = load_task(task_name, data_dir)
    if adapter and not Path(adapter).is_dir():
        raise UserError("adapter directory not found", file=adapter)
    settings = _settings(task, student=student, eval_mode=mode, eval_backend=eval_backend)
    rows = task.load_split(split)[:limit] if limit else task.load_split(split)
    mode = task.eval_mode(settings.eval_mode)
    s = make_student(settings.student, settings.student_settings, eval_backend=settings.eval_backend)
    console = Console()
    with _bar(console) as bar:
        tid = bar.add_task(f"eval {split} ({mode})", total=len(rows), info="")
        results = s.evaluate(Path(adapter) if adapter else None, [task.eval_item(e, mode) for e in rows],
                             progress=lambda d, t, i: bar.update(tid, completed=d, total=t))
    judged = task.judge_all(rows, results)
    if out_path:
        write_jsonl_atomic(Path(out_path), judged.rows)
    console.print(f"{task.name} {split}: accuracy {judged.accuracy:.1%} ({judged.correct}/{len(rows)}, {mode})")
