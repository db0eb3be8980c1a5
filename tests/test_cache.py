"""The SQLite generation cache and CachedTeacher: hits, concurrency, crash safety, CLI."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from localaug.cli import main
from localaug.cli.cache import cache as cache_cli
from localaug.protocols import Completion, GenerationRequest, ProgressFn, Sampling, Teacher, TeacherBase
from localaug.teacher.cache import SCHEMA_VERSION, CachedTeacher, GenerationCache, default_cache_path, generation_key

S = Sampling(temperature=0.7, max_tokens=8, seed=5)


class EchoTeacher(TeacherBase):
    """A deterministic stand-in for the cache-logic tests (the real model is used further down)."""

    kind = "echo"
    identity = "echo:v1"
    prefers_completion = True

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
                 ) -> list[list[Completion]]:
        out = []
        for r in requests:
            self.calls += r.n
            out.append([Completion(text=f"{r.prompt}|{r.sampling.seed + i}", completion_tokens=3)
                        for i in range(r.n)])
        return out


def test_hits_misses_and_sample_seeds(tmp_path: Path) -> None:
    inner = EchoTeacher()
    t = CachedTeacher(inner, GenerationCache(tmp_path / "c.sqlite"))
    assert isinstance(t, Teacher)
    reqs = [GenerationRequest(sampling=S, prompt="a", n=3), GenerationRequest(sampling=S, prompt="b")]
    first = t.generate(reqs)
    assert [[c.text for c in r] for r in first] == [["a|5", "a|6", "a|7"], ["b|5"]]
    assert (t.model_calls, t.cache_hits, inner.calls) == (4, 0, 4)
    second = t.generate(reqs)
    assert [[c.text for c in r] for r in second] == [[c.text for c in r] for r in first]
    assert all(c.cached for r in second for c in r)
    assert (t.model_calls, t.cache_hits, inner.calls) == (4, 4, 4)  # zero new model calls
    # n=4 reuses the three cached samples and generates only the fourth.
    t.generate([GenerationRequest(sampling=S, prompt="a", n=4)])
    assert (t.model_calls, inner.calls) == (5, 5)
    # Anything in the key changes the entry: sampling, schema, messages vs prompt, model identity.
    k = generation_key("echo:v1", reqs[0], 0)
    assert k != generation_key("echo:v2", reqs[0], 0)
    assert k != generation_key("echo:v1", reqs[0], 1)
    assert k != generation_key("echo:v1", GenerationRequest(sampling=S, prompt="a", choices=(" x",)), 0)
    assert k != generation_key("echo:v1", GenerationRequest(sampling=Sampling(max_tokens=9, seed=5),
                                                            prompt="a"), 0)
    assert k != generation_key("echo:v1", GenerationRequest(sampling=S, messages=(("user", "a"),)), 0)


def test_identical_requests_in_one_call_are_generated_once(tmp_path: Path) -> None:
    inner = EchoTeacher()
    t = CachedTeacher(inner, GenerationCache(tmp_path / "c.sqlite"))
    r = GenerationRequest(sampling=S, prompt="same")
    out = t.generate([r, r, r])
    assert inner.calls == 1 and [o[0].text for o in out] == ["same|5"] * 3


class BatchingEcho(EchoTeacher):
    """Says its output depends on its batch (as llama.cpp's does): groups of 3 samples."""

    batch_group = 3

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def generate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
                 ) -> list[list[Completion]]:
        self.batches.append([f"{r.prompt}|{r.sampling.seed}" for r in requests])
        return super().generate(requests, progress)


def test_a_batching_teacher_gets_fixed_groups_by_position_stored_whole(tmp_path: Path) -> None:
    cache = GenerationCache(tmp_path / "c.sqlite")
    reqs = [GenerationRequest(sampling=S, prompt=p) for p in "abcdefg"]
    # An earlier, killed call stored the whole first group, and another run happened to make "e".
    CachedTeacher(BatchingEcho(), cache).generate(reqs[:3])
    CachedTeacher(EchoTeacher(), cache).generate([reqs[4]])
    inner = BatchingEcho()
    out = CachedTeacher(inner, cache).generate(reqs)
    assert [o[0].text for o in out] == [f"{p}|5" for p in "abcdefg"]
    # Groups by position in the call (abc, def, g), never by what is missing (d, f, g in one batch).
    assert inner.batches == [["d|5", "f|5"], ["g|5"]]


def test_schema_version_stats_clear_and_default_location(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LOCALAUG_CACHE_DIR", str(tmp_path / "cdir"))
    assert default_cache_path() == tmp_path / "cdir" / "teacher.sqlite"
    c = GenerationCache()
    assert c.path == default_cache_path() and c.path.exists()
    with sqlite3.connect(c.path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c.put("k1", "m1", Completion("x", prompt_tokens=2, completion_tokens=3))
    c.put("k2", "m2", Completion("y", completion_tokens=4))
    c.put("k3", "m2", Completion("", finish_reason="error"))  # failures are never cached
    st = c.stats()
    assert st.entries == 2 and {m.model: m.entries for m in st.models} == {"m1": 1, "m2": 1}
    assert st.size_bytes > 0 and sum(m.completion_tokens for m in st.models) == 7
    assert c.clear("m1") == 1 and c.get("k1") is None and c.get("k2") is not None
    assert c.clear() == 1 and c.stats().entries == 0
    GenerationCache()  # reopening an existing file keeps a single schema row
    with sqlite3.connect(c.path) as db:
        assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1


def _writer(path: str, worker: int, n: int) -> None:
    c = GenerationCache(path)
    for i in range(n):
        c.put(f"{worker}-{i}", f"m{worker}", Completion(f"text {worker} {i}", completion_tokens=i))


def test_many_processes_and_threads_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite")
    ctx = mp.get_context("spawn")  # fresh interpreters: no sqlite handle crosses a fork
    procs = [ctx.Process(target=_writer, args=(path, w, 150)) for w in range(6)]
    for p in procs:
        p.start()
    import threading

    threads = [threading.Thread(target=_writer, args=(path, 100 + w, 150)) for w in range(3)]
    for th in threads:
        th.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    for th in threads:
        th.join()
    c = GenerationCache(path)
    st = c.stats()
    assert st.entries == 9 * 150 and len(st.models) == 9
    assert c.get("5-149") is not None and c.get("5-149").text == "text 5 149"


def test_cli_stats_and_clear(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    runner = CliRunner()
    res = runner.invoke(cache_cli, ["stats", "--path", str(path)])
    assert res.exit_code == 0 and "not created yet" in res.output
    c = GenerationCache(path)
    c.put("k", "llama.cpp:abc", Completion("x", completion_tokens=11))
    res = runner.invoke(cache_cli, ["stats", "--path", str(path)], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "entries: 1" in res.output and "llama.cpp:abc" in res.output and "11" in res.output
    res = runner.invoke(cache_cli, ["clear", "--path", str(path)], input="n\n")
    assert "nothing deleted" in res.output and c.stats().entries == 1
    res = runner.invoke(cache_cli, ["clear", "--path", str(path), "--yes"])
    assert res.exit_code == 0 and "deleted 1" in res.output and c.stats().entries == 0


# ----------------------------------------------------------------------------- with the real model

_CHILD = textwrap.dedent(
    """
    import hashlib
    import sys
    from localaug.teacher.cache import CachedTeacher, GenerationCache
    from localaug.protocols import GenerationRequest, Sampling
    from localaug.teacher import build_teacher

    t = CachedTeacher(build_teacher("gemma3-270m", batch_sequences=4, n_threads=1), GenerationCache(sys.argv[1]))
    s = Sampling(temperature=0.8, max_tokens=int(sys.argv[3]), seed=11)
    reqs = [GenerationRequest(sampling=s, prompt=f"Item {i}: a short question about cities:", n=2)
            for i in range(int(sys.argv[2]))]
    def progress(done, total, info):
        print("done", done, flush=True)
    out = t.generate(reqs, progress=progress)
    print("calls", t.model_calls, "hits", t.cache_hits, flush=True)
    print("texts", hashlib.sha256(repr([[c.text for c in r] for r in out]).encode()).hexdigest(), flush=True)
    """
)


def _child(db: Path, n_req: int, max_tokens: int, failpoint: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "LOCALAUG_CACHE_DIR": str(db.parent), "LOCALAUG_FAILPOINT": failpoint or ""}
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(db), str(n_req), str(max_tokens)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


@pytest.mark.slow
def test_second_identical_call_makes_zero_model_calls(tmp_path: Path) -> None:
    from localaug.teacher import build_teacher

    inner = build_teacher("gemma3-270m", batch_sequences=4, n_threads=1)
    t = CachedTeacher(inner, GenerationCache(tmp_path / "c.sqlite"))
    reqs = [GenerationRequest(sampling=Sampling(max_tokens=6, seed=2), prompt=f"Fact {i}:", n=2)
            for i in range(3)]
    first = t.generate(reqs)
    assert (t.model_calls, t.cache_hits) == (6, 0)
    second = t.generate(reqs)
    assert (t.model_calls, t.cache_hits) == (6, 6)  # how much faster that is: bench/teacher_bench.py
    assert [[c.text for c in r] for r in first] == [[c.text for c in r] for r in second]


@pytest.mark.slow
def test_a_kill_inside_a_batch_group_keeps_the_groups_before_it_and_reruns_to_the_same_text(tmp_path: Path) -> None:
    # 18 samples, 4 decoded at a time: groups of 16 (GROUP_BATCHES 4) and 2. The failpoint kills the child at the
    # first completion of the second group, before that group is stored.
    clean = _child(tmp_path / "clean.sqlite", 9, 12)
    out, _ = clean.communicate(timeout=300)
    assert clean.returncode == 0
    texts = out.strip().splitlines()[-1]
    db = tmp_path / "c.sqlite"
    killed = _child(db, 9, 12, failpoint="teacher:batch1")
    said, _ = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert int(said.strip().splitlines()[-1].split()[1]) == 17  # the group's first completion was made...
    assert GenerationCache(db).stats().entries == 16  # ...and only the whole group before it was stored

    rerun = _child(db, 9, 12)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0
    calls, hits = (int(x) for x in out.strip().splitlines()[-2].split()[1::2])
    assert (calls, hits) == (2, 16)
    assert out.strip().splitlines()[-1] == texts  # the resumed call wrote what the uninterrupted one did


def _filled_cache(path: Path) -> None:
    c = GenerationCache(path)
    for i in range(300):
        c.put(f"k{i}", "llama.cpp:abc", Completion("x" * 500))
    c._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, nothing in the WAL
    c.close()


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "a damaged page", "newer schema"])
def test_a_damaged_cache_is_reported_by_stats_and_set_aside_by_a_writer(tmp_path: Path, damage: str,
                                                                        capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.sqlite"
    _filled_cache(path)
    if damage == "random bytes":
        path.write_bytes(random.Random(0).randbytes(8192))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "a damaged page":  # SQLite's integrity check says so over two lines
        data = bytearray(path.read_bytes())
        data[4096 * 10: 4096 * 11] = random.Random(1).randbytes(4096)
        path.write_bytes(bytes(data))
    else:
        db = sqlite3.connect(path)
        with db:
            db.execute("UPDATE schema_version SET version = 99")
        db.close()  # the last connection: SQLite folds the log back and removes its side files
    before = path.read_bytes()
    # `cache stats` reads: it reports the damage in one line and changes nothing, not even a side file.
    res = CliRunner().invoke(main, ["cache", "stats", "--path", str(path)], env={"COLUMNS": "60"})
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and "not usable" in res.stderr and "left as it is" in res.stderr
    assert sorted(tmp_path.iterdir()) == [path] and path.read_bytes() == before
    # A writer (a run, generate, cache clear) sets it aside in one warning line and goes on with a new one.
    capfd.readouterr()
    t = CachedTeacher(EchoTeacher(), GenerationCache(path))
    warning = capfd.readouterr().err
    assert warning.count("\n") == 1 and warning.startswith("localaug: warning: the teacher cache"), warning
    aside = sorted(tmp_path.glob("c.sqlite.damaged-*"))
    assert aside and aside[0].read_bytes() == before  # the damaged file is kept, untouched, for inspection
    assert f"moved it to {aside[0]}" in warning
    assert t.generate([GenerationRequest(sampling=S, prompt="a")])[0][0].text


@pytest.mark.parametrize("width", ["40", "80", "200"])
def test_stats_output_reads_the_same_at_any_width(tmp_path: Path, width: str) -> None:
    path = tmp_path / ("a-long-folder-name-" * 4) / "c.sqlite"
    GenerationCache(path).put("k", "llama.cpp:abc", Completion("x", completion_tokens=11))
    res = CliRunner().invoke(cache_cli, ["stats", "--path", str(path)], env={"COLUMNS": width, "TERM": "xterm"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert f"cache: {path}" in lines and any(line.startswith("entries: 1 ") for line in lines)
