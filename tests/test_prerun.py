"""Everything a run can check is checked before its directory exists: one line, exit 2, no run folder.

Each case once made a `runs/...` folder (seed.jsonl, manifest, lock) before failing, or failed with a
traceback, or passed unnoticed. The fakes are the installed plug-ins `fake` (tests/plugins) where the real
models are not the point; where a check reads a real tokenizer, the toy one of test_student.py is used.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localaug.checks import check_data
from localaug.cli import main
from localaug.task import load_task

FAKES = ["--student", "fake", "--teacher", "fake"]

CARD = """
name: mine
kind: classification
data:
  dir: {dir}
  splits: {{train: train.{ext}, test: test.{ext}}}
{extra}
labels: {{yes: yes, no: no}}
student: {{prompt: "Text: {prompt}\\nLabel:", answer: " {{label_word}}"}}
teacher:
  instruction: Write a new text with the same label.
  original: "Label: {{label_word}}\\nText: {{text}}"
  new: "New text: {new}"
  example: {{original: {{text: a, label: yes}}, new: {{text: b, label: yes}}}}
"""


def _task(tmp_path: Path, rows: list[dict] | None = None, *, prompt: str = "{text}", new: str = "{text}",
          extra: str = "", ext: str = "jsonl") -> Path:
    d = tmp_path / "mine"
    d.mkdir(exist_ok=True)
    rows = rows or [{"text": f"row number {i}", "label": "yes" if i % 2 else "no"} for i in range(30)]
    if ext == "jsonl":
        (d / f"train.{ext}").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / f"test.{ext}").write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    card = tmp_path / "mine.yaml"
    card.write_text(CARD.format(dir=d, ext=ext, prompt=prompt, new=new, extra=extra))
    return card


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})


def _refused(res: Result, *needles: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.output[-2000:])
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in err, (n, err)


def _refused_before_writing(tmp_path: Path, args: list[str], *needles: str) -> None:
    out = tmp_path / "run"
    _refused(_invoke("run", *args, "--out", str(out)), *needles)
    assert not out.exists()


# ---------------------------------------------------------------------- models


def test_an_unknown_teacher_card(tmp_path: Path) -> None:
    _refused_before_writing(tmp_path, ["--student", "fake", "--teacher", "no-such-card"],
                            "unknown teacher 'no-such-card'", "built-in cards")


def test_a_teacher_card_naming_a_student_model(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    card = tmp_path / "t.yaml"
    card.write_text(f"source: {{hf_path: {tmp_path / 'weights'}}}\n")
    _refused_before_writing(tmp_path, ["--student", "fake", "--teacher", str(card)],
                            "t.yaml", "field 'source'", "student model", "GGUF")


def test_a_student_folder_holding_only_a_pickle(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    card = tmp_path / "s.yaml"
    card.write_text(f"source: {{hf_path: {weights}}}\n")
    _refused_before_writing(tmp_path, ["--student", str(card), "--teacher", "fake"],
                            "s.yaml", "source.hf_path", "pickle", "pytorch_model.bin")


def test_a_teacher_setting_the_card_does_not_take(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("teacher_settings: {n_ctxx: 4096}\n")
    _refused_before_writing(tmp_path, ["--config", str(cfg), "--student", "fake"],
                            "field 'teacher_settings.n_ctxx'", "unknown key")


def test_a_server_that_answers_but_is_not_an_openai_server(tmp_path: Path) -> None:
    # Python's file server on loopback: GET /v1/models is a 404, POST is a 501.
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # its log would land in the command's captured stderr
            pass

    class QuietServer(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:  # a closed connection: the same
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    with QuietServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/v1"
            _refused_before_writing(tmp_path, ["--student", "fake", "--teacher-url", url, "--teacher-model", "x"],
                                    url, "HTTP 501")
        finally:
            server.shutdown()


# ---------------------------------------------------------------------- templates


@pytest.mark.parametrize("where", ["prompt", "new"])
def test_a_template_naming_a_missing_field(tmp_path: Path, where: str) -> None:
    card = _task(tmp_path, **{where: "{foo}"})
    key = "student.prompt" if where == "prompt" else "teacher.new"
    needles = ("mine.yaml:", f"field '{key}'", "{foo}", "{text}")
    _refused(_invoke("data", "check", str(card), "--student", "fake"), *needles)
    _refused_before_writing(tmp_path, ["--task", str(card), *FAKES, "--dry-run"], *needles)
    _refused_before_writing(tmp_path, ["--task", str(card), *FAKES], *needles)


def test_a_template_that_is_not_one(tmp_path: Path) -> None:
    card = _task(tmp_path, prompt="{text} {}")
    _refused(_invoke("data", "check", str(card), "--student", "fake"), "student.prompt", "not a valid template")


# ---------------------------------------------------------------------- data


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    card = _task(tmp_path)
    for split in ("train", "test"):
        p = tmp_path / "mine" / f"{split}.jsonl"
        p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    res = _invoke("data", "check", str(card), "--student", "fake")
    assert res.exit_code == 0, res.output
    csv_card = tmp_path / "csv.yaml"
    csv_card.write_text(card.read_text().replace("jsonl", "csv"))
    lines = ["text,label"] + [f"row number {i},{'yes' if i % 2 else 'no'}" for i in range(12)]
    for split in ("train", "test"):
        (tmp_path / "mine" / f"{split}.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    res = _invoke("data", "check", str(csv_card), "--student", "fake")
    assert res.exit_code == 0, res.output
    assert "train: 12 rows" in res.output


def test_invalid_utf8_names_its_line(tmp_path: Path) -> None:
    card = _task(tmp_path)
    p = tmp_path / "mine" / "train.jsonl"
    lines = p.read_bytes().split(b"\n")
    lines[6] = b'{"text": "caf\xe9 au lait", "label": "yes"}'  # Latin-1, not UTF-8
    p.write_bytes(b"\n".join(lines))
    _refused(_invoke("data", "check", str(card), "--student", "fake"), "train.jsonl:7", "not UTF-8", "0xe9")


def test_a_huge_row_is_refused_with_its_line_without_being_tokenised(tmp_path: Path) -> None:
    # 2 MB in one row: the default student's check refuses it by its length in characters alone.
    rows = [{"text": f"row number {i}", "label": "yes" if i % 2 else "no"} for i in range(30)]
    rows[4]["text"] = "word " * 400_000
    card = _task(tmp_path, rows)
    needles = ("train.jsonl:5", "longer than the student's context", "max_length 256", "data.too_long")
    _refused(_invoke("data", "check", str(card)), *needles)
    _refused_before_writing(tmp_path, ["--task", str(card), "--seed-size", "30", "--teacher", "fake"], *needles)


def test_a_long_row_is_refused_or_cut_as_the_card_says(tmp_path: Path) -> None:
    rows = [{"text": f"row number {i}", "label": "yes" if i % 2 else "no"} for i in range(30)]
    rows[8]["text"] = "many words " * 150  # 300 words: over the fake student's 256 "tokens"
    card = _task(tmp_path, rows)
    needles = ("train.jsonl:9", "30", "longer than the student's context (fake: max_length 256)")
    _refused(_invoke("data", "check", str(card), "--student", "fake"), *needles[:1])
    _refused_before_writing(tmp_path, ["--task", str(card), "--seed-size", "30", *FAKES], *needles[:1])
    cut = _task(tmp_path, rows, extra="  too_long: truncate")
    res = _invoke("run", "--task", str(cut), "--seed-size", "30", *FAKES, "--dry-run")
    assert res.exit_code == 0, res.output
    # One warning line per file (row 9 is in both the train and the test file), nothing else on stderr.
    assert "train.jsonl: 1 row is longer than the student's context" in res.stderr
    assert "test.jsonl: 1 row is longer than the student's context" in res.stderr
    assert [ln.startswith("localaug: warning:") for ln in res.stderr.splitlines()] == [True, True]


def test_a_real_tokenizer_measures_a_row(tmp_path: Path) -> None:
    # The length check with a real (toy) tokenizer: a card student, max_length 64.
    from tests.test_student import _tiny_tokenizer

    weights = tmp_path / "weights"
    _tiny_tokenizer(weights)
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"")
    student = tmp_path / "s.yaml"
    student.write_text(f"source: {{hf_path: {weights}}}\nstudent: {{train: {{max_length: 64}}}}\n")
    rows = [{"text": f"row number {i}", "label": "yes" if i % 2 else "no"} for i in range(30)]
    rows[2]["text"] = "questions about the numbers and the location " * 4  # ~180 bytes: the tokenizer decides
    card = _task(tmp_path, rows)
    with pytest.raises(Exception, match=r"train.jsonl:3: this row is \d+ tokens"):
        check_data(load_task(card), str(student))
    rows[2]["text"] = "questions about the location"
    _, notes = check_data(load_task(_task(tmp_path, rows)), str(student))
    assert notes == []


def test_exact_duplicates_are_reported_and_dropped_when_the_card_asks(tmp_path: Path) -> None:
    rows = [{"text": f"row number {i}", "label": "yes" if i % 2 else "no"} for i in range(30)]
    rows[20] = dict(rows[3])
    rows[25] = dict(rows[3])
    card = _task(tmp_path, rows)
    res = _invoke("data", "check", str(card), "--student", "fake")
    assert res.exit_code == 0, res.output
    assert "train.jsonl: 2 exact duplicate rows (the first: line 21 repeats line 4), kept" in res.stderr
    assert len(load_task(card).load_split("train")) == 30
    drop = _task(tmp_path, rows, extra="  duplicates: drop")
    assert len(load_task(drop).load_split("train")) == 28
    res = _invoke("data", "check", str(drop), "--student", "fake")
    assert "train: 28 rows" in res.output and "dropped (data.duplicates: drop)" in res.stderr
