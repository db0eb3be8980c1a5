"""The CLI as a user meets it: listing, data checks and one-line errors (exit 2, no traceback)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from localaug import __version__
from localaug.cli import main


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localaug.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_version() -> None:
    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output


def test_tasks_lists_all_six_with_row_counts(data_dir: Path) -> None:
    res = CliRunner().invoke(main, ["tasks"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for name, counts in {"gsm8k": "train 7,473 / test 1,319", "casehold": "train 2,000 / dev 164 / test 1,000",
                         "snips": "train 13,084 / dev 700 / test 700", "trec": "train 5,452 / test 500",
                         "sst2": "train 67,349 / test 872", "demo": "train 180 / test 120"}.items():
        line = next(ln for ln in res.output.splitlines() if f" {name} " in ln)
        assert counts in line


def test_data_check_ok(data_dir: Path) -> None:
    res = CliRunner().invoke(main, ["data", "check", "trec"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "ENTY 1250" in res.output and "ok: every row" in res.output


def _task_dir(tmp_path: Path, task: str, data_dir: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(data_dir / task, root / task)
    return root


def _rewrite_line(path: Path, line_no: int, new: str) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line_no - 1] = new
    path.write_text("\n".join(lines), encoding="utf-8")


def _assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in err, (n, err)


BAD_ROWS = [
    # (task, split file, line, replacement, expected pieces of the error)
    ("trec", "train.jsonl", 17, '{"text": "broken", "label": ', ["train.jsonl:17", "malformed JSON"]),
    ("trec", "train.jsonl", 5, '{"label": "DESC"}', ["train.jsonl:5", "field 'text'", "missing"]),
    ("trec", "train.jsonl", 9, '{"text": "   ", "label": "DESC"}', ["train.jsonl:9", "field 'text'", "empty"]),
    ("trec", "test.jsonl", 3, '{"text": "What ?", "label": "COLOR"}', ["test.jsonl:3", "field 'label'",
                                                                      "unknown label 'COLOR'"]),
    ("casehold", "dev.jsonl", 4, json.dumps({"context": "c", "endings": ["a", "b"], "label": 0, "id": "x"}),
     ["dev.jsonl:4", "field 'endings'", "5 endings"]),
    ("casehold", "dev.jsonl", 6, json.dumps({"context": "c", "endings": list("abcde"), "label": 7, "id": "y"}),
     ["dev.jsonl:6", "field 'label'"]),
    ("gsm8k", "test.jsonl", 11, json.dumps({"question": "q?", "answer": "it is 4"}),
     ["test.jsonl:11", "field 'answer'", "####"]),
]


@pytest.mark.parametrize("task,fname,line,new,needles", BAD_ROWS)
def test_bad_rows_give_one_line_errors(tmp_path: Path, data_dir: Path, task: str, fname: str, line: int,
                                       new: str, needles: list[str]) -> None:
    root = _task_dir(tmp_path, task, data_dir)
    _rewrite_line(root / task / fname, line, new)
    _assert_one_line_error(_cli("data", "check", task, "--data-dir", str(root)), *needles)


def test_missing_and_empty_files(tmp_path: Path, data_dir: Path) -> None:
    root = _task_dir(tmp_path, "trec", data_dir)
    (root / "trec" / "test.jsonl").unlink()
    _assert_one_line_error(_cli("data", "check", "trec", "--data-dir", str(root)), "test.jsonl", "not found")
    (root / "trec" / "test.jsonl").write_text("")
    _assert_one_line_error(_cli("data", "check", "trec", "--data-dir", str(root)), "test.jsonl", "empty")


def test_single_class_training_data(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    rows = [{"text": f"row {i}", "label": "yes"} for i in range(5)]
    (tmp_path / "mine" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    card = tmp_path / "mine.yaml"
    card.write_text(_USER_CARD.format(dir=tmp_path / "mine", labels="{yes: yes, no: no}"))
    _assert_one_line_error(_cli("data", "check", str(card)), "train.jsonl", "field 'label'", "only one label")
    card.write_text(_USER_CARD.format(dir=tmp_path / "mine", labels="{yes: yes}"))
    _assert_one_line_error(_cli("data", "check", str(card)), "mine.yaml", "field 'labels'", "at least two")


_USER_CARD = """
name: mine
kind: classification
data:
  dir: {dir}
  splits: {{train: train.jsonl}}
labels: {labels}
student: {{prompt: "Text: {{text}}\\nLabel:", answer: " {{label_word}}"}}
teacher:
  instruction: Write a new text with the same label.
  original: "Label: {{label_word}}\\nText: {{text}}"
  new: "New text: {{text}}"
  example: {{original: {{text: a, label: yes}}, new: {{text: b, label: yes}}}}
"""


def test_user_card_with_csv(tmp_path: Path) -> None:
    """A user adds a task by writing a card for their own CSV (the README's example)."""
    d = tmp_path / "tickets"
    d.mkdir()
    (d / "train.csv").write_text("message,category\nmy screen is cracked,yes\nwhat a lovely day,no\n"
                                 "the app crashed,yes\n")
    card = tmp_path / "tickets.yaml"
    card.write_text(_USER_CARD.format(dir=d, labels="{yes: yes, no: no}").replace(
        "splits: {train: train.jsonl}", "splits: {train: train.csv}\n  fields: {text: message, label: category}"))
    res = _cli("data", "check", str(card))
    assert res.returncode == 0, res.stderr
    assert "ok: every row of task 'mine' is valid (train: 3 rows)" in res.stdout
    assert "no 1, yes 2" in res.stdout  # the label counts of the CSV's category column
    (d / "train.csv").write_text("message,category\nok,yes\nbad,maybe\n")
    _assert_one_line_error(_cli("data", "check", str(card)), "train.csv:3", "field 'label'", "maybe")


def test_unknown_task_and_bad_card_key(tmp_path: Path) -> None:
    _assert_one_line_error(_cli("data", "check", "nosuchtask"), "unknown task 'nosuchtask'")
    card = tmp_path / "c.yaml"
    card.write_text(_USER_CARD.format(dir=tmp_path, labels="{a: a, b: b}") + "colour: blue\n")
    _assert_one_line_error(_cli("data", "check", str(card)), "c.yaml", "field 'colour'", "unknown key")
    card.write_text("kind: classification\n  bad: [indent\n")
    _assert_one_line_error(_cli("data", "check", str(card)), "c.yaml", "YAML")


def test_run_bad_input(tmp_path: Path) -> None:
    _assert_one_line_error(_cli("run", "--task", "nosuchtask"), "unknown task")
    bad = tmp_path / "run.yaml"
    bad.write_text("iterations: three\n")
    _assert_one_line_error(_cli("run", "--config", str(bad)), "run.yaml", "field 'iterations'")
    bad.write_text("iteration: 3\n")
    _assert_one_line_error(_cli("run", "--config", str(bad)), "run.yaml", "field 'iteration'", "unknown key")
    _assert_one_line_error(_cli("run", "--config", str(tmp_path / "nope.yaml")), "nope.yaml", "not found")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("someone else's")
    _assert_one_line_error(_cli("run", "--out", str(foreign)), "foreign", "not empty")


def test_dry_run_touches_nothing(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "r"
    res = _cli("run", "--task", "trec", "--seed-size", "54", "--iterations", "3", "--out", str(out), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "54 rows" in res.stdout and "estimated time" in res.stdout
    assert not out.exists()


def test_bad_plans_fail_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    rows = [{"text": f"row number {i}", "label": "yes" if i % 2 else "no"} for i in range(50)]
    (tmp_path / "mine" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "mine" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:10]))
    card = tmp_path / "mine.yaml"
    card.write_text(_USER_CARD.format(dir=tmp_path / "mine", labels="{yes: yes, no: no}").replace(
        "splits: {train: train.jsonl}", "splits: {train: train.jsonl, test: test.jsonl}"))
    out = tmp_path / "run"
    for flag in ([], ["--dry-run"]):
        _assert_one_line_error(_cli("run", "--task", str(card), "--seed-size", "1000", "--out", str(out), *flag),
                               "field 'seed_size'", "1000 rows", "train split has 50 rows")
        _assert_one_line_error(_cli("run", "--task", str(card), "--seed-size", "5", "--holdout", "0.2", "--out",
                                    str(out), *flag), "field 'holdout'", "1 held out")
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _assert_one_line_error(_cli("run", "--task", str(card), "--seed-size", "10", "--out", str(out), "--teacher-url",
                                f"http://127.0.0.1:{port}/v1", "--teacher-model", "x"), "unreachable")
    assert not out.exists()


def test_generate_takes_the_defaults_of_localaug_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No default of its own: without --pool the paper recipe's (1 sample per target, nothing verified), with
    --pool the localaug recipe's (3 samples per target, the teacher verifier)."""
    from localaug.augment import request_seed
    from localaug.config import RECIPES
    from localaug.task import load_task

    rows = load_task("demo").load_split("train")[:40]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(e.data) + "\n" for e in rows))
    (tmp_path / "wrong.jsonl").write_text("".join(json.dumps({**e.data, "id": e.id}) + "\n" for e in rows[:4]))
    for pool, want in (([], 1), (["--pool", str(tmp_path / "pool.jsonl")], RECIPES["localaug"]["per_wrong"])):
        log = tmp_path / f"calls{want}.log"
        monkeypatch.setenv("FAKE_TEACHER_LOG", str(log))
        res = CliRunner().invoke(main, ["generate", "--task", "demo", "--teacher", "fake",
                                        "--input", str(tmp_path / "wrong.jsonl"), "--out", str(tmp_path / "o.jsonl"),
                                        "--cache", str(tmp_path / f"c{want}.sqlite"), *pool])
        assert res.exit_code == 0, res.output
        seeds = [int(x) for x in log.read_text().split()]
        # The first attempt for each target asks `per_wrong` samples, seeded request_seed(...) + 0, 1, ...
        for e in rows[:4]:
            first = request_seed(0, 0, e.id, 0)
            assert sorted(s - first for s in seeds if 0 <= s - first < 10) == list(range(want)), (pool, e.id)
        assert ("confirmed by the verifier" in res.output) == bool(pool)


def test_train_and_eval_commands_take_the_run_defaults(tmp_path: Path) -> None:
    """`localaug train` draws the task card's seed size with the run's seed; `localaug eval` judges with the
    task's default mode and writes its predictions (a plug-in student stands in for the model)."""
    student = ["--student", "fake"]
    res = CliRunner().invoke(main, ["train", "--task", "demo", *student, "--out", str(tmp_path / "ad")])
    assert res.exit_code == 0, res.output
    assert "trained on 24 rows" in res.output  # tasks/demo.yaml: seed_size 24
    trained = json.loads((tmp_path / "ad" / "memory.json").read_text())
    res = CliRunner().invoke(main, ["eval", "--task", "demo", *student, "--adapter", str(tmp_path / "ad"),
                                    "--limit", "20", "--out", str(tmp_path / "pred.jsonl")])
    assert res.exit_code == 0, res.output
    preds = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(trained) == 24 and len(preds) == 20 and "(score)" in res.output
    assert f"{sum(p['correct'] for p in preds)}/20" in res.output
