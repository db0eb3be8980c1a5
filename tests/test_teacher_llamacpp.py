"""The in-process llama.cpp teacher, on the real Gemma 3 270M GGUF (short generations: ~30 s on 2 cores)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from localaug.errors import UserError
from localaug.protocols import GenerationRequest, Sampling, Teacher
from localaug.teacher import build_teacher
from localaug.teacher.llamacpp import LlamaCppTeacher

# One thread: on a shared, busy machine two spinning llama.cpp threads run ~10x slower than one.
THREADS = 1
GREEDY = Sampling(temperature=0.0, max_tokens=12)

# Continuations the model is sure of. llama.cpp's logits are not bit-identical across batch layouts
# (how many sequences share a decode call and where their KV cells sit): measured differences up to
# ~0.5 in a logit at some steps, so on open-ended prompts with near-tie tokens greedy text can part
# after a few tokens (bench/README.md "Teacher" reports the agreement rate). These prompts have no
# near-ties in their first 12 tokens, so any difference here is a real bug (tokenisation, BOS,
# stop handling, sampler chain, positions or KV bookkeeping).
CONFIDENT = [
    "1, 2, 3, 4, 5,",
    "Monday, Tuesday, Wednesday,",
    "January, February, March,",
    "a b c d e f g",
    "The quick brown fox jumps over the",
    "def fibonacci(n):",
]


@pytest.fixture(scope="module")
def teacher() -> LlamaCppTeacher:
    t = build_teacher("gemma3-270m", batch_sequences=8, n_threads=THREADS)
    assert isinstance(t, LlamaCppTeacher)
    return t


def _texts(results: list[list]) -> list[list[str]]:
    return [[c.text for c in r] for r in results]


@pytest.mark.slow
def test_default_card_is_a_base_model_with_file_identity(teacher: LlamaCppTeacher) -> None:
    assert isinstance(teacher, Teacher)
    assert teacher.prefers_completion  # Gemma 270M base: no chat template -> completion prompts
    assert teacher.identity.startswith("llama.cpp:") and len(teacher.identity) == len("llama.cpp:") + 64
    assert build_teacher("gemma3-270m").identity == teacher.identity  # hash is remembered, and stable


@pytest.mark.slow
def test_seeded_sampling_is_reproducible_and_samples_differ(teacher: LlamaCppTeacher) -> None:
    s = Sampling(temperature=1.0, top_p=0.95, max_tokens=12, seed=7)
    reqs = [GenerationRequest(sampling=s, prompt="My favourite animal is the", n=4)]
    a = _texts(teacher.generate(reqs))
    b = _texts(teacher.generate(reqs))
    assert a == b
    assert len(set(a[0])) >= 3, a  # four seeds -> (almost surely) different samples
    other = _texts(teacher.generate([replace(reqs[0], sampling=replace(s, seed=99))]))
    assert other != a


@pytest.mark.slow
def test_batched_greedy_equals_sequential(teacher: LlamaCppTeacher) -> None:
    reqs = [GenerationRequest(sampling=GREEDY, prompt=p) for p in CONFIDENT]
    batched = [r[0] for r in teacher.generate(reqs)]
    seq = sorted(teacher.generate_stream(reqs, batched=False), key=lambda x: x[0])
    sequential = [c for _, _, c in seq]
    assert [c.text for c in batched] == [c.text for c in sequential]
    assert [c.finish_reason for c in batched] == [c.finish_reason for c in sequential]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in sequential]
    assert all(c.prompt_tokens > 0 and not c.cached for c in batched)
    assert batched[0].text.startswith(" 6, 7")  # and the text is the model's, not an empty string


@pytest.mark.slow
def test_shared_prompt_prefix_is_evaluated_once_and_changes_nothing(teacher: LlamaCppTeacher) -> None:
    header = "Here are some lists that continue in the obvious way, one per line, written out in full.\n\n"
    s = Sampling(temperature=0.0, max_tokens=12, stop=("\n\n",))
    reqs = [GenerationRequest(sampling=s, prompt=header + p, n=2) for p in CONFIDENT]
    batched = teacher.generate(reqs)
    assert teacher.last_shared_prefix >= 16  # the header went through the shared-prefix path
    seq = sorted(teacher.generate_stream([replace(r, n=1) for r in reqs], batched=False), key=lambda x: x[0])
    assert [[c.text for c in r] for r in batched] == [[c.text, c.text] for _, _, c in seq]
    assert batched[0][0].text == " 6, 7, 8, 9,"


@pytest.mark.slow
@pytest.mark.parametrize("batched", [True, False])
def test_stop_strings_and_length(teacher: LlamaCppTeacher, batched: bool) -> None:
    stop = Sampling(temperature=0.0, max_tokens=20, stop=(" 8",))
    length = Sampling(temperature=0.0, max_tokens=5)
    reqs = [GenerationRequest(sampling=stop, prompt="1, 2, 3, 4, 5,"),
            GenerationRequest(sampling=length, prompt="1, 2, 3, 4, 5,")]
    out = sorted(teacher.generate_stream(reqs, batched=batched), key=lambda x: x[0])
    c_stop, c_len = out[0][2], out[1][2]
    assert c_stop.text == " 6, 7," and c_stop.finish_reason == "stop"
    assert c_len.finish_reason == "length" and c_len.completion_tokens == 5


@pytest.mark.slow
def test_choices_constrain_the_answer_to_one_of_them(teacher: LlamaCppTeacher) -> None:
    """The verifier's constraint: the completion is exactly one of the label words, even when sampling."""
    choices = (" location", " number", " human being")
    s = Sampling(temperature=1.0, max_tokens=12, seed=3)
    req = GenerationRequest(sampling=s, prompt="Question: Where is Rome ?\nAnswer type:", choices=choices, n=4)
    for c in teacher.generate([req])[0]:  # batched path: grammar checked per sampled token
        assert c.text in choices and c.finish_reason == "stop", c
    # Greedy: the batched path (check, resample on rejection) equals grammar-first create_completion.
    greedy = [replace(req, sampling=Sampling(temperature=0.0, max_tokens=12), n=1, prompt=p)
              for p in ("Question: Where is Rome ?\nAnswer type:", "Question: How old is Rome ?\nAnswer type:")]
    batched = [r[0].text for r in teacher.generate(greedy)]
    sequential = [c.text for _, _, c in sorted(teacher.generate_stream(greedy, batched=False))]
    assert batched == sequential and all(t in choices for t in batched)


@pytest.mark.slow
def test_progress_reports_every_sample(teacher: LlamaCppTeacher) -> None:
    seen: list[tuple[int, int]] = []
    reqs = [GenerationRequest(sampling=Sampling(max_tokens=4, seed=1), prompt="Hello", n=3)]
    teacher.generate(reqs, progress=lambda d, t, info: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.slow
def test_chat_messages_need_a_chat_template(teacher: LlamaCppTeacher) -> None:
    req = GenerationRequest(sampling=GREEDY, messages=(("user", "hi"),))
    with pytest.raises(UserError, match="no chat template"):
        teacher.generate([req])


def test_missing_gguf_is_a_one_line_user_error(tmp_path: Path) -> None:
    card = tmp_path / "mine.yaml"
    card.write_text(f"name: mine\nsource:\n  gguf_path: {tmp_path / 'nope.gguf'}\n")
    with pytest.raises(UserError) as e:
        build_teacher(card)
    assert "GGUF file not found" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="GGUF file not found"):
        LlamaCppTeacher(tmp_path / "nope.gguf")
