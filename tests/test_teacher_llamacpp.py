"""The in-process llama.cpp teacher, on the real Gemma 3 270M GGUF (short generations: ~30 s on 2 cores).

Nothing here depends on the CPU's kernels: paths are compared only where the model's choice is clear."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from localaug.errors import UserError
from localaug.protocols import GenerationRequest, Sampling, Teacher
from localaug.teacher import build_teacher
from localaug.teacher.llamacpp import LlamaCppTeacher

GREEDY = Sampling(temperature=0.0, max_tokens=12)

# llama.cpp's logits are not bit-identical across batch layouts (how many sequences share a decode call and
# where their KV cells sit) nor across CPUs (each has its own kernels): measured differences up to ~0.5 in a
# logit. So two decoding paths must agree wherever greedy decoding is clear -- the best token ahead of the
# next by more than TOL in the model's own logits -- and may part at the first near-tie (bench/README.md
# "Teacher" reports the agreement rate). A difference before the first near-tie is a real bug (tokenisation,
# BOS, stop handling, sampler chain, positions or KV bookkeeping).
TOL = 1.5
PROMPTS = [
    "1, 2, 3, 4, 5,",
    "Monday, Tuesday, Wednesday,",
    "January, February, March,",
    "a b c d e f g",
    "The quick brown fox jumps over the",
    "def fibonacci(n):",
]
FEW_SHOT = ("Question: Who wrote Hamlet ?\nAnswer type: human being\n\nQuestion: How many legs does a dog have ?\n"
            "Answer type: number\n\nQuestion: Where is the Eiffel Tower ?\nAnswer type: location\n\n")


@pytest.fixture(scope="module")
def teacher(gemma_teacher) -> LlamaCppTeacher:  # noqa: ANN001 - the session's model (conftest.py)
    assert isinstance(gemma_teacher, LlamaCppTeacher) and gemma_teacher.batch_sequences == 8
    return gemma_teacher


def _texts(results: list[list]) -> list[list[str]]:
    return [[c.text for c in r] for r in results]


def _logits(teacher: LlamaCppTeacher, new_tokens: list[int], start: bool = False) -> np.ndarray:
    """The model's logits for the next token after evaluating `new_tokens` (from scratch when `start`), one
    sequence alone: the sequential path's kernel."""
    llm = teacher.llm
    if start:
        llm.reset()
    llm.eval(new_tokens)
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()


def clear_greedy_prefix(teacher: LlamaCppTeacher, prompt: str, max_tokens: int) -> tuple[str, int]:
    """(the text greedy decoding writes before its first near-tie, how many tokens that is)."""
    logits = _logits(teacher, teacher._tokens(GenerationRequest(sampling=GREEDY, prompt=prompt)), start=True)
    out: list[int] = []
    for _ in range(max_tokens):
        second, first = (int(t) for t in np.argsort(logits)[-2:])
        if logits[first] - logits[second] < TOL or first == teacher.llm.token_eos():
            break
        out.append(first)
        logits = _logits(teacher, [first])
    return teacher.llm.detokenize(out).decode("utf-8", errors="ignore"), len(out)


def clear_choice(teacher: LlamaCppTeacher, prompt: str, choices: tuple[str, ...]) -> str | None:
    """The choice grammar-constrained greedy decoding must write, or None if it meets a near-tie on the way.

    At each step only tokens whose text continues some choice are allowed (" ", " h", " human", ...), as the
    grammar allows them; the best allowed token must lead the next allowed one by more than TOL."""
    pieces = _pieces(teacher)
    inside = [t for t, piece in enumerate(pieces) if piece and any(piece in c.encode() for c in choices)]
    logits = _logits(teacher, teacher._tokens(GenerationRequest(sampling=GREEDY, prompt=prompt)), start=True)
    text = b""
    for _ in range(8):
        rest = [c.encode()[len(text):] for c in choices if c.encode().startswith(text)]
        if b"" in rest:
            return text.decode()
        allowed = np.array([t for t in inside if any(r.startswith(pieces[t]) for r in rest)])
        second, first = np.argsort(logits[allowed])[-2:]
        if logits[allowed[first]] - logits[allowed[second]] < TOL:
            return None
        text += pieces[allowed[first]]
        logits = _logits(teacher, [int(allowed[first])])
    raise AssertionError(f"no choice completed after 8 tokens: {text!r}")


_PIECES: dict[str, list[bytes]] = {}


def _pieces(teacher: LlamaCppTeacher) -> list[bytes]:
    """Each token's text (bytes), read once."""
    if teacher.identity not in _PIECES:
        llm = teacher.llm
        _PIECES[teacher.identity] = [llm.detokenize([t]) for t in range(llm.n_vocab())]
    return _PIECES[teacher.identity]


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
def test_batched_and_sequential_greedy_agree_until_the_first_near_tie(teacher: LlamaCppTeacher) -> None:
    reqs = [GenerationRequest(sampling=GREEDY, prompt=p) for p in PROMPTS]
    batched = [r[0] for r in teacher.generate(reqs)]
    sequential = [c for _, _, c in sorted(teacher.generate_stream(reqs, batched=False), key=lambda x: x[0])]
    assert all(c.prompt_tokens > 0 and not c.cached for c in batched)
    whole = 0
    for p, b, q in zip(PROMPTS, batched, sequential, strict=True):
        clear, n = clear_greedy_prefix(teacher, p, GREEDY.max_tokens)
        assert b.text.startswith(clear) and q.text.startswith(clear), (p, clear, b.text, q.text)
        if n == GREEDY.max_tokens:  # clear to the end: the same text, tokens and reason
            whole += 1
            assert (b.text, b.finish_reason, b.completion_tokens) == (q.text, q.finish_reason, q.completion_tokens)
    assert whole >= 2  # "1, 2, 3, ..." and "a b c ..." are clear for all 12 tokens: the test compares something
    assert batched[0].text.startswith(" 6, 7")  # and the text is the model's, not an empty string


@pytest.mark.slow
def test_shared_prompt_prefix_is_evaluated_once_and_changes_nothing(teacher: LlamaCppTeacher) -> None:
    header = "Here are some lists that continue in the obvious way, one per line, written out in full.\n\n"
    s = Sampling(temperature=0.0, max_tokens=12, stop=("\n\n",))
    reqs = [GenerationRequest(sampling=s, prompt=header + p, n=2) for p in PROMPTS]
    batched = teacher.generate(reqs)
    assert teacher.last_shared_prefix >= 16  # the header went through the shared-prefix path
    seq = sorted(teacher.generate_stream([replace(r, n=1) for r in reqs], batched=False), key=lambda x: x[0])
    for p, samples, (_, _, one) in zip(PROMPTS, batched, seq, strict=True):
        clear, _ = clear_greedy_prefix(teacher, header + p, s.max_tokens)
        assert all(c.text.startswith(clear) for c in [*samples, one]), (p, clear, samples, one)
    assert batched[0][0].text == batched[0][1].text == seq[0][2].text == " 6, 7, 8, 9,"


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
    # Greedy: each path (batched: check, resample on rejection; sequential: grammar-first create_completion)
    # answers with a choice, the same one each time; where the choice is clear, both give it.
    prompts = ["Question: Where is Rome ?\nAnswer type:", "Question: How old is Rome ?\nAnswer type:",
               FEW_SHOT + "Question: Where is Rome ?\nAnswer type:",
               FEW_SHOT + "Question: How many days are in a week ?\nAnswer type:",
               FEW_SHOT + "Question: Who painted the Mona Lisa ?\nAnswer type:"]
    greedy = [replace(req, sampling=Sampling(temperature=0.0, max_tokens=12), n=1, prompt=p) for p in prompts]
    batched = [r[0].text for r in teacher.generate(greedy)]
    sequential = [c.text for _, _, c in sorted(teacher.generate_stream(greedy, batched=False))]
    assert batched == [r[0].text for r in teacher.generate(greedy)]
    assert sequential == [c.text for _, _, c in sorted(teacher.generate_stream(greedy, batched=False))]
    assert all(t in choices for t in batched + sequential), (batched, sequential)
    clear = [clear_choice(teacher, p, choices) for p in prompts]
    # Zero-shot, "How old is Rome ?" is a near-tie (one CPU's batched path said " number", its sequential path
    # " human being"); with a few examples each question is clear, so the test compares all three choices.
    assert clear[2:] == [" location", " number", " human being"], clear
    for want, b, q in zip(clear, batched, sequential, strict=True):
        assert want is None or b == q == want, (want, b, q)


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


def test_a_closed_teacher_raises_instead_of_crashing(gemma_teacher: LlamaCppTeacher) -> None:
    # The loop closes its teacher when a run no longer needs it; a caller that kept it (bench/study.py did, for
    # the next run) got a segfault inside libllama. Now it gets an error it can read, and closing twice is fine.
    own = LlamaCppTeacher(gemma_teacher.path, n_threads=1, batch_sequences=1)
    assert own.generate([GenerationRequest(prompt="1, 2, 3,", sampling=GREEDY)])[0][0].text
    own.close()
    own.close()
    with pytest.raises(RuntimeError, match="is closed"):
        own.generate([GenerationRequest(prompt="1, 2, 3,", sampling=GREEDY)])
