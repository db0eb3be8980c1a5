"""localaug.dedup: exact, near and non-duplicates on real rows, contamination, persistence, robustness."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from localaug.dedup import DedupConfig, DedupIndex, Verdict
from localaug.dedup.text import jaccard, lcs_length, normalise, rouge_l, shingle_set
from localaug.errors import UserError

NUM = re.compile(r"\d+")


def _read(data_dir: Path, rel: str, field: str, n: int | None = None) -> list[str]:
    out = []
    with open(data_dir / rel, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)[field])
            if n is not None and len(out) >= n:
                break
    return out


@pytest.fixture(scope="module")
def trec(data_dir: Path) -> list[str]:
    return _read(data_dir, "trec/train.jsonl", "text", 1500)


@pytest.fixture(scope="module")
def gsm_train(data_dir: Path) -> list[str]:
    return _read(data_dir, "gsm8k/train.jsonl", "question", 1500)


@pytest.fixture(scope="module")
def gsm_test(data_dir: Path) -> list[str]:
    return _read(data_dir, "gsm8k/test.jsonl", "question")


def _change_numbers(text: str) -> str:
    return NUM.sub(lambda m: str(int(m.group()) + 7), text)


# --------------------------------------------------------------------------- normalisation, similarity


def test_normalise_folds_case_width_punctuation_and_space() -> None:
    assert normalise("  Hello,   WORLD!! ") == "hello world"
    assert normalise("ＡＢＣ－１２") == "abc 12"  # full-width forms (NFKC)
    assert normalise("It's $1,200.50", mask_digits=True) == "it s 0 0 0"
    assert normalise("Straße") == "strasse"  # casefold, not lower
    assert normalise("") == "" and normalise(None) == "" and normalise(12) == "12"


def test_lcs_matches_dynamic_programming() -> None:
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 25))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 25))]
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(len(a)):
            for j in range(len(b)):
                table[i + 1][j + 1] = table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
        assert lcs_length(a, b) == table[-1][-1]
    assert rouge_l("a b c d".split(), "a x c d".split()) == pytest.approx(0.75)
    assert jaccard(shingle_set("hello"), shingle_set("hello world")) == 0.5
    assert jaccard(shingle_set(""), shingle_set("")) == 1.0
    assert jaccard(shingle_set("a b", ngram=3), shingle_set("a b c", ngram=3)) == 0.0


# --------------------------------------------------------------------------- the three outcomes


def test_exact_near_and_non_duplicates_on_real_rows(trec: list[str], gsm_train: list[str]) -> None:
    index = DedupIndex()
    index.add_many((f"trec-{i}", t) for i, t in enumerate(trec[:1000]))
    rng = random.Random(1)
    # >= 10 words, one replaced: Jaccard >= 9/11, where the LSH misses with probability ~1e-4
    # (at the 0.7 threshold itself it is ~1%: a borderline duplicate may slip through, by design)
    long_rows = [i for i, t in enumerate(trec[:1000]) if len(normalise(t).split()) >= 10]
    for i in rng.sample(long_rows, 50):
        original = trec[i]
        # exact after normalisation: case, spacing and punctuation changed
        v = index.check("  " + original.upper().replace(" ?", "?!") + " ")
        assert v.outcome == "duplicate" and v.similarity == 1.0
        assert normalise(trec[int(v.match_id.split("-")[1])]) == normalise(original)
        # near: one word replaced
        words = normalise(original).split()  # a word, not a number (that makes a new problem)
        words[rng.choice([k for k, w in enumerate(words) if not w.isdigit()])] = "zyxwv"
        v = index.check(" ".join(words))
        assert v.outcome == "duplicate", (original, v)
        assert jaccard(shingle_set(normalise(" ".join(words))),
                       shingle_set(normalise(trec[int(v.match_id.split("-")[1])]))) == pytest.approx(v.similarity)
    # non-duplicates: real rows of another data set
    verdicts = index.check_many(gsm_train[:300])
    assert all(v.outcome == "accepted" and v.match_id is None for v in verdicts)


def test_gsm8k_numbers_only_variants(gsm_train: list[str]) -> None:
    rows = [t for t in gsm_train if len(NUM.findall(t)) >= 2][:200]
    variants = [_change_numbers(t) for t in rows]
    # among training data a numbers-only variant is a new problem: accepted
    index = DedupIndex()
    index.add_many((f"g{i}", t) for i, t in enumerate(rows))
    assert [v.outcome for v in index.check_many(variants)] == ["accepted"] * len(rows)
    # ... unless the user asks for digit masking among training data too
    masked = DedupIndex(DedupConfig(mask_digits=True))
    masked.add_many((f"g{i}", t) for i, t in enumerate(rows))
    assert [(v.outcome, v.match_id) for v in masked.check_many(variants)] == [
        ("duplicate", f"g{i}") for i in range(len(rows))]
    # against the TEST set it is contamination
    guard = DedupIndex()
    guard.add_many(((f"t{i}", t) for i, t in enumerate(rows)), role="test")
    assert [(v.outcome, v.match_id) for v in guard.check_many(variants)] == [
        ("contaminated", f"t{i}") for i in range(len(rows))]


def test_contamination_takes_precedence(gsm_test: list[str]) -> None:
    text = gsm_test[0]
    index = DedupIndex()
    index.add("train-copy", text)
    index.add("test-0", text, role="test")
    assert index.check(text.lower()) == Verdict("contaminated", "test-0", 1.0)
    assert index.check_and_add("cand", _change_numbers(text)).outcome == "contaminated"
    assert "cand" not in index.ids


# a few replacement words per ten; case, punctuation, spacing and every number changed freely
_edit = st.tuples(
    st.integers(0, 10_000),
    st.lists(st.from_regex(r"[a-z]{3,8}", fullmatch=True), min_size=0, max_size=3),
    st.booleans(), st.booleans(), st.integers(1, 999),
)


# derandomize: the LSH is probabilistic (a pair at Jaccard 0.7 is missed with probability ~1.5e-4), so
# a fixed example sequence keeps CI from flaking while still covering 150 different edits
@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=_edit)
def test_test_set_near_copy_is_always_contamination(gsm_test: list[str], trec: list[str], edit) -> None:
    k, new_words, upper, strip_punct, delta = edit
    pool = gsm_test + trec[:300]
    original = pool[k % len(pool)]
    words = original.split()
    rng = random.Random(k)
    for w in new_words[: max(1, len(set(words)) // 10)]:
        words[rng.randrange(len(words))] = w
    text = " ".join(words)
    text = NUM.sub(lambda m: str(int(m.group()) + delta), text)
    text = text.upper() if upper else text
    text = re.sub(r"[^\w\s]", "", text) if strip_punct else text + " ?!"
    sim = jaccard(shingle_set(normalise(original, True)), shingle_set(normalise(text, True)))
    assume(sim >= DedupConfig().test_threshold)  # a near-copy by definition
    index = _guard(tuple(pool))
    v = index.check(text)
    assert v.outcome == "contaminated" and index.texts[index.ids.index(v.match_id)] is not None
    assert v.similarity >= sim - 1e-9  # the best match is at least as close as the planted source


_GUARDS: dict[int, DedupIndex] = {}


def _guard(pool: tuple[str, ...]) -> DedupIndex:
    # hypothesis calls the test many times; build the test-set index once
    if id(pool[0]) not in _GUARDS:
        index = DedupIndex()
        index.add_many(((f"test-{i}", t) for i, t in enumerate(pool)), role="test")
        index.add_many((f"train-{i}", t) for i, t in enumerate(pool[:50]))
        _GUARDS.clear()
        _GUARDS[id(pool[0])] = index
    return _GUARDS[id(pool[0])]


def test_rouge_rule_follows_the_paper() -> None:
    index = DedupIndex(DedupConfig(rule="rougeL"))
    words = [a + b for a in "bcdfghjklm" for b in "aeiou"]  # 50 distinct words, no digits
    base20 = " ".join(words[:20])
    base40 = " ".join(words[10:50])
    index.add_many([("a", base20), ("b", base40)])
    one_off20 = base20.replace("ca ", "zz ")  # LCS 19/20: ROUGE-L 0.95, not > 0.95 -> kept (as the paper)
    one_off40 = base40.replace("ho ", "zz ")  # 39/40: 0.975 -> dropped
    assert index.check(one_off20).outcome == "accepted"
    v = index.check(one_off40)
    assert (v.outcome, v.match_id) == ("duplicate", "b") and v.similarity == pytest.approx(0.975)


# --------------------------------------------------------------------------- incremental, persistence


def test_incremental_within_a_batch_and_check_does_not_mutate(trec: list[str]) -> None:
    index = DedupIndex()
    index.add_many((f"s{i}", t) for i, t in enumerate(trec[:100]))
    new = "Which river flows through the ancient city of Timbuktu in northern Mali ?"
    assert index.check(new).outcome == "accepted"
    assert len(index) == 100
    vs = index.check_and_add_many([("c1", new), ("c2", new.replace("ancient", "old")), ("c3", trec[5].upper())])
    assert [(v.outcome, v.match_id) for v in vs] == [("accepted", None), ("duplicate", "c1"), ("duplicate", "s5")]
    assert index.ids[-1] == "c1" and len(index) == 101
    assert index.check_and_add("c4", new + "!!").match_id == "c1"
    with pytest.raises(UserError, match="duplicate id"):
        index.add("c1", "something else entirely")
    with pytest.raises(UserError, match="duplicate id"):  # all or nothing: "ok" is not added either
        index.add_many([("ok", "fine text here"), ("c2", "x"), ("c2", "y")])
    assert "ok" not in index.ids and index.check_and_add("ok", "fine text here").outcome == "accepted"
    assert index.check_and_add("c2", "fine text here!").outcome == "duplicate"  # rejected ids stay free
    assert index.check_and_add("c2", "Yet another question about the Andes ?").outcome == "accepted"


def test_save_load_round_trip_without_pickle(tmp_path: Path, trec: list[str], gsm_test: list[str]) -> None:
    index = DedupIndex(DedupConfig(threshold=0.6, num_perm=32))
    index.add_many((f"s{i}", t) for i, t in enumerate(trec[:300]))
    index.add_many(((f"t{i}", t) for i, t in enumerate(gsm_test[:100])), role="test")
    index.check_and_add("new", "What is the airspeed of an unladen swallow ?")
    path = tmp_path / "dedup_index.npz"
    index.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["dedup_index.npz"]  # temp file renamed away
    with np.load(path, allow_pickle=False) as z:  # loads without pickle
        assert z["sigs"].dtype == np.uint32
    loaded = DedupIndex.load(path)
    assert loaded.config == index.config
    assert (loaded.ids, loaded.roles, loaded.texts) == (index.ids, index.roles, index.texts)
    probes = [t.upper() for t in trec[300:400]] + [trec[3] + " ?", _change_numbers(gsm_test[7]),
                                                   "what is the airspeed of an unladen swallow"]
    assert loaded.check_many(probes) == index.check_many(probes)
    assert loaded.check("What is the airspeed of an unladen swallow").match_id == "new"
    # and it keeps growing after a load
    assert loaded.check_and_add("n2", "Brand new question about volcanoes on Io ?").outcome == "accepted"
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(UserError, match="not a dedup index"):
        DedupIndex.load(tmp_path / "bad.npz")
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:2000])  # a truncated file
    with pytest.raises(UserError, match="not a dedup index"):
        DedupIndex.load(tmp_path / "cut.npz")


# --------------------------------------------------------------------------- robustness


def test_odd_inputs_do_not_crash() -> None:
    index = DedupIndex()
    index.add_many([("empty", ""), ("none", None), ("int", 42), ("dict", {"q": "x", "n": [1, 2]}),
                    ("cjk", "東京で一番高い建物は何ですか？"), ("emoji", "I ❤️ naïve café ☕")])
    # digit-free words (a changed number would make it a new problem): 5,000 distinct ones
    letters = "abcdefghij"
    long_text = " ".join(f"w{''.join(letters[int(c)] for c in str(i % 5000))} lorem ipsum" for i in range(6000))
    assert len(long_text.encode()) > 100_000
    index.add("long", long_text)
    assert index.check("   ...  ") == Verdict("duplicate", "empty", 1.0)  # all punctuation -> empty
    assert index.check(42.0).outcome == "accepted"  # "42.0" -> "42 0", not "42"
    assert index.check({"n": [1, 2], "q": "x"}).match_id == "dict"  # canonical JSON
    assert index.check("東京で一番高い建物は何ですか").match_id == "cjk"
    assert index.check("i ❤️ NAÏVE café").match_id == "emoji"
    assert index.check(long_text.replace("wbh ", "other ")).match_id == "long"
    assert index.check(["a", None, 3.5]).outcome == "accepted"
    for cfg in (DedupConfig(shingle="char", ngram=5), DedupConfig(rule="rougeL"), DedupConfig(ngram=3)):
        other = DedupIndex(cfg)
        other.add_many([("e", ""), ("l", long_text), ("c", "東京")])
        other.add_many([("t-emoji", "I ❤️ naïve café ☕"), ("t-dict", {"q": "x", "n": [1, 2]})], role="test")
        assert other.check(long_text).match_id == "l"
        assert other.check("") == Verdict("duplicate", "e", 1.0)  # "" equals the empty train row
        # odd inputs against test rows: symbols and case folded away; a container's numbers masked
        assert other.check("i ❤️ NAÏVE café!") == Verdict("contaminated", "t-emoji", 1.0)
        assert other.check({"n": [3, 4], "q": "x"}) == Verdict("contaminated", "t-dict", 1.0)


def test_bad_config_is_a_user_error() -> None:
    with pytest.raises(UserError):
        DedupConfig(threshold=1.5)
    with pytest.raises(UserError):
        DedupConfig(rule="bleu")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="unknown dedup settings"):
        DedupConfig.from_dict({"treshold": 0.5})


# --------------------------------------------------------------------------- the command


def test_dedup_command(tmp_path: Path, gsm_test: list[str]) -> None:
    from localaug.cli.dedup import dedup

    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps({"q": t}) + "\n" for t in gsm_test[:50]), encoding="utf-8")
    gen = tmp_path / "gen.jsonl"
    rows = [{"q": _change_numbers(gsm_test[3])}, {"q": "A new problem: 3 cats and 4 dogs. How many pets?"},
            {"q": "a new problem 3 cats and 4 dogs how many pets"}, {"q": 17}, {"q": ""}]
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "verdicts.jsonl"
    res = CliRunner().invoke(dedup, ["--text-field", "q", "--test", str(test_file), str(gen), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "contaminated" in res.output
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v["outcome"] for v in verdicts] == ["contaminated", "accepted", "duplicate", "accepted", "accepted"]
    assert verdicts[0]["match_id"] == "test.jsonl:4" and verdicts[2]["match_id"] == "gen.jsonl:2"
    res = CliRunner().invoke(dedup, [str(gen)])
    assert isinstance(res.exception, UserError)
    res = CliRunner().invoke(dedup, ["--text-field", "nope", str(gen)])
    assert isinstance(res.exception, UserError) and "nope" in str(res.exception)


def test_dedup_command_with_a_task(tmp_path: Path, data_dir: Path) -> None:
    from localaug.cli.dedup import dedup

    test_rows = _read(data_dir, "trec/test.jsonl", "text", 20)
    gen = tmp_path / "gen.jsonl"
    gen.write_text(json.dumps({"text": test_rows[2].lower(), "label": "DESC"}) + "\n"
                   + json.dumps({"text": "Who painted the ceiling of a small chapel in Lisbon ?", "label": "HUM"})
                   + "\n", encoding="utf-8")
    out = tmp_path / "verdicts.jsonl"
    res = CliRunner().invoke(dedup, ["--task", "trec", "--data-dir", str(data_dir), str(gen), "--top", "3",
                                     "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "contaminated" in res.output and "test.jsonl" in res.output
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v["outcome"] for v in verdicts] == ["contaminated", "accepted"]
    # the task names rows <file stem>-<line>: the third line of the task's own test split
    assert verdicts[0]["match_id"] == "test.jsonl:test-3" and verdicts[0]["similarity"] == 1.0
