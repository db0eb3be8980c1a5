"""The loop against small fakes of the Student/Teacher protocols, with the real store, dedup and cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localaug.config import RunConfig, resolve
from localaug.errors import UserError
from localaug.loop import Loop
from localaug.observer import NullObserver
from localaug.records import AugmentSummary, Manifest, PrepareSummary
from localaug.store import RunStore
from localaug.task import load_task
from localaug.teacher.cache import CachedTeacher, GenerationCache
from tests.fakes import FakeStudent, FakeTeacher


def _run(tmp_path: Path, name: str = "run", **cfg_over) -> tuple[Loop, FakeTeacher, FakeStudent]:
    task = load_task("demo")
    cfg_over.setdefault("recipe", "paper")  # these tests pin the paper's algorithm; test_recipe.py the rest
    cfg_over = {"seed_size": 18, "iterations": 3, "seed": 1, **cfg_over}
    cfg = resolve(RunConfig(task="demo", **cfg_over), task.defaults)
    store = RunStore.open_for_run(tmp_path / name, cfg)
    teacher, student = FakeTeacher(), FakeStudent()
    cached = CachedTeacher(teacher, GenerationCache(tmp_path / "cache.sqlite"))
    loop = Loop(task, cfg, store, student, lambda: cached)
    loop.run()
    store.unlock()
    return loop, teacher, student


def test_loop_follows_the_algorithm(tmp_path: Path) -> None:
    loop, teacher, student = _run(tmp_path)
    root = loop.store.root
    seed = [json.loads(x) for x in (root / "seed.jsonl").read_text().splitlines()]
    assert len(seed) == 18
    d0 = [json.loads(x) for x in (root / "iter_00/train.jsonl").read_text().splitlines()]
    assert d0 == seed  # D_0 = seed
    rows = loop.store.manifest.rows()
    assert len(rows) == 3, loop.store.manifest.stopped_early
    assert student.train_calls == len(rows)
    for i in range(len(rows) - 1):
        ev = [json.loads(x) for x in (root / f"iter_{i:02d}/eval_seed.jsonl").read_text().splitlines()]
        assert {r["id"] for r in ev} == {s["id"] for s in seed}  # evaluated on the SEED set only
        wrong = {r["id"] for r in ev if not r["correct"]}
        accepted = [json.loads(x) for x in (root / f"iter_{i:02d}/augment.jsonl").read_text().splitlines()]
        # Only wrong seed examples were sent to the teacher, and lineage says which.
        assert accepted and {a["meta"]["seed_id"] for a in accepted} <= wrong
        nxt = [json.loads(x) for x in (root / f"iter_{i + 1:02d}/train.jsonl").read_text().splitlines()]
        cur = [json.loads(x) for x in (root / f"iter_{i:02d}/train.jsonl").read_text().splitlines()]
        assert nxt == cur + accepted  # D_{i+1} = D_i ∪ A_i
        rejected = [json.loads(x) for x in (root / f"iter_{i:02d}/rejected.jsonl").read_text().splitlines()]
        assert all(r["reason"] for r in rejected)
        assert any(r["reason"].startswith("copy") or r["reason"].startswith("parse") for r in rejected)
    # The final iteration trains and evaluates but generates nothing.
    last = len(rows) - 1
    assert not (root / f"iter_{last:02d}/augment.jsonl").exists()
    assert loop.store.manifest.finished is True


def test_rerun_redoes_nothing_and_calls_no_teacher(tmp_path: Path) -> None:
    loop, teacher, student = _run(tmp_path)
    before = (loop.store.root / "manifest.json").read_text()
    loop2, teacher2, student2 = _run(tmp_path)
    assert student2.train_calls == 0 and teacher2.calls == 0
    assert json.loads(before)["stages"] == loop2.store.manifest.to_json()["stages"]


def test_same_seed_same_data_new_dir_uses_cache(tmp_path: Path) -> None:
    loop, teacher, _ = _run(tmp_path, "a")
    loop2, teacher2, _ = _run(tmp_path, "b")
    assert teacher.calls > 0 and teacher2.calls == 0  # every generation came from the cache
    last = sorted(p.name for p in loop.store.root.glob("iter_*"))[-1]
    first_run, second_run = loop.store.root / last / "train.jsonl", loop2.store.root / last / "train.jsonl"
    assert first_run.read_bytes() == second_run.read_bytes()


def test_contaminated_candidates_are_rejected(tmp_path: Path) -> None:
    """A teacher that copies a TEST example must never get it into the training data."""
    task = load_task("demo")
    test_text = task.load_split("test")[0].data["text"]

    class CopyTestTeacher(FakeTeacher):
        def generate(self, requests, progress=None):  # noqa: ANN001, ANN201
            out = super().generate(requests, progress)
            for comps in out:
                comps[0].text = test_text.upper() + " !"  # case/punctuation changed only
            return out

    cfg = resolve(RunConfig(task="demo", seed_size=18, iterations=2, seed=3, recipe="paper"), task.defaults)
    store = RunStore.open_for_run(tmp_path / "run", cfg)
    loop = Loop(task, cfg, store, FakeStudent(), lambda: CopyTestTeacher())
    loop.run()
    root = store.root
    rejected = [json.loads(x) for x in (root / "iter_00/rejected.jsonl").read_text().splitlines()]
    assert any(r["reason"].startswith("contaminated") for r in rejected)
    trained = [p.read_text().lower() for p in root.glob("iter_*/*.jsonl") if p.name in ("train.jsonl", "augment.jsonl")]
    assert trained and not any(test_text.lower() in t for t in trained)


def test_out_dir_with_another_run_is_refused(tmp_path: Path) -> None:
    _run(tmp_path)
    task = load_task("demo")
    other = resolve(RunConfig(task="demo", seed_size=12, iterations=3, seed=1), task.defaults)
    with pytest.raises(UserError, match="holds another run"):
        RunStore.open_for_run(tmp_path / "run", other)


def test_non_empty_foreign_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    cfg = resolve(RunConfig(), load_task("demo").defaults)
    with pytest.raises(UserError, match="not empty"):
        RunStore.open_for_run(tmp_path / "x", cfg)


def test_live_lock_is_refused(tmp_path: Path) -> None:
    cfg = resolve(RunConfig(), load_task("demo").defaults)
    first = RunStore.open_for_run(tmp_path / "r", cfg)
    import subprocess
    import sys

    # Another process must be refused while we hold the lock.
    code = ("import sys; from pathlib import Path; from localaug.store import RunStore; "
            "from localaug.config import RunConfig, resolve; from localaug.task import load_task\n"
            "from localaug.errors import UserError\n"
            "cfg = resolve(RunConfig(), load_task('demo').defaults)\n"
            "try:\n  RunStore.open_for_run(Path(sys.argv[1]), cfg)\nexcept UserError as e:\n  print(e); sys.exit(2)\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True)
    assert res.returncode == 2 and "locked by a running localaug" in res.stdout
    first.unlock()
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_trec_seed_54_three_iterations_on_shared_data(tmp_path: Path, data_dir: Path) -> None:
    """`localaug run --task trec --seed-size 54 --iterations 3`, with fake models standing in."""
    task = load_task("trec")
    cfg = resolve(RunConfig(task="trec", seed_size=54, iterations=3, seed=0), task.defaults)
    store = RunStore.open_for_run(tmp_path / "trec", cfg)
    teacher = CachedTeacher(FakeTeacher(), GenerationCache(tmp_path / "c.sqlite"))
    result = Loop(task, cfg, store, FakeStudent(), lambda: teacher).run()
    prepared = store.summary("prepare")
    assert isinstance(prepared, PrepareSummary) and prepared.seed_size == 54 and prepared.test_size == 500
    assert len(result.iterations) == 3, result.stopped_early
    # The default recipe: every seed example in the loop, errors found out of fold, no final retraining.
    assert prepared.holdout_size == 0 and result.iterations[0].train_size == 54
    assert (store.root / "iter_00" / "eval_oof.jsonl").exists() and result.iterations[0].oof_accuracy is not None
    assert result.iterations[1].train_size > result.iterations[0].train_size
    assert result.final is None


def test_untargeted_control_asks_about_as_many_random_seed_examples(tmp_path: Path) -> None:
    loop, _, _ = _run(tmp_path, "ctl", target="random")
    root = loop.store.root
    ev = [json.loads(x) for x in (root / "iter_00/eval_seed.jsonl").read_text().splitlines()]
    n_wrong = sum(not r["correct"] for r in ev)
    info = loop.store.summary("iter_00/augment")
    assert isinstance(info, AugmentSummary) and info.wrong == n_wrong  # same budget as the targeted loop
    asked = {r["seed_id"] for r in loop.store.read_jsonl("iter_00/rejected_parse.jsonl")} | {
        r["meta"]["seed_id"] for r in loop.store.read_jsonl("iter_00/candidates.jsonl")}
    right = {r["id"] for r in ev if r["correct"]}
    assert asked & right  # the control is not restricted to wrong examples


def test_test_offset_keeps_the_study_rows_apart(tmp_path: Path) -> None:
    """Confirmation runs score test rows that no development run touched: test_offset skips the first ones."""
    loop, _, _ = _run(tmp_path, test_offset=100, test_size=15, iterations=1)
    test = loop.store.read_jsonl("test.jsonl")
    every = load_task("demo").load_split("test")
    assert [r["id"] for r in test] == [e.id for e in every[100:115]]


def test_the_teacher_is_freed_when_the_run_ends(tmp_path: Path) -> None:
    # A model left to the garbage collector at interpreter exit made llama.cpp print a traceback after a
    # finished study run; the loop now frees it (and its cache connection) itself, and still names it.
    closed = []

    class ClosingTeacher(FakeTeacher):
        def close(self) -> None:
            closed.append(self.identity)

    task = load_task("demo")
    cfg = resolve(RunConfig(task="demo", recipe="paper", seed_size=18, iterations=2, seed=1), task.defaults)
    store = RunStore.open_for_run(tmp_path / "run", cfg)
    cached = CachedTeacher(ClosingTeacher(), GenerationCache(tmp_path / "cache.sqlite"))
    loop = Loop(task, cfg, store, FakeStudent(), lambda: cached)
    loop.run()
    store.unlock()
    assert closed == ["fake-teacher-v1"]
    assert cached.cache._local.conn is None
    assert loop.teacher_identity == "fake-teacher-v1"


def test_paper_recipe_asks_the_teacher_nothing_before_the_first_augment_stage(tmp_path: Path) -> None:
    """`--recipe paper` is the published loop: no preflight, so the first teacher call (and the first time
    the teacher is even built) comes in iteration 0's augment stage."""
    stages: list[str] = []

    class Watch(NullObserver):
        def stage_start(self, iteration: int, stage: str, total: int) -> None:
            stages.append(f"{iteration}/{stage}")

    class Watched(FakeTeacher):
        def generate(self, requests, progress=None):  # noqa: ANN001, ANN201
            stages.append("teacher call")
            return super().generate(requests, progress)

    built: list[str] = []

    def make_teacher() -> FakeTeacher:
        built.append(stages[-1])
        return Watched()

    task = load_task("demo")
    cfg = resolve(RunConfig(task="demo", recipe="paper", seed_size=18, iterations=2, seed=1), task.defaults)
    store = RunStore.open_for_run(tmp_path / "run", cfg)
    Loop(task, cfg, store, FakeStudent(), make_teacher, Watch()).run()
    store.unlock()
    assert built == ["0/augment"]
    first_call = stages.index("teacher call")
    assert stages[first_call - 1] == "0/augment" and "-2/teacher" not in stages
    assert not (store.root / "preflight").exists() and store.manifest.preflight is None


def test_the_store_is_the_only_writer_of_the_manifest(tmp_path: Path) -> None:
    loop, _, _ = _run(tmp_path)
    store = RunStore.open_existing(loop.store.root)
    seen = store.manifest
    seen.finished = False
    seen.iterations.clear()
    seen.stages["iter_00/train"].steps = -1
    assert store.manifest.finished and len(store.manifest.iterations) == 3
    assert store.summary("iter_00/train").steps > 0  # what a reader holds is a copy
    on_disk = json.loads((store.root / "manifest.json").read_text())
    assert Manifest.model_validate(on_disk) == store.manifest  # and the file says what the store says
