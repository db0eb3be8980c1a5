"""Augmentation with the REAL Gemma 3 270M teacher (llama.cpp in process): parse, validate, lineage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localaug.augment import Target, augment
from localaug.task import load_task
from localaug.task.maths import final_answer, wrong_calculations
from localaug.teacher.cache import CachedTeacher, GenerationCache

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def teacher(gemma_teacher):  # noqa: ANN001, ANN201 - the session's model (conftest.py)
    return gemma_teacher


def test_trec_wrong_example_yields_a_valid_example_deterministically(teacher, tmp_path: Path,  # noqa: ANN001
                                                                     data_dir: Path) -> None:
    task = load_task("trec")
    rows = task.load_split("train")[:4]
    wrong = [Target(e, "LOC" if e.data["label"] != "LOC" else "NUM") for e in rows]
    first = augment(task, teacher, wrong, iteration=0, run_seed=11)
    assert first.accepted, [r["reason"] for r in first.rejected]
    for ex in first.accepted:
        seed_id = ex.meta["seed_id"]
        seed = next(r for r in rows if r.id == seed_id)
        assert ex.data["label"] == seed.data["label"]  # the new example keeps the wrong seed's label
        assert ex.data["text"].strip() and ex.data["text"] != seed.data["text"]
        assert ex.meta["prompt_hash"] and ex.meta["iteration"] == 0 and ex.meta["teacher"] == teacher.identity
    # Seeded sampling: the same call gives the same examples.
    second = augment(task, teacher, wrong, iteration=0, run_seed=11)
    assert [e.to_json() for e in second.accepted] == [e.to_json() for e in first.accepted]
    # And the cache makes a rerun free: zero model calls the second time.
    cached = CachedTeacher(teacher, GenerationCache(tmp_path / "c.sqlite"))
    a = augment(task, cached, wrong, iteration=0, run_seed=11)
    calls = cached.model_calls
    b = augment(task, cached, wrong, iteration=0, run_seed=11)
    assert calls > 0 and cached.model_calls == calls and b.cached == b.completions
    assert [e.to_json() for e in a.accepted] == [e.to_json() for e in b.accepted]


def test_gsm8k_generation_goes_through_the_arithmetic_check(teacher, data_dir: Path) -> None:  # noqa: ANN001
    task = load_task("gsm8k")
    rows = task.load_split("train")[:2]  # two worked solutions of up to the card's max_tokens: the slow part
    wrong = [Target(e, str(int(float(final_answer(e.data["answer"]))) + 1)) for e in rows]
    res = augment(task, teacher, wrong, iteration=0, run_seed=5, max_retries=0)
    assert res.completions == 2
    reasons = [r["reason"] for r in res.rejected]
    assert all(r.split(":")[0] in {"parse", "arithmetic", "copy"} for r in reasons), reasons
    for ex in res.accepted:  # whatever survives has a final number and correct calculator annotations
        assert final_answer(ex.data["answer"]) is not None
        assert wrong_calculations(ex.data["answer"]) == []
    print(f"\nGSM8K with the 270M teacher: {len(res.accepted)}/{res.completions} accepted; "
          f"rejections: {reasons}")


def test_generate_command(tmp_path: Path, data_dir: Path) -> None:
    task = load_task("demo")
    rows = task.load_split("train")[:3]
    inp = tmp_path / "wrong.jsonl"
    inp.write_text("".join(json.dumps({**e.data, "prediction": "billing"}) + "\n" for e in rows))
    out = tmp_path / "new.jsonl"
    res = subprocess.run([sys.executable, "-m", "localaug.cli", "generate", "--task", "demo", "--teacher",
                          "gemma3-270m", "--input", str(inp),
                          "--out", str(out), "--cache", str(tmp_path / "c.sqlite")], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "parsed (parse failure rate" in res.stdout and "distinct texts" in res.stdout
    accepted = [json.loads(x) for x in out.read_text().splitlines()]
    rejected = [json.loads(x) for x in (tmp_path / "new.rejected.jsonl").read_text().splitlines()]
    assert len(accepted) + len(rejected) >= 3
    assert all(a["label"] in task.labels and a["meta"]["origin"] == "teacher" for a in accepted)
    # A missing input file is a one-line error.
    bad = subprocess.run([sys.executable, "-m", "localaug.cli", "generate", "--task", "demo", "--input",
                          str(tmp_path / "nope.jsonl"), "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "nope.jsonl" in bad.stderr and "Traceback" not in bad.stderr


def test_generate_command_with_a_pool_uses_the_list_prompt_and_the_verifier(tmp_path: Path) -> None:
    task = load_task("demo")
    pool = task.load_split("train")[:40]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(e.data) + "\n" for e in pool))
    inp = tmp_path / "wrong.jsonl"
    inp.write_text("".join(json.dumps({**e.data, "prediction": "billing"}) + "\n" for e in pool[:4]))
    out = tmp_path / "new.jsonl"
    res = subprocess.run([sys.executable, "-m", "localaug.cli", "generate", "--task", "demo", "--teacher",
                          "gemma3-270m", "--input", str(inp),
                          "--out", str(out), "--pool", str(tmp_path / "pool.jsonl"), "--per-wrong", "2",
                          "--cache", str(tmp_path / "c.sqlite")], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    accepted = [json.loads(x) for x in out.read_text().splitlines()]
    rejected = [json.loads(x) for x in (tmp_path / "new.rejected.jsonl").read_text().splitlines()]
    assert len(accepted) + len(rejected) >= 8
    # Every candidate that parsed went through the verifier: kept ones were confirmed, refused ones say why.
    assert all(a["label"] in task.labels for a in accepted)
    assert all(r["reason"].split(":")[0] in {"parse", "copy", "verify", "label", "repeat"} for r in rejected), rejected
