"""The confirmatory study of docs/RESULTS.md: paired runs of every arm on every (data seed, training seed).

    python bench/study.py --task trec --phase dev --data-seeds 0 1 --arms plain localaug steps
    python bench/study.py --task trec --phase confirm --data-seeds 10 11 12 13 14 --test-size 200

Arms (each an ordinary localaug run; the same student, teacher, seed set and training seed within a pair):

    plain     fine-tuning on every seed example (recipe paper, one iteration)
    paper     the paper's loop: its prompt, one new example per wrong seed example, every one kept
    localaug  the default recipe (whatever `localaug run` does today)
    random    the default recipe, untargeted: as many seed examples as it would target, drawn at random
    steps     plain fine-tuning for as many optimizer steps as the paired localaug final model took
    localaug-270m   the default recipe with the 270M model as its own teacher
    tune      plain fine-tuning on 3/4 of the seeds scored on the other 1/4: how the epochs are chosen
    localaug-filter, localaug-holdout   development variants of the recipe (consistency filter; held-out choice)
    localaug-styled   v3 development: match_style and refuse_non_examples on (docs/task-cards.md)

Phases keep development and confirmation apart: `dev` scores the first --test-size test rows; `confirm`
skips the first 300 (the rows every development run scored) and should use data seeds no development run
used. One JSON line per finished run is appended to --results (bench/results/study.jsonl, committed), and
a run already there is not run again, so a killed study resumes; bench/study_report.py makes every table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from localaug.backends import make_student, teacher_cache_path
from localaug.config import RunConfig, Settings, resolve
from localaug.errors import UserError
from localaug.loop import Loop
from localaug.store import RunStore
from localaug.task import load_task
from localaug.teacher.cache import CachedTeacher, GenerationCache

DEV_TEST_ROWS = 300  # development runs score test rows [0, 300); confirmation runs never do
ARMS: dict[str, dict[str, Any]] = {
    "plain": {"recipe": "paper", "iterations": 1, "preflight": 0},
    "paper": {"recipe": "paper", "iterations": 2, "preflight": 0},
    "localaug": {},
    "random": {"target": "random", "preflight": 0},
    "steps": {"recipe": "paper", "iterations": 1, "preflight": 0},  # + max_steps from the paired localaug run
    "localaug-270m": {"teacher": "gemma3-270m"},
    # Development variants of the recipe (docs/RESULTS.md, "Development"): the winner became the default.
    "localaug-filter": {"find_errors": "oof", "filter": "students"},
    "localaug-holdout": {"holdout": 0.25},
    # v3 development on SST-2: the teacher's text in the seeds' style, and a verifier that may refuse non-examples.
    "localaug-styled": {"match_style": True, "refuse_non_examples": True},
    # Choosing the training budget: plain fine-tuning on 3/4 of the seeds, scored on the held-out 1/4.
    "tune": {"recipe": "paper", "iterations": 1, "holdout": 0.25, "preflight": 0},
}


def _inner_teacher(spec: str, threads: int | None) -> Any:
    """A teacher loaded for one run (seconds, against runs of many minutes). Not shared between runs: the loop
    closes its teacher when a run no longer needs it, and the next run's first call on a shared, closed
    llama.cpp model crashed the process (v3 confirmation lanes, at the start of each new data seed)."""
    from localaug.teacher import build_teacher

    return build_teacher(spec, n_threads=threads)


def code_commit() -> str:
    """The commit whose code this process runs, read once at start (a run may finish after HEAD moved),
    with '+dirty' when tracked files under localaug/, bench/, tasks/ or models/ differ from it."""
    here = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                              cwd=here, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                "localaug", "bench/study.py", "tasks", "models"],
                               capture_output=True, text=True, cwd=here, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


COMMIT = code_commit()  # at import: the code that runs, not HEAD when a run finishes


def _stage_sum(stages: dict[str, Any], suffix: str, key: str) -> int:
    return sum(int(v.get(key, 0) or 0) for k, v in stages.items() if k.endswith(suffix))


def record(settings: Settings, run: Path, arm: str, phase: str, study: str, wall: float, started: str = ""
           ) -> dict[str, Any]:
    """The JSON line of a finished run: what was run, and every number the report needs."""
    m = json.loads((run / "manifest.json").read_text())
    stages = m["stages"]
    its = [m["iterations"][k] for k in sorted(m["iterations"])]
    final = m.get("final")
    final_train = stages.get("final/train") or stages.get(f"iter_{len(its) - 1:02d}/train", {})
    return {
        "study": study, "phase": phase, "task": Path(settings.task).stem, "arm": arm, "run": run.name,
        "data_seed": settings.seed, "train_seed": settings.training_seed, "fingerprint": settings.fingerprint(),
        "settings": settings.model_dump(exclude={"out", "cache_path", "data_dir"}),
        "test_rows": [settings.test_offset, stages["prepare"]["test_size"]],
        "seed_size": stages["prepare"]["seed_size"], "holdout_size": stages["prepare"]["holdout_size"],
        "iterations": [{k: r.get(k) for k in ("test_accuracy", "seed_accuracy", "holdout_accuracy", "oof_accuracy",
                                              "wrong", "new_examples", "train_size")} for r in its],
        "final_test_accuracy": final["test_accuracy"] if final else its[-1]["test_accuracy"],
        "kept_iteration": final["kept_iteration"] if final else len(its) - 1,
        "added": final["added"] if final else sum(r.get("new_examples", 0) for r in its[:-1]),
        "final_steps": final_train.get("steps"), "final_train_size": final_train.get("train_size"),
        "teacher": m["models"].get("teacher"), "student": m["models"].get("student"),
        "preflight": m.get("preflight"), "stopped_early": m.get("stopped_early"),
        "teacher_counts": {"targets": _stage_sum(stages, "/augment", "wrong"),
                           "completions": _stage_sum(stages, "/augment", "completions"),
                           "parsed": _stage_sum(stages, "/augment", "parsed"),
                           "repeats": _stage_sum(stages, "/augment", "repeats"),
                           "verified": _stage_sum(stages, "/verify", "verified"),
                           "accepted": _stage_sum(stages, "/dedup", "accepted")},
        "stage_seconds": round(sum(v.get("seconds", 0.0) for v in stages.values()), 1),
        "wall_seconds": round(wall, 1), "commit": COMMIT, "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "threads": os.environ.get("OMP_NUM_THREADS"),
    }


def run_arm(args: argparse.Namespace, arm: str, ds: int, ts: int, student: Any, extra: dict[str, Any],
            done: dict[tuple[str, ...], dict[str, Any]]) -> dict[str, Any]:
    task = load_task(args.task, args.data_dir)
    values: dict[str, Any] = {"task": args.task, "seed": ds, "train_seed": ts, "seed_size": args.seed_size,
                              "teacher": args.teacher, "student": args.student, "cache_path": args.cache,
                              "data_dir": args.data_dir, "student_settings": dict(args.student_settings),
                              **args.settings, **ARMS[arm], **extra}
    if args.phase == "confirm":
        values["test_offset"] = DEV_TEST_ROWS
    values["test_size"] = args.test_size
    settings = resolve(RunConfig(**{k: v for k, v in values.items() if v is not None}), task.defaults)
    key = (args.phase, settings.fingerprint(), arm)
    if key in done:
        return done[key]
    if settings.student_settings != args.student_settings:
        # This arm trains differently (the step-matched control's max_steps): the shared student would
        # silently train with the study's settings instead.
        student = make_student(settings.student, settings.student_settings)
    run = Path(args.out) / args.phase / Path(args.task).stem / f"{arm}-d{ds}-t{ts}-{settings.fingerprint()[:8]}"
    settings.out = str(run)
    store = RunStore.open_for_run(run, settings)
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        def make_teacher() -> Any:
            inner = _inner_teacher(settings.teacher, args.teacher_threads)
            return CachedTeacher(inner, GenerationCache(teacher_cache_path(settings)))

        Loop(task, settings, store, student, make_teacher).run()
    finally:
        store.unlock()
    rec = record(settings, run, arm, args.phase, args.study, time.perf_counter() - t0, started)
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")
    done[key] = rec
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--phase", choices=["dev", "confirm"], required=True)
    ap.add_argument("--study", default="v2", help="a name for this study, recorded with every run")
    ap.add_argument("--data-seeds", type=int, nargs="+", required=True)
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--arms", nargs="+", default=["plain", "localaug", "steps"], choices=list(ARMS))
    ap.add_argument("--seed-size", type=int)
    ap.add_argument("--test-size", type=int, default=DEV_TEST_ROWS)
    ap.add_argument("--epochs", type=float, help="student training epochs (default: the task's)")
    ap.add_argument("--set", dest="sets", nargs="*", default=[], metavar="KEY=VALUE",
                    help="run settings for every arm, e.g. find_errors=oof per_wrong=2 (YAML values)")
    ap.add_argument("--student", default="gemma3-270m")
    ap.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    ap.add_argument("--teacher-threads", type=int)
    ap.add_argument("--cache", default="bench/results/teacher-cache.sqlite", help="the study's teacher cache")
    ap.add_argument("--results", default="bench/results/study.jsonl")
    ap.add_argument("--out", default="runs/study")
    ap.add_argument("--data-dir")
    ap.add_argument("--plain-from-localaug", action="store_true",
                    help="record plain fine-tuning from iteration 0 of each localaug run instead of training it again")
    args = ap.parse_args(argv)
    try:
        return _study(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return UserError.exit_code


def _study(args: argparse.Namespace) -> int:
    import yaml

    args.settings = {}
    for item in args.sets:
        key, _, value = item.partition("=")
        args.settings[key] = yaml.safe_load(value)
    task = load_task(args.task, args.data_dir)
    args.student_settings = dict(task.defaults.student_settings)
    if args.epochs:
        args.student_settings["epochs"] = args.epochs
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, ...], dict[str, Any]] = {}
    if Path(args.results).exists():
        for line in Path(args.results).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            done[(r["phase"], r["fingerprint"], r["arm"])] = r
    student = make_student(args.student, args.student_settings)
    for ds in args.data_seeds:
        for ts in args.train_seeds:
            for arm in [a for a in args.arms if a != "steps"]:
                r = run_arm(args, arm, ds, ts, student, {}, done)
                _say(r)
            if args.plain_from_localaug:
                _say(derive_plain(args, run_arm(args, "localaug", ds, ts, student, {}, done), done))
            if "steps" in args.arms:
                ref = run_arm(args, "localaug", ds, ts, student, {}, done)
                steps = ref["final_steps"]
                r = run_arm(args, "steps", ds, ts, student,
                            {"student_settings": {**args.student_settings, "max_steps": steps}}, done)
                if r["final_steps"] != steps:  # the control is only a control if it trained that long
                    raise SystemExit(f"steps arm trained {r['final_steps']} steps, not {steps}: {r['run']}")
                _say(r)
    return 0


def derive_plain(args: argparse.Namespace, ref: dict[str, Any], done: dict[tuple[str, ...], dict[str, Any]]
                 ) -> dict[str, Any]:
    """The plain arm read off iteration 0 of the paired localaug run, instead of training it again.

    With no held-out seeds, iteration 0 IS plain fine-tuning on every seed example, with the same data,
    training seed and budget; CPU training is deterministic, so a separate plain run gives the same
    adapter (the development runs ran both: bench/study_report.py checks they agree)."""
    if ref["holdout_size"]:
        raise UserError("--plain-from-localaug needs localaug runs without held-out seeds (holdout: 0)")
    key = (args.phase, ref["fingerprint"], "plain")
    if key in done:
        return done[key]
    it0 = ref["iterations"][0]
    m = json.loads((Path(args.out) / args.phase / ref["task"] / ref["run"] / "manifest.json").read_text())
    rec = {**ref, "arm": "plain", "derived_from": ref["run"], "iterations": [it0],
           "final_test_accuracy": it0["test_accuracy"], "kept_iteration": 0, "added": 0,
           "final_steps": m["stages"]["iter_00/train"]["steps"], "final_train_size": it0["train_size"],
           "teacher": None, "preflight": None, "stopped_early": None, "wall_seconds": 0.0,
           "teacher_counts": dict.fromkeys(ref["teacher_counts"], 0)}
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")
    done[key] = rec
    return rec


def _say(r: dict[str, Any]) -> None:
    its = " ".join(f"{x['test_accuracy']:.1%}" for x in r["iterations"])
    tc = r["teacher_counts"]
    print(f"{r['task']} {r['phase']} d{r['data_seed']} t{r['train_seed']} {r['arm']:14s} iterations {its} | final "
          f"{r['final_test_accuracy']:.1%} (kept {r['kept_iteration']}, added {r['added']}; teacher: "
          f"{tc['targets']} targets, {tc['parsed']} parsed, {tc['verified']} verified, {tc['accepted']} accepted) "
          f"{r['wall_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
