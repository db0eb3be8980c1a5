"""The seed set's style applied to the teacher's text (match_style), and a verifier that may refuse a
candidate as no example of the task (refuse_non_examples)."""

from __future__ import annotations

import json
from pathlib import Path

from localaug.config import RunConfig, resolve
from localaug.loop import Loop
from localaug.protocols import Completion, GenerationRequest
from localaug.store import RunStore
from localaug.style import TextStyle
from localaug.task import Example, load_task
from localaug.task.card import TaskDefaults
from localaug.teacher.cache import CachedTeacher, GenerationCache
from localaug.verify import NOT_AN_EXAMPLE, verify_with_teacher
from tests.fakes import FakeStudent, FakeTeacher, ScriptedTeacher

SST2_LIKE = ["contains no wit , only labored gags", "that 's far too tragic to merit such superficial treatment",
             "it does n't work .", "a gorgeous , witty , seductive movie .", "the acting , costumes , music are great",
             "it 's a charming and often affecting journey"]
SNIPS_LIKE = ["play the song little robin redbreast", "add step to me to the 50 clásicos playlist",
              "will it be sunny in paris tomorrow", "book a table for two at a pub"]
TREC_LIKE = ["How did serfdom develop in and then leave Russia ?", "What films featured the character Popeye Doyle ?",
             "Who is the president of France ?", "What 's the tallest mountain ?", "Why is the sky blue ?"]


def test_the_style_is_what_the_seeds_do_with_near_unanimity() -> None:
    sst2 = TextStyle.learn(SST2_LIKE)
    assert (sst2.lowercase, sst2.spaced_punctuation, sst2.quoted) == (True, True, False)
    assert sst2.apply('"The film isn\'t bad, it\'s AWFUL."') == "the film is n't bad , it 's awful ."
    snips = TextStyle.learn(SNIPS_LIKE)
    assert (snips.lowercase, snips.spaced_punctuation, snips.final_punctuation) == (True, False, False)
    assert snips.apply("Play the song Yesterday, by The Beatles.") == "play the song yesterday, by the beatles"
    trec = TextStyle.learn(TREC_LIKE)  # capitalised questions: the case is left alone, the "?" is spaced
    assert (trec.lowercase, trec.spaced_punctuation, trec.final_punctuation) == (False, True, True)
    assert trec.apply("What is the capital of Peru? ") == "What is the capital of Peru ?"
    # Numbers keep their decimal point; a seed set that mixes styles changes nothing in that respect.
    assert sst2.apply("rated 3.5 stars") == "rated 3.5 stars"
    mixed = TextStyle.learn(["Play it now", "play it later", "Stop the music", "stop it"])
    assert not mixed.lowercase and mixed.apply("Play Yesterday") == "Play Yesterday"
    assert str(TextStyle()) == "as written" and str(sst2).startswith("lower-cased, tokenised punctuation")


def test_tasks_can_turn_both_settings_on_in_their_card() -> None:
    s = resolve(RunConfig(), TaskDefaults(match_style=True, refuse_non_examples=True))
    assert s.match_style and s.refuse_non_examples
    d = resolve(RunConfig(), TaskDefaults())
    assert not d.match_style and not d.refuse_non_examples  # off unless a card or the user asks
    assert not resolve(RunConfig(match_style=False), TaskDefaults(match_style=True)).match_style


def test_the_verifier_may_refuse_a_candidate_that_is_no_example(data_dir: Path) -> None:
    task = load_task("sst2", data_dir)
    pool = task.load_split("train")[:200]
    cands = [Example("c1", {"text": "a warm , funny film", "label": "positive"}, {"seed_id": "x"}),
             Example("c2", {"text": "i 'm sorry , but as an ai i can not write reviews", "label": "negative"},
                     {"seed_id": "y"})]

    def verifier(prompt: str, choices: tuple[str, ...]) -> str:  # refuses a refusal when it may; else a label
        last = prompt.split("\n\n")[-1]
        if "sorry" in last and NOT_AN_EXAMPLE in choices:
            return NOT_AN_EXAMPLE
        return " negative" if "ai" in last.split() else " positive"

    plain = ScriptedTeacher(verifier)
    res = verify_with_teacher(task, plain, cands, pool)
    assert [c.id for c in res.accepted] == ["c1", "c2"]  # constrained to two labels, a refusal gets one
    assert all(NOT_AN_EXAMPLE not in (r.choices or ()) for r in plain.requests)

    refusing = ScriptedTeacher(verifier)
    res = verify_with_teacher(task, refusing, cands, pool, refuse=True)
    assert [c.id for c in res.accepted] == ["c1"]
    assert res.rejected[0]["reason"] == "verify: teacher answered 'not an example', not 'negative'"
    req = refusing.requests[1]
    assert req.choices == (" negative", " positive", NOT_AN_EXAMPLE)
    # The teacher is shown two made-up non-examples, in the seeds' (lower-cased) style, answered that way.
    blocks = req.prompt.split("\n\n")
    fakes = [b for b in blocks if b.endswith("Sentiment:" + NOT_AN_EXAMPLE)]
    texts = [b.split("\n")[0].removeprefix("Review: ") for b in fakes]
    assert len(fakes) == 2 and all(t == t.lower() and t.endswith(" .") for t in texts)
    assert blocks[-1] == "Review: i 'm sorry , but as an ai i can not write reviews\nSentiment:"
    assert refusing.requests[0].prompt.rsplit("\n\n", 1)[0] == req.prompt.rsplit("\n\n", 1)[0]  # one prefix


class ShoutingTeacher(FakeTeacher):
    """The fake teacher, writing its new examples capitalised and with a full stop, as chat models do."""

    def _one(self, req: GenerationRequest, i: int) -> Completion:
        c = super()._one(req, i)
        if (req.prompt or "").rstrip().endswith(("Topic:", "Answer type:")):  # a verification: a label
            return c
        return Completion(text=c.text.capitalize() + "." if c.text else c.text, completion_tokens=c.completion_tokens)


def test_a_run_with_match_style_trains_on_the_text_in_the_seeds_style(tmp_path: Path) -> None:
    task = load_task("demo")
    cfg = resolve(RunConfig(task="demo", recipe="paper", seed_size=18, iterations=2, seed=2, match_style=True),
                  task.defaults)
    store = RunStore.open_for_run(tmp_path / "run", cfg)
    teacher = CachedTeacher(ShoutingTeacher(), GenerationCache(tmp_path / "cache.sqlite"))
    Loop(task, cfg, store, FakeStudent(), lambda: teacher).run()
    store.unlock()
    added = [json.loads(x) for x in (store.root / "iter_00/augment.jsonl").read_text().splitlines()]
    assert added
    seeds = [json.loads(x)["text"] for x in (store.root / "seed.jsonl").read_text().splitlines()]
    style = TextStyle.learn(seeds)
    assert style.lowercase and not style.final_punctuation  # this demo seed set's style
    for a in added:  # lower-cased, no final full stop, as the seeds; the teacher's text kept beside
        assert a["text"] == style.apply(a["meta"]["as_written"]) == a["text"].lower()
        assert a["meta"]["as_written"][0].isupper() and a["meta"]["as_written"].endswith(".")
    assert store.manifest.stages["iter_00/augment"].style.startswith("lower-cased")


def test_the_study_records_a_run_of_the_current_store(tmp_path: Path) -> None:
    """bench/study.py's raw line reads the run directory the store writes (a refactor of the manifest must keep
    the study's lines whole): accuracies per student, teacher counts, final steps, and the commit that ran."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import study  # noqa: PLC0415  (bench/ is a folder of scripts)

    task = load_task("demo")
    cfg = resolve(RunConfig(task="demo", seed_size=18, iterations=3, seed=2, match_style=True), task.defaults)
    store = RunStore.open_for_run(tmp_path / "run", cfg)
    teacher = CachedTeacher(ShoutingTeacher(), GenerationCache(tmp_path / "cache.sqlite"))
    Loop(task, cfg, store, FakeStudent(), lambda: teacher).run()
    store.unlock()
    line = study.record(cfg, tmp_path / "run", "localaug", "dev", "v3", 1.0, "start")
    rows = store.manifest.rows()
    assert [x["test_accuracy"] for x in line["iterations"]] == [r.test_accuracy for r in rows]
    assert line["final_test_accuracy"] == rows[-1].test_accuracy and line["kept_iteration"] == len(rows) - 1
    assert line["teacher_counts"]["accepted"] == line["added"] == sum(r.new_examples for r in rows) > 0
    assert line["teacher_counts"]["targets"] > 0 and line["final_steps"] > 0
    assert line["commit"] == study.COMMIT and line["started"] == "start" and line["settings"]["match_style"]
