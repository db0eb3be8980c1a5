"""Task cards, parsers and judges on real rows from ../shared/data; teacher-output parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localaug.data import sample_seed
from localaug.protocols import EvalResult
from localaug.task import builtin_task_names, load_task
from localaug.task.maths import final_answer, predicted_number, wrong_calculations
from localaug.task.prompts import prompts_of

EXPECTED_ROWS = {
    "gsm8k": {"train": 7473, "test": 1319},
    "casehold": {"train": 2000, "dev": 164, "test": 1000},
    "snips": {"train": 13084, "dev": 700, "test": 700},
    "trec": {"train": 5452, "test": 500},
    "sst2": {"train": 67349, "test": 872},
    "demo": {"train": 180, "test": 120},
}


def test_all_six_tasks_are_built_in() -> None:
    assert set(builtin_task_names()) == set(EXPECTED_ROWS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_row_counts_match_the_data_readme(name: str, data_dir: Path) -> None:
    task = load_task(name)
    assert {s: len(task.load_split(s)) for s in task.splits()} == EXPECTED_ROWS[name]


@pytest.mark.parametrize("name", ["trec", "snips", "sst2", "demo"])
def test_classification_judge_on_real_rows(name: str, data_dir: Path) -> None:
    task = load_task(name)
    rows = task.load_split("test")[:50]
    for ex in rows:
        item = task.eval_item(ex, "score")
        gold_index = list(task.labels).index(ex.data["label"])
        assert item.choices is not None and len(item.choices) == len(task.labels)
        # The training completion is exactly the gold choice, so scoring and training agree.
        assert task.train_item(ex).completion == item.choices[gold_index]
        assert task.judge(ex, EvalResult(item.choices[gold_index], choice_index=gold_index)) == (
            ex.data["label"], True)
        wrong_index = (gold_index + 1) % len(task.labels)
        assert task.judge(ex, EvalResult("", choice_index=wrong_index))[1] is False
        # Generate-and-parse: the label word (any case, trailing text) parses to the label.
        word = task.labels[ex.data["label"]]
        assert task.judge(ex, EvalResult(f" {word.upper()}\nQuestion: next"))[1] is True
        assert task.judge(ex, EvalResult(" no idea"))[0] is None


def test_casehold_judge_on_real_rows(data_dir: Path) -> None:
    task = load_task("casehold")
    for ex in task.load_split("dev")[:30]:
        item = task.eval_item(ex, "score")
        assert item.choices is not None and len(item.choices) == 5
        assert task.train_item(ex).completion == item.choices[ex.data["label"]]
        assert task.judge(ex, EvalResult("", choice_index=ex.data["label"]))[1]
        assert not task.judge(ex, EvalResult("", choice_index=(ex.data["label"] + 1) % 5))[1]
        assert task.judge(ex, EvalResult(f"Answer: {ex.data['label']}"))[1]


def test_casehold_choices_are_compared_per_byte_not_by_sum(data_dir: Path) -> None:
    # A summed log-likelihood favours the shortest ending (measured: the 270M student picked the shortest in
    # 35 of 50 CaseHOLD test rows, where the gold one is shortest in 3): the judge compares per byte.
    task = load_task("casehold")
    checked = 0
    for ex in task.load_split("dev")[:40]:
        choices = task.eval_item(ex, "score").choices or ()
        gold = ex.data["label"]
        shortest = min(range(5), key=lambda k: len(choices[k].encode()))
        if len(choices[gold].encode()) < 2 * len(choices[shortest].encode()):
            continue  # only rows where the sum and the per-byte rule disagree
        per_byte = [-0.5 if k == gold else -1.0 for k in range(5)]
        sums = [p * len(c.encode()) for p, c in zip(per_byte, choices, strict=True)]
        by_sum = max(range(5), key=lambda k: sums[k])
        assert by_sum != gold  # the student's own argmax (a sum) is wrong here
        pred, ok = task.judge(ex, EvalResult(choices[by_sum], choice_index=by_sum, scores=sums))
        assert ok and pred == str(gold)
        row = task.judge_all([ex], [EvalResult(choices[by_sum], choice_index=by_sum, scores=sums)]).rows[0]
        assert row["output"] == choices[gold] and row["margin"] == 0.5
        checked += 1
    assert checked >= 3
    # Classification labels keep the plain sum (the study measured them that way).
    trec = load_task("trec")
    ex = trec.load_split("test")[0]
    assert trec.per_byte(ex, EvalResult("", choice_index=0, scores=[-1.0, -2.0])).scores == [-1.0, -2.0]


def test_gsm8k_parser_and_judge_on_real_rows(data_dir: Path) -> None:
    task = load_task("gsm8k")
    rows = task.load_split("test")
    for ex in rows[:200]:
        gold = final_answer(ex.data["answer"])
        assert gold is not None and "," not in gold
        # The gold rationale is judged correct, also with commas and $ in the final number.
        assert task.judge(ex, EvalResult(ex.data["answer"]))[1]
        formatted = f"The answer is ${int(float(gold)):,}." if float(gold).is_integer() else gold
        assert task.judge(ex, EvalResult(formatted))[1]
        assert not task.judge(ex, EvalResult(f"#### {float(gold) + 1}"))[1]
        # Real GSM8K calculator annotations check out (the arithmetic guard accepts real data).
    bad = [ex.id for ex in rows if wrong_calculations(ex.data["answer"])]
    assert len(bad) < 0.02 * len(rows), bad[:5]


def test_number_extraction() -> None:
    assert predicted_number("so 3 + 4 = 7\n#### 1,234") == "1234"
    assert predicted_number("he pays $12.50 in total.") == "12.50"
    assert predicted_number("no number") is None
    assert wrong_calculations("a <<3*4=12>> b <<10/4=2.5>>") == []
    assert wrong_calculations("<<3*4=13>>") == ["<<3*4=13>> should be 12"]
    assert wrong_calculations("<<__import__('os')=1>>")  # not arithmetic: reported, never evaluated


def test_teacher_prompt_shows_gold_and_wrong_answer(data_dir: Path) -> None:
    task = load_task("trec")
    ex = task.load_split("train")[0]
    tp = prompts_of(task).paper(ex, "LOC")
    assert ex.data["text"] in tp.prompt
    assert tp.prompt.endswith("New question:")
    assert "Student's wrong answer type: location" in tp.prompt
    assert task.labels[ex.data["label"]] in tp.prompt.split("\n\n")[-1]
    assert tp.messages[0][0] == "system" and tp.messages[-1][1].startswith("Answer type:")


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_teacher_parse_round_trip(name: str, data_dir: Path) -> None:
    """The card's own worked example, written the way the card asks, parses back to that example."""
    task = load_task(name)
    seed = task.load_split("train")[1]
    new = task.card.teacher.example.new
    from localaug.task.kinds import Where

    data = task.kind.validate(dict(new), task.labels, Where())
    fields = task.kind.fields(data, task.labels)
    text = task.card.teacher.new.format(**fields)
    tp = prompts_of(task).paper(seed, None)
    completion = text[len(tp.prefix):]
    parsed, reason = prompts_of(task).parse(completion, seed, tp.prefix)
    # The card's own example parses, but a verbatim copy of it is never a new example.
    assert parsed is None and reason == "copy: the card's worked example"
    tweaked = completion.replace(fields[next(iter(task.kind.fields_in_file))][:12], "Zanzibar quokka ", 1)
    parsed, reason = prompts_of(task).parse(tweaked, seed, tp.prefix)
    assert reason == "" and parsed is not None, reason
    if task.kind.has_classes:
        assert parsed["label"] == seed.data["label"]  # the label comes from the seed, not the teacher


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400))
@pytest.mark.parametrize("name", ["trec", "gsm8k", "casehold"])
def test_teacher_parser_never_crashes(name: str, text: str) -> None:
    task = _TASKS.setdefault(name, load_task(name))
    from localaug.task import Example

    seed = _SEEDS[name]
    parsed, reason = prompts_of(task).parse(text, Example("s", seed), "New: ")
    assert (parsed is None) == bool(reason)


_TASKS: dict = {}
_SEEDS = {
    "trec": {"text": "What is the capital of Peru ?", "label": "LOC"},
    "gsm8k": {"question": "Tom has 3 apples and buys 2. How many?", "answer": "3+2=<<3+2=5>>5\n#### 5"},
    "casehold": {"context": "See X v. Y (<HOLDING>).", "endings": ["a", "b", "c", "d", "e"], "label": 1},
}


@settings(max_examples=200, deadline=None)
@given(q=st.text(min_size=1, max_size=80), a=st.integers(0, 10**6), b=st.integers(1, 1000),
       lie=st.booleans())
def test_math_parser_checks_arithmetic(q: str, a: int, b: int, lie: bool) -> None:
    task = _TASKS.setdefault("gsm8k", load_task("gsm8k"))
    from localaug.task import Example

    result = a * b + (1 if lie else 0)
    text = f" {q.replace(chr(10), ' ')}?\nNew solution: {a}*{b}=<<{a}*{b}={result}>>{result}\n#### {result}"
    parsed, reason = prompts_of(task).parse(text, Example("s", _SEEDS["gsm8k"]), "New problem:")
    if not q.strip() or q.strip() + "?" == _SEEDS["gsm8k"]["question"]:
        return
    if lie:
        assert parsed is None and reason.startswith("arithmetic")
    else:
        assert parsed is not None, reason


def test_stratified_seed_sampling_is_deterministic_and_keeps_rare_labels(data_dir: Path) -> None:
    task = load_task("trec")
    pool = task.load_split("train")
    a = sample_seed(pool, size=54, seed=7, stratify_by=task.label_of)
    b = sample_seed(pool, size=54, seed=7, stratify_by=task.label_of)
    c = sample_seed(pool, size=54, seed=8, stratify_by=task.label_of)
    assert [e.id for e in a] == [e.id for e in b] != [e.id for e in c]
    assert len(a) == 54 and len({e.id for e in a}) == 54
    labels = [e.data["label"] for e in a]
    assert set(labels) == set(task.labels)  # ABBR is 1.6% of TREC, still represented
    assert labels.count("ENTY") in (12, 13)  # proportional: 1250/5452 * 54 = 12.4
    frac = sample_seed(pool, fraction=0.01, seed=7, stratify_by=task.label_of)
    assert len(frac) == 55


def test_math_final_answer_must_come_from_a_checked_calculation() -> None:
    from localaug.task import Example

    task = _TASKS.setdefault("gsm8k", load_task("gsm8k"))
    seed = Example("s", _SEEDS["gsm8k"])

    def parse(solution: str) -> tuple[object, str]:
        return prompts_of(task).parse(f" Ann has 4 bags of 6 pears. How many pears?\nNew solution: {solution}",
                                  seed, "New problem:")

    assert parse("4*6 = <<4*6=24>>24 pears.\n#### 24")[0] is not None
    # Asserted, not computed: no calculation at all, or a final number no calculation produced.
    assert parse("She has 24 pears.\n#### 24") == (None, "arithmetic: the final answer is not the result of "
                                                          "any <<calculation>>")
    assert parse("4*6 = <<4*6=24>>24 pears.\n#### 30")[0] is None


def _parse_gsm8k_list_reply(reply: str) -> tuple[dict | None, str]:
    """A chat teacher's reply to GSM8K's list prompt, read as localaug reads it."""
    from localaug.task import Example

    task = _TASKS.setdefault("gsm8k", load_task("gsm8k"))
    return prompts_of(task).parse(reply, Example("s", _SEEDS["gsm8k"]), "Problem:", template="shot")


def test_a_chat_preamble_before_the_example_is_not_part_of_it() -> None:
    reply = ("Sure! Here's another example:\n\nProblem:\nA farmer divides 120 acres among 3 children. How many "
             "acres does each get?\nSolution: 120/3 = <<120/3=40>>40 acres.\n#### 40")
    parsed, reason = _parse_gsm8k_list_reply(reply)
    assert parsed is not None, reason
    assert parsed["question"] == "A farmer divides 120 acres among 3 children. How many acres does each get?"


def test_a_label_run_on_in_the_same_line_still_parses() -> None:
    # Two of the 1.5B teacher's GSM8K replies were thrown away as "does not follow the format" only because
    # "Solution:" followed the problem on the same line (bench/judged/gsm8k-qwen1.5b-rejected-*).
    reply = ("Problem: John has $100. He buys a book for $25 and a pen for $15. How much is left? Solution: "
             "He spent 25+15 = <<25+15=40>>40.\nHe has 100-40 = <<100-40=60>>60 left.\n#### 60")
    parsed, reason = _parse_gsm8k_list_reply(reply)
    assert parsed is not None, reason
    assert parsed["question"].endswith("How much is left?")
    assert parsed["answer"].startswith("He spent 25+15") and parsed["answer"].endswith("#### 60")
    # Without the label there is nothing to split on: still refused.
    assert _parse_gsm8k_list_reply(reply.replace(" Solution:", ""))[0] is None


def test_the_card_schema_names_every_kind() -> None:
    from typing import get_args

    from localaug.task.card import TaskCard
    from localaug.task.kinds import KINDS

    assert set(get_args(TaskCard.model_fields["kind"].annotation)) == set(KINDS)


def test_a_new_kind_is_a_class_in_the_kinds_module_and_nothing_else(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A made-up kind (short free answers) runs through the task, the teacher prompts and the verifier with
    no change outside kinds.py (the card schema's name list, its one other entry, is bypassed here)."""
    import json

    from localaug.protocols import Completion, TeacherBase
    from localaug.task import Example, Task
    from localaug.task import kinds as kinds_module
    from localaug.task.card import TaskCard
    from localaug.verify import teacher_accuracy, verify_with_teacher

    class ShortAnswer(kinds_module.Kind):
        name = "short_answer"
        fields_in_file = ("question", "answer")
        answer_shape = "one word"
        teacher_check = "teacher (answers it again)"

        def validate(self, data, labels, where):  # noqa: ANN001, ANN201
            return {k: kinds_module._need_str(data, k, where) for k in self.fields_in_file}

        def fields(self, data, labels):  # noqa: ANN001, ANN201
            return dict(data)

        def from_fields(self, parsed, seed, labels):  # noqa: ANN001, ANN201
            if not parsed.get("question") or not parsed.get("answer"):
                return None, "parse: empty"
            return {"question": parsed["question"], "answer": parsed["answer"]}, ""

        def prediction_from_text(self, data, labels, text):  # noqa: ANN001, ANN201
            return text.strip().split()[0].strip(".").lower() if text.strip() else None

        def gold(self, data):  # noqa: ANN001, ANN201
            return data["answer"].lower()

        def dedup_text(self, data):  # noqa: ANN001, ANN201
            return data["question"]

        def solve_messages(self, data):  # noqa: ANN001, ANN201
            return (("system", "Answer in one word."), ("user", data["question"]))

        def read_solution(self, text):  # noqa: ANN001, ANN201
            return self.prediction_from_text({}, {}, text)

    monkeypatch.setitem(kinds_module.KINDS, "short_answer", ShortAnswer())
    rows = [{"question": f"What colour is thing {i}?", "answer": ["red", "blue"][i % 2]} for i in range(8)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = TaskCard.model_validate({
        "name": "colours", "kind": "math", "data": {"dir": str(tmp_path), "splits": {"train": "train.jsonl"}},
        "student": {"prompt": "Q: {question}\nA:", "answer": " {answer}"},
        "teacher": {"instruction": "Write a new question.", "original": "Q: {question}\nWrong: {wrong}",
                    "new": "Q: {question}\nA: {answer}",
                    "example": {"original": {"question": "Sky?", "answer": "blue"}, "new": {"question": "Grass?",
                                                                                           "answer": "green"}}},
    }).model_copy(update={"kind": "short_answer"})
    task = Task(card, tmp_path / "colours.yaml")
    seed = task.load_split("train")
    assert task.stratify() is None and task.eval_mode() == "generate"
    judged = task.judge_all(seed[:2], [EvalResult(" red."), EvalResult(" red")])
    assert [r["correct"] for r in judged.rows] == [True, False]
    tp = prompts_of(task).paper(seed[0], "blue")
    assert "Wrong: blue" in tp.prompt
    parsed, reason = prompts_of(task).parse(" What colour is a lemon?\nA: yellow", seed[0], tp.prefix)
    assert reason == "" and parsed == {"question": "What colour is a lemon?", "answer": "yellow"}

    class Chat(TeacherBase):  # an instruction model that answers "red" to everything
        identity, prefers_completion = "chat", False

        def generate(self, requests, progress=None):  # noqa: ANN001, ANN201
            assert all(r.messages and r.messages[0] == ("system", "Answer in one word.") for r in requests)
            return [[Completion(text="Red")] for _ in requests]

    cands = [Example("c1", {"question": "Apple?", "answer": "red"}, {"seed_id": seed[0].id}),
             Example("c2", {"question": "Sea?", "answer": "blue"}, {"seed_id": seed[1].id})]
    res = verify_with_teacher(task, Chat(), cands, seed)
    assert [c.id for c in res.accepted] == ["c1"] and res.answers == ["red", "red"]
    acc, _ = teacher_accuracy(task, Chat(), seed)
    assert acc == 0.5
