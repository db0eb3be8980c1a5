"""The localaug recipe: list prompt, teacher verification, held-out seeds and the final model choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localaug.augment import Target, augment
from localaug.config import RunConfig, build_config, resolve
from localaug.errors import UserError
from localaug.loop import Loop
from localaug.recipe import select_iteration
from localaug.records import FinalModel, IterationRow
from localaug.store import RunStore
from localaug.task import Example, load_task
from localaug.task.card import TaskDefaults
from localaug.teacher.cache import CachedTeacher, GenerationCache
from localaug.verify import verify_with_teacher
from tests.fakes import FakeStudent, FakeTeacher, ScriptedTeacher


def _trec_seed(data_dir: Path) -> list[Example]:
    return load_task("trec", data_dir).load_split("train")[:300]


def test_shots_prompt_lists_same_label_seed_examples_with_the_wrong_one_last(data_dir: Path) -> None:
    task = load_task("trec", data_dir)
    pool = _trec_seed(data_dir)
    wrong = next(e for e in pool if e.data["label"] == "LOC")
    teacher = ScriptedTeacher(lambda *_: " Where is the tallest lighthouse in Norway ?")
    res = augment(task, teacher, [Target(wrong, "HUM")], iteration=0, per_wrong=2, shots=4, pool=pool)
    prompt = teacher.prompts[0]
    assert prompt.startswith("Questions whose answer type is location:")
    lines = prompt.splitlines()
    assert lines[-1] == "Question:" and lines[-2] == f"Question: {wrong.data['text']}"
    listed = [ln[len("Question: "):] for ln in lines[2:-2]]
    by_text = {e.data["text"]: e for e in pool}
    assert len(listed) == 4 and all(by_text[t].data["label"] == "LOC" for t in listed)
    new = {"text": "Where is the tallest lighthouse in Norway ?", "label": "LOC"}
    # Each sample has a prompt of its own (its own draw of seed examples); a sample that repeats an earlier
    # one for the same seed example is rejected as a repeat.
    assert len(teacher.prompts) == 2 and teacher.prompts[0] != teacher.prompts[1]
    assert [e.data for e in res.accepted] == [new]
    assert [r["reason"].split(":")[0] for r in res.rejected] == ["repeat"] and res.repeat_rate == 0.5
    # The paper's prompt is still there with shots=0.
    teacher0 = ScriptedTeacher(lambda *_: " Where is Oslo ?")
    augment(task, teacher0, [Target(wrong, "HUM")], iteration=0, shots=0, pool=pool)
    assert "Student's wrong answer type: human" in teacher0.prompts[0]


def test_verifier_keeps_only_candidates_the_teacher_labels_as_intended(data_dir: Path) -> None:
    task = load_task("trec", data_dir)
    pool = _trec_seed(data_dir)
    cands = [Example("c1", {"text": "How many moons does Mars have ?", "label": "NUM"}, {"seed_id": "x"}),
             Example("c2", {"text": "How many legs does a spider have ?", "label": "LOC"}, {"seed_id": "y"})]
    teacher = ScriptedTeacher(lambda *_: " number")  # a verifier that answers "number" to everything
    res = verify_with_teacher(task, teacher, cands, pool)
    assert [c.id for c in res.accepted] == ["c1"]
    assert res.rejected[0]["id"] == "c2" and "teacher answered 'number', not 'location'" in res.rejected[0]["reason"]
    # The verifier sees seed examples of every label in the student's format, then the candidate.
    p = teacher.prompts[1]
    assert p.endswith("Question: How many legs does a spider have ?\nAnswer type:")
    assert {w for w in task.labels.values() if f"Answer type: {w}\n" in p} == set(task.labels.values())


def test_math_candidates_are_kept_only_when_the_teacher_solves_them_to_the_same_number(data_dir: Path) -> None:
    task = load_task("gsm8k", data_dir)
    right = Example("c1", {"question": "Ann has 2 pens and buys 3. How many?", "answer": "2+3 = <<2+3=5>>5\n#### 5"})
    wrong = Example("c2", {"question": "Bo has 4 cups and breaks 1. How many?", "answer": "4-1 = <<4-1=3>>3\n#### 4"})
    # The scripted teacher solves each problem right, in the form chat models write (LaTeX, \\boxed{}).
    solutions = {"Ann": "2 + 3 = 5, so the answer is \\boxed{5}.", "Bo": "\\(4 - 1 = 3\\). The answer is 3."}
    teacher = ScriptedTeacher(lambda p, _choices: next(v for k, v in solutions.items() if k in p.split("\n\n")[-1]))
    res = verify_with_teacher(task, teacher, [right, wrong], [])
    assert [c.id for c in res.accepted] == ["c1"] and res.answers == ["5", "3"]
    assert res.rejected[0]["reason"] == "verify: teacher answered '3', not '4'"


def test_select_iteration_prefers_plain_fine_tuning_unless_beaten() -> None:
    assert select_iteration([10]) == 0
    assert select_iteration([10, 10, 9]) == 0  # a tie is no evidence for the teacher's data
    assert select_iteration([10, 11, 11]) == 1  # the earliest of the best
    assert select_iteration([10, 9, 12]) == 2


def test_recipes_fill_only_what_the_user_left_open() -> None:
    card = TaskDefaults(per_wrong=1)
    d = resolve(RunConfig(), card)
    assert (d.recipe, d.shots, d.verify, d.holdout, d.per_wrong) == ("localaug", 4, "teacher", 0.0, 3)
    assert (d.find_errors, d.folds, d.filter) == ("oof", 2, "none")
    p = resolve(RunConfig(recipe="paper"), card)
    assert (p.shots, p.verify, p.holdout, p.per_wrong) == (0, "none", 0.0, 1)
    mixed = resolve(RunConfig(recipe="paper", verify="teacher", per_wrong=2), card)
    assert (mixed.verify, mixed.per_wrong, mixed.shots) == ("teacher", 2, 0)
    with pytest.raises(UserError, match="recipe"):
        resolve(build_config(recipe="fast"), card)
    with pytest.raises(UserError, match="holdout"):
        resolve(build_config(holdout=1.5), card)


def _run_demo(tmp_path: Path, teacher: object, **over: object) -> Loop:
    task = load_task("demo")
    over = {"iterations": 3, "seed_size": 18, **over}
    # These tests pin each piece of the recipe on its own: the error finding of the paper, a held-out quarter.
    over = {"seed": 5, "per_wrong": 1, "find_errors": "student", "holdout": 0.25, **over}
    cfg = resolve(RunConfig(task="demo", **over), task.defaults)
    store = RunStore.open_for_run(tmp_path / "run", cfg)
    cached = CachedTeacher(teacher, GenerationCache(tmp_path / "cache.sqlite"))  # type: ignore[arg-type]
    loop = Loop(task, cfg, store, FakeStudent(), lambda: cached)
    loop.run()
    store.unlock()
    return loop


def test_held_out_seeds_never_reach_training_or_the_teacher(tmp_path: Path) -> None:
    loop = _run_demo(tmp_path, FakeTeacher(), verify="none")
    root, m = loop.store.root, loop.store.manifest
    seed = loop.store.read_jsonl("seed.jsonl")
    held = {r["id"] for r in loop.store.read_jsonl("holdout.jsonl")}
    assert len(held) == round(0.25 * len(seed)) and m.stages["prepare"].holdout_size == len(held)
    for d in sorted(root.glob("iter_*")):
        train_ids = {r["id"] for r in loop.store.read_jsonl(f"{d.name}/train.jsonl")}
        assert not train_ids & held
        if (d / "candidates.jsonl").exists():
            asked = {r["meta"]["seed_id"] for r in loop.store.read_jsonl(f"{d.name}/candidates.jsonl")}
            asked |= {r["seed_id"] for r in loop.store.read_jsonl(f"{d.name}/rejected_parse.jsonl")}
            assert asked and not asked & held
        held_eval = loop.store.read_jsonl(f"{d.name}/eval_holdout.jsonl")
        assert {r["id"] for r in held_eval} == held
    # The final model is trained on every seed example plus the data of the iteration that was kept.
    final = m.final
    assert final is not None
    kept = final.kept_iteration
    assert kept == select_iteration([r.holdout_correct for r in m.rows()])
    final_train = loop.store.read_jsonl("final/train.jsonl")
    added = [r for r in loop.store.read_jsonl(f"iter_{kept:02d}/train.jsonl") if r["meta"]["origin"] != "seed"]
    assert final_train == seed + added
    assert (root / "final" / "adapter").exists()
    assert final.test_accuracy == m.stages["final/eval_test"].accuracy
    report = (root / "report.md").read_text() if (root / "report.md").exists() else ""
    assert report == ""  # the loop itself writes no report; the CLI does (tests/test_cli.py)


def test_teacher_copies_of_held_out_seeds_are_rejected_as_contamination(tmp_path: Path) -> None:
    task = load_task("demo")
    cfg = resolve(RunConfig(task="demo", seed_size=18, seed=5, holdout=0.25), task.defaults)
    probe = RunStore.open_for_run(tmp_path / "probe", cfg)
    Loop(task, cfg, probe, FakeStudent(), FakeTeacher).prepare()
    held_text = probe.read_jsonl("holdout.jsonl")[0]["text"]
    probe.unlock()
    loop = _run_demo(tmp_path, ScriptedTeacher(lambda *_: " " + held_text.upper()), verify="none", iterations=2)
    rejected = loop.store.read_jsonl("iter_00/rejected.jsonl")
    assert rejected and all(r["reason"].startswith(("contaminated", "copy")) for r in rejected)
    assert any(r["reason"].startswith("contaminated") for r in rejected)
    assert loop.store.manifest.iterations["00"].new_examples == 0


def test_verify_stage_records_rejections_and_feeds_only_verified_examples_to_dedup(tmp_path: Path) -> None:
    loop = _run_demo(tmp_path, FakeTeacher(), iterations=2)
    st = loop.store
    info = st.summary("iter_00/verify")
    cands = st.read_jsonl("iter_00/candidates.jsonl")
    verified = st.read_jsonl("iter_00/verified.jsonl")
    rej = st.read_jsonl("iter_00/rejected_verify.jsonl")
    assert info.verifier == "teacher (label)" and info.verified == len(verified)
    assert len(verified) + len(rej) == len(cands) and rej  # the fake verifier disagrees with some
    assert {r["id"] for r in st.read_jsonl("iter_00/augment.jsonl")} <= {r["id"] for r in verified}
    assert {r["id"] for r in rej} <= {r.get("id") for r in st.read_jsonl("iter_00/rejected.jsonl")}


@pytest.mark.slow
def test_real_teacher_verifier_raises_label_precision_on_hand_judged_trec(data_dir: Path, gemma_teacher) -> None:  # noqa: ANN001
    """89 TREC questions the 270M teacher wrote, labels judged by hand (tests/data): the verifier's kept
    subset must be more often correctly labelled than the whole set."""
    task = load_task("trec", data_dir)
    rows = [json.loads(x) for x in (Path(__file__).parent / "data/trec_teacher_judged.jsonl").read_text().splitlines()]
    cands = [Example(f"j{i}", {"text": r["text"], "label": r["label"]}, {"seed_id": r["seed_id"]})
             for i, r in enumerate(rows)]
    pool = task.load_split("train")[:400]
    res = verify_with_teacher(task, gemma_teacher, cands, pool)
    ok = {f"j{i}": r["label_correct"] for i, r in enumerate(rows)}
    before = sum(ok.values()) / len(ok)
    after = sum(ok[c.id] for c in res.accepted) / max(1, len(res.accepted))
    assert 5 <= len(res.accepted) < len(cands)
    assert after > before + 0.15, (before, after, len(res.accepted))


def test_low_margin_tops_up_the_targets_with_the_least_sure_right_answers(tmp_path: Path) -> None:
    loop = _run_demo(tmp_path, FakeTeacher(), verify="none", low_margin=0.8, iterations=2)
    st = loop.store
    evals = st.read_jsonl("iter_00/eval_seed.jsonl")
    assert all("margin" in r and "runner_up" in r for r in evals)  # scored answers carry their margin
    want = -(-8 * len(evals) // 10)
    wrong = [r for r in evals if not r["correct"]]
    assert len(wrong) < want  # otherwise this test tests nothing
    assert st.summary("iter_00/augment").wrong == want
    right = sorted((r for r in evals if r["correct"]), key=lambda r: (r["margin"], r["id"]))
    expected = {r["id"] for r in wrong} | {r["id"] for r in right[: want - len(wrong)]}
    asked = {r["meta"]["seed_id"] for r in st.read_jsonl("iter_00/candidates.jsonl")}
    asked |= {r["seed_id"] for r in st.read_jsonl("iter_00/rejected_parse.jsonl")}
    assert asked <= expected and len(asked) >= len(expected) // 2


def test_report_says_which_model_was_kept_and_why() -> None:
    from localaug.report import verdict

    rows = [IterationRow(iteration=i, train_size=10, seed_accuracy=1.0, wrong=0, test_accuracy=a)
            for i, a in enumerate((0.6, 0.7))]
    plain = verdict(rows, FinalModel(kept_iteration=0, added=0, train_size=10, test_accuracy=0.65,
                                     holdout_accuracy=[0.5, 0.5]))
    assert "NOT used" in plain and "plain fine-tuning on all seed examples" in plain and "65.0%" in plain
    kept = verdict(rows, FinalModel(kept_iteration=1, added=7, train_size=17, test_accuracy=0.71,
                                    holdout_accuracy=[0.5, 0.6]))
    assert "iteration 1 beat plain fine-tuning" in kept and "7 teacher examples were kept" in kept
    # Without held-out seeds (the paper's recipe) the old comparison with iteration 0 stands.
    assert "Plain fine-tuning (iteration 0): 60.0%" in verdict(rows)


def test_out_of_fold_students_never_see_the_examples_they_judge(tmp_path: Path) -> None:
    loop = _run_demo(tmp_path, FakeTeacher(), find_errors="oof", folds=3, verify="none", seed_size=24)
    st = loop.store
    seed_ids = {r["id"] for r in st.read_jsonl("seed.jsonl")} - {r["id"] for r in st.read_jsonl("holdout.jsonl")}
    assert len(st.manifest.iterations) == 3, st.manifest.stopped_early
    for i in (0, 1):  # iteration 1 trains on teacher examples too: those made from a fold stay out of it
        oof = st.read_jsonl(f"iter_{i:02d}/eval_oof.jsonl")
        assert {r["id"] for r in oof} == seed_ids  # every loop seed example judged once
        for f in range(3):
            trained = st.read_jsonl(f"iter_{i:02d}/fold{f}/train.jsonl")
            judged = {r["id"] for r in oof if r["fold"] == f}
            assert judged and not {r["id"] for r in trained} & judged
            assert not {r["meta"].get("seed_id") for r in trained} & judged
            if i == 1:
                assert any(r["meta"].get("origin") == "teacher" for r in trained)
        # The teacher was asked about exactly the seed examples the out-of-fold students got wrong.
        asked = {r["meta"]["seed_id"] for r in st.read_jsonl(f"iter_{i:02d}/candidates.jsonl")}
        asked |= {r["seed_id"] for r in st.read_jsonl(f"iter_{i:02d}/rejected_parse.jsonl")}
        assert asked == {r["id"] for r in oof if not r["correct"]}
        row = st.manifest.iterations[f"{i:02d}"]
        assert row.wrong == sum(not r["correct"] for r in oof) and row.oof_accuracy is not None and row.oof_accuracy < 1


def test_consistency_filter_keeps_what_the_student_that_never_saw_the_source_agrees_with(tmp_path: Path) -> None:
    loop = _run_demo(tmp_path, FakeTeacher(), find_errors="oof", folds=3, filter="students", verify="none",
                     seed_size=24, per_wrong=2, seed=4)
    st = loop.store
    verified = st.read_jsonl("iter_00/verified.jsonl")
    consistent = st.read_jsonl("iter_00/consistent.jsonl")
    refused = st.read_jsonl("iter_00/rejected_consistency.jsonl")
    assert len(consistent) + len(refused) == len(verified) and consistent and refused
    held = {r["id"] for r in st.read_jsonl("holdout.jsonl")}
    folds = loop.hooks.fold_of([e for e in st.read_examples("seed.jsonl") if e.id not in held])
    for r in consistent:  # judged by the student of its source's fold, which says the intended label
        judged = {x["id"]: x for x in st.read_jsonl(f"iter_00/fold{folds[r['meta']['seed_id']]}/eval_candidates.jsonl")}
        assert judged[r["id"]]["correct"] and judged[r["id"]]["prediction"] == r["label"]
    assert all(r["reason"].startswith("students: the out-of-fold student answered") for r in refused)
    assert {r["id"] for r in refused} <= {r.get("id") for r in st.read_jsonl("iter_00/rejected.jsonl")}
    with pytest.raises(UserError, match="needs find_errors: oof"):
        resolve(build_config(filter="students", find_errors="student"), TaskDefaults())


def test_preflight_puts_the_teacher_beside_the_student_and_warns_when_it_is_no_better(tmp_path: Path) -> None:
    from localaug.report import write_report

    # A teacher that labels every seed example "billing": right for one intent in six.
    loop = _run_demo(tmp_path, ScriptedTeacher(lambda *_: " billing"), find_errors="oof", holdout=0.0,
                     seed_size=24, iterations=2, preflight=64)
    st = loop.store
    pre = st.manifest.preflight
    assert pre is not None
    rows = st.read_jsonl("preflight/teacher.jsonl")
    assert pre.total == len(rows) == 24 and pre.correct == sum(r["correct"] for r in rows)
    assert {r["prediction"] for r in rows} == {"billing"} and pre.teacher_accuracy < 0.3
    assert pre.student_oof_accuracy == st.manifest.iterations["00"].oof_accuracy
    assert pre.warning and "out of fold" in pre.warning
    report = write_report(st).read_text()
    assert "## Teacher preflight" in report and "**Warning:**" in report
    # A teacher that answers right says nothing: the FakeTeacher labels by nearest neighbour, like the student.
    good = _run_demo(tmp_path / "g", FakeTeacher(), find_errors="oof", holdout=0.0, seed_size=24, iterations=2)
    gp = good.store.manifest.preflight
    assert gp is not None and gp.student_oof_accuracy is not None
    assert (gp.warning is None) == (gp.teacher_accuracy > gp.student_oof_accuracy)


def test_max_targets_caps_what_the_teacher_is_asked_about(tmp_path: Path) -> None:
    capped = _run_demo(tmp_path / "c", FakeTeacher(), verify="none", iterations=2, max_targets=2)
    free = _run_demo(tmp_path / "f", FakeTeacher(), verify="none", iterations=2)
    wrong = {r["id"] for r in free.store.read_jsonl("iter_00/eval_seed.jsonl") if not r["correct"]}
    assert len(wrong) > 2 and free.store.summary("iter_00/augment").wrong == len(wrong)
    assert capped.store.summary("iter_00/augment").wrong == 2
    asked = {r["meta"]["seed_id"] for r in capped.store.read_jsonl("iter_00/candidates.jsonl")}
    asked |= {r["seed_id"] for r in capped.store.read_jsonl("iter_00/rejected_parse.jsonl")}
    assert len(asked) == 2 and asked <= wrong
