"""The server teacher's logic against small OpenAI-compatible servers on 127.0.0.1 (bench/fake_openai.py):
the dialect probe, the pre-run checks, least-in-flight dispatch, failover, the model-keyed cache.

The same contracts against real servers (two llama_cpp.server processes, vLLM) are in
tests/test_teacher_servers_real.py and tests/test_teacher_vllm.py. A few seconds in all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from localaug.cli import main
from localaug.errors import UserError
from localaug.protocols import GenerationRequest, Sampling
from localaug.teacher import build_teacher
from localaug.teacher.cache import CachedTeacher, GenerationCache
from localaug.teacher.dialects import PROBE_CHOICES, probe_order
from localaug.teacher.pool import TeacherPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from fake_openai import Behaviour, FakeServer  # noqa: E402

CHOICES = (" yes", " no")


def _reqs(n: int, *, seed: int = 0, choices: tuple[str, ...] | None = CHOICES) -> list[GenerationRequest]:
    return [GenerationRequest(sampling=Sampling(seed=seed + i, max_tokens=4), prompt=f"q{i}", choices=choices)
            for i in range(n)]


def _pool(*servers: FakeServer, **opts: object) -> TeacherPool:
    t = build_teacher(url=[s.url for s in servers], model="m", backoff_s=0.01, **opts)
    assert isinstance(t, TeacherPool)
    return t


def _completions(s: FakeServer) -> list[dict]:
    return [b for b in s.b.log if "prompt" in b and b["prompt"].startswith("q")]


def test_probe_finds_the_field_each_server_honours_and_sends_only_that_one() -> None:
    with FakeServer(Behaviour(version="0.32.0", honours="structured_outputs")) as new, \
         FakeServer(Behaviour(version="0.10.1", honours="guided_choice")) as old, \
         FakeServer(Behaviour(owned_by="me", version=None, honours="grammar")) as llama:
        t = _pool(new, old, llama)
        assert [m.info.dialect for m in t.members] == ["structured_outputs", "guided_choice", "grammar"]
        # The order tried follows the server's software and version: one probe each here.
        assert [len([b for b in s.b.log if "prompt" in b]) for s in (new, old, llama)] == [1, 1, 1]
        out = t.generate(_reqs(9))
        assert all(c.text == CHOICES[0] for r in out for c in r)  # every answer constrained
        for s, field in ((new, "structured_outputs"), (old, "guided_choice"), (llama, "grammar")):
            sent = _completions(s)
            assert sent and all(field in b for b in sent)
            assert not any(f in b for b in sent for f in {"structured_outputs", "guided_choice", "grammar"} - {field})
        assert _completions(new)[0]["structured_outputs"] == {"choice": list(CHOICES)}


def test_a_server_that_honours_no_field_is_warned_about_and_its_probe_tried_everything(
        capfd: pytest.CaptureFixture[str]) -> None:
    with FakeServer(Behaviour(version="0.32.0", honours=None)) as s:
        t = _pool(s)
        assert t.members[0].info.dialect == "none" and len(t.members[0].info.tried) == 3
        probes = [b for b in s.b.log if "prompt" in b]
        assert [next(k for k in ("structured_outputs", "guided_choice", "grammar") if k in b) for b in probes] == \
            ["structured_outputs", "guided_choice", "grammar"]
        assert all(b["structured_outputs"]["choice"] == list(PROBE_CHOICES) for b in probes[:1])
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "honours none of" in err[0] and "first line of free text" in err[0]
        assert t.server_records()[0]["constraint"] == "none"
    assert probe_order("vllm", "0.11.2")[0] == "guided_choice" and probe_order("vllm", "0.12.0rc1")[0] == \
        "structured_outputs" and probe_order("llama_cpp.server", "0.3.36")[0] == "grammar"


def test_least_in_flight_dispatch_spreads_and_favours_the_faster_server() -> None:
    with FakeServer(Behaviour(latency_s=0.04, slots=1)) as a, FakeServer(Behaviour(latency_s=0.04, slots=1)) as b:
        t = _pool(a, b, concurrency=4)
        t.generate(_reqs(24))
        counts = [r["answered"] for r in t.server_records()]
        assert sum(counts) == 24 and min(counts) >= 8
    with FakeServer(Behaviour(latency_s=0.01, slots=4)) as fast, FakeServer(Behaviour(latency_s=0.2, slots=4)) as slow:
        t = _pool(fast, slow, concurrency=4)
        t.generate(_reqs(40))
        f, s = (r["answered"] for r in t.server_records())
        assert f + s == 40 and f > 2 * s


def test_a_failing_server_is_set_aside_and_every_request_is_answered_once() -> None:
    with FakeServer(Behaviour(latency_s=0.02, slots=2)) as good, FakeServer(Behaviour(latency_s=0.02)) as bad:
        t = _pool(good, bad, concurrency=4)
        bad.b.fail_with = 503  # after the pre-run check passed
        out = t.generate(_reqs(20))
        assert [len(r) for r in out] == [1] * 20
        rec = {r["url"]: r for r in t.server_records()}
        assert rec[good.url]["answered"] == 20 and rec[bad.url]["answered"] == 0 and rec[bad.url]["set_aside"] == 1
        assert len({b["prompt"] for b in _completions(good)}) == 20 == len(_completions(good))
        # The next stage asks the set-aside server again: it answers its listing, rejoins, fails again.
        t.generate(_reqs(4, seed=100))
        assert t.server_records()[1]["set_aside"] == 2
        # A refused connection, then no server left: one line.
        good.stop()
        with pytest.raises(UserError, match="every teacher server failed in this stage") as e:
            t.generate(_reqs(4, seed=200))
        assert "\n" not in str(e.value)


def test_a_server_that_times_out_is_set_aside() -> None:
    with FakeServer(Behaviour(slots=4)) as good, FakeServer(Behaviour(slots=4)) as slow:
        t = _pool(good, slow, timeout_s=0.3)
        slow.b.latency_s = 1.0  # after the pre-run check passed
        out = t.generate(_reqs(8))
        assert [len(r) for r in out] == [1] * 8
        rec = t.server_records()
        assert (rec[0]["answered"], rec[1]["answered"], rec[1]["set_aside"]) == (8, 0, 1)


def test_one_server_that_fails_is_a_one_line_error() -> None:
    with FakeServer(Behaviour(fail_with=502)) as s:
        with pytest.raises(UserError, match=r"unreachable or failing \(HTTP 502.*is it running\?"):
            _pool(s, retries=1)  # at the pre-run check
        s.b.fail_with = None
        t = _pool(s, retries=1)
        s.b.fail_with = 502  # in the middle of a run
        with pytest.raises(UserError, match=r"unreachable or failing \(HTTP 502.*is it running\?") as e:
            t.generate(_reqs(2))
        assert "\n" not in str(e.value)


def test_servers_of_different_models_are_refused_unless_pinned() -> None:
    with FakeServer(Behaviour(root="/models/qwen-7b")) as a, FakeServer(Behaviour(root="/models/llama-8b")) as b:
        with pytest.raises(UserError, match="serve different models.*teacher_identity") as e:
            _pool(a, b)
        assert "\n" not in str(e.value)
        assert _pool(a, b, identity="qwen-7b").identity == "http:qwen-7b"
    with FakeServer(Behaviour(model="x")) as a, FakeServer(Behaviour(model="y")) as b:
        with pytest.raises(UserError, match="serve different models"):
            build_teacher(url=[a.url, b.url])  # no --teacher-model: each server's only model
        with pytest.raises(UserError, match="does not serve model 'x'"):
            build_teacher(url=[a.url, b.url], model="x")
        with pytest.raises(UserError, match="listed twice"):
            build_teacher(url=[a.url, a.url + "/"])


def test_the_cache_is_keyed_by_the_model_not_the_address(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    with FakeServer(Behaviour(root="/w/gemma")) as a, FakeServer(Behaviour(root="/w/gemma")) as b:
        pool = CachedTeacher(_pool(a, b), GenerationCache(cache))
        first = pool.generate(_reqs(10))
        assert pool.model_calls == 10 and pool.identity == "http:/w/gemma"
    with FakeServer(Behaviour(root="/w/gemma")) as moved:  # one server, on another port
        one = CachedTeacher(_pool(moved), GenerationCache(cache))
        again = one.generate(_reqs(10))
        assert one.model_calls == 0 and one.cache_hits == 10 and not _completions(moved)
        assert [c[0].text for c in again] == [c[0].text for c in first]
        assert [m.model for m in one.cache.stats().models] == ["http:/w/gemma"]


def _demo_input(tmp_path: Path, n: int) -> Path:
    from localaug.task import load_task

    rows = [e.data for e in load_task("demo").load_split("train")[:n]]
    p = tmp_path / "wrong.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_a_chat_card_against_a_server_without_chat_fails_before_the_run_directory(tmp_path: Path) -> None:
    with FakeServer(Behaviour(chat=False)) as s:
        out = tmp_path / "run"
        r = CliRunner().invoke(main, ["run", "--teacher-url", s.url, "--teacher-model", "m", "--out", str(out),
                                      "--iterations", "1"])
        assert r.exit_code == 2, r.output
        assert "cannot answer chat requests" in r.output and "chat_template: false" in r.output
        assert len(r.output.strip().splitlines()) == 1 and not out.exists()
        # A completion-prompt card passes the chat check (the generate stage stands in for a run here).
        s.b.log.clear()
        ok = CliRunner().invoke(main, ["generate", "--task", "demo", "--input", str(_demo_input(tmp_path, 2)),
                                       "--out", str(tmp_path / "a.jsonl"), "--teacher", "gemma3-270m",
                                       "--teacher-url", s.url, "--cache", str(tmp_path / "c.sqlite")])
        assert ok.exit_code == 0, ok.output
        assert not any("messages" in b for b in s.b.log)


def test_teacher_urls_in_a_run_config_and_repeated_options(tmp_path: Path) -> None:
    from localaug.config import build_config, load_config_file, resolve

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"teacher_urls": ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]}))
    s = resolve(load_config_file(cfg))
    assert s.teacher_servers == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    # The servers' addresses are not the run's identity: another replica resumes the same run.
    assert s.fingerprint() == resolve(build_config(teacher_url="http://10.0.0.9:8000/v1")).fingerprint()
    cfg.write_text(yaml.safe_dump({"teacher_urls": ["http://a/v1"], "teacher_url": "http://b/v1"}))
    with pytest.raises(UserError, match="teacher_url or teacher_urls"):
        resolve(load_config_file(cfg))
    with FakeServer(Behaviour()) as a, FakeServer(Behaviour()) as b:
        r = CliRunner().invoke(main, ["generate", "--task", "demo", "--input", str(_demo_input(tmp_path, 4)),
                                      "--out", str(tmp_path / "a.jsonl"), "--teacher-url", a.url, "--teacher-url",
                                      b.url, "--cache", str(tmp_path / "c.sqlite"), "--per-wrong", "2"])
        assert r.exit_code == 0, r.output
        answered = {u: int(n) for u, n in (p.rsplit(" ", 1) for p in
                                            r.output.split("requests answered: ")[1].strip().split(", "))}
        assert answered == {a.url: len(_completions_of(a)), b.url: len(_completions_of(b))}
        assert sum(answered.values()) == 8 and min(answered.values()) >= 2


def _completions_of(s: FakeServer) -> list[dict]:
    return [b for b in s.b.log if "messages" in b and b.get("max_tokens", 0) > 1]


def test_the_manifest_and_report_count_each_servers_answers_across_a_resume(tmp_path: Path) -> None:
    from localaug.config import Settings, resolve
    from localaug.config import build_config as cfg
    from localaug.report import write_report
    from localaug.store import RunStore
    from localaug.teacher.record import servers_at_end, servers_at_start

    settings: Settings = resolve(cfg(teacher_urls=["http://127.0.0.1:1/v1"]))
    with FakeServer(Behaviour(root="/w/a")) as a, FakeServer(Behaviour(root="/w/a", honours=None)) as b:
        for run in range(2):  # a run, then the same run resumed by a second process
            pool = _pool(a, b)
            store = RunStore.open_for_run(tmp_path / "run", settings)
            before = servers_at_start(store, pool)
            store.record_models(teacher=pool.identity)
            pool.generate(_reqs(6, seed=10 * run))
            servers_at_end(store, pool, before)
            store.unlock()
        records = json.loads((tmp_path / "run" / "manifest.json").read_text())["teacher_servers"]
        assert [r["url"] for r in records] == [a.url, b.url] and sum(r["answered"] for r in records) == 12
        assert records[0]["answered"] == len(_completions(a)) and records[1]["constraint"] == "none"
        report = write_report(RunStore.open_existing(tmp_path / "run")).read_text()
        assert "## Teacher servers" in report and f"| {b.url} | /w/a | vllm 0.32.0 | none |" in report
        assert f"**Note:** {b.url} honoured no constraint field" in report
    with FakeServer(Behaviour(root="/w/other")) as c:  # a resume against servers of another model
        store = RunStore.open_for_run(tmp_path / "run", settings)
        try:
            with pytest.raises(UserError, match="teacher was http:/w/a, and the servers now serve http:/w/other"):
                servers_at_start(store, _pool(c))
        finally:
            store.unlock()
