"""`localaug export`'s bad inputs (one line, exit code 2, nothing written) and which student it picks, on run
directories made by the real `localaug run` with the fake plug-in backends (tests/plugins: tests/fakes.py; no model
loads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from localaug import layout
from localaug.cli import main
from localaug.config import build_config, resolve
from localaug.errors import UserError
from localaug.export import check_target
from localaug.export.source import _provenance, pick_folder
from localaug.store import RunStore

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run that held seeds out (so it has final/), with fake students and a fake teacher."""
    tmp = tmp_path_factory.mktemp("fake-run")
    res = CliRunner().invoke(main, [
        "run", "--task", "demo", "--seed-size", "24", "--iterations", "2", "--holdout", "0.25", "--seed", "3",
        "--per-wrong", "1", "--verify", "none", "--student", "fake",
        "--teacher", "fake", "--cache", str(tmp / "c.sqlite"), "--out", str(tmp / "run")])
    assert res.exit_code == 0, res.output
    return tmp / "run"


def _as_lora_students(run: Path, copy: Path) -> Path:
    """A copy of the run whose students look like LoRA students (fake students leave no adapter_config.json)."""
    shutil.copytree(run, copy)
    for adapter in copy.glob("*/adapter"):
        (adapter / "adapter_config.json").write_text("{}")
    return copy


def _fails(*args: str, expect: str) -> str:
    res = CliRunner().invoke(main, ["export", *args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], res.stderr
    return lines[0]


def test_bad_requests_are_one_line_and_write_nothing(fake_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _fails(str(fake_run), "--format", "onnx", "--out", str(out), expect="unknown format 'onnx'")
    _fails(str(fake_run), "--format", "hf", "--quant", "q8_0", "--out", str(out), expect="format hf cannot take")
    _fails(str(fake_run), "--format", "lora-gguf", "--quant", "q4_k_m", "--out", str(out),
           expect="format lora-gguf cannot take quantisation 'q4_k_m' (lora-gguf takes f32, f16)")
    _fails(str(fake_run), "--format", "gguf", "--quant", "q5_k", "--out", str(out), expect="f16, q8_0, q4_k_m")
    _fails(str(tmp_path), "--format", "gguf", "--out", str(out), expect="not a localaug run directory")
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _fails(str(fake_run), "--format", "gguf", "--out", str(out), expect="not empty; pass --force")
    _fails(str(fake_run), "--format", "gguf", "--out", str(out), "--force", expect="holds no earlier export")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_run_without_a_finished_student(fake_run: Path, tmp_path: Path) -> None:
    # A run that has not trained anything yet (its directory as `localaug run` creates it).
    RunStore.open_for_run(tmp_path / "fresh", resolve(build_config(task="demo"))).unlock()
    _fails(str(tmp_path / "fresh"), "--format", "hf", "--out", str(tmp_path / "o"), expect="no finished student")
    # The fake students wrote no LoRA adapter: nothing here can be exported.
    _fails(str(fake_run), "--format", "hf", "--out", str(tmp_path / "o"), expect="no finished student")
    assert not (tmp_path / "o").exists()


def test_which_student_is_exported(fake_run: Path, tmp_path: Path) -> None:
    run = _as_lora_students(fake_run, tmp_path / "run")
    store = RunStore.open_existing(run)
    assert pick_folder(store, None) == layout.FINAL  # the run held seeds out: its final student
    assert pick_folder(store, 0) == layout.round_folder(0)
    with pytest.raises(UserError, match="iteration 7 has no trained student"):
        pick_folder(store, 7)
    # A plug-in student cannot be exported (localaug cannot know its weights): one line, before any work.
    _fails(str(run), "--format", "hf", "--out", str(tmp_path / "o"), expect="needs a model-card student")


def test_provenance_of_the_final_and_of_an_iteration(fake_run: Path) -> None:
    store = RunStore.open_existing(fake_run)
    settings = resolve(build_config(task="demo"))
    m = store.manifest
    final = _provenance(store, layout.FINAL, settings)
    train = [json.loads(x) for x in (fake_run / "final" / "train.jsonl").read_text().splitlines()]
    assert final["iteration"] == "final" and final["final_accuracy"] == m.final.test_accuracy
    assert final["teacher_examples_added"] == m.final.added == sum(
        1 for r in train if r.get("meta", {}).get("origin") != "seed")
    assert final["plain_accuracy"] == m.iterations["00"].test_accuracy
    assert final["seed_size"] == 24 and final["teacher"] == m.models["teacher"]
    assert final["prompt"]["prompt"] == "Help-desk request: {text}\nTopic:"
    first = _provenance(store, layout.round_folder(0), settings)
    assert first["iteration"] == 0 and first["teacher_examples_added"] == 0 and first["train_size"] == 18


def test_force_replaces_only_an_earlier_export(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "localaug_export.json").write_text("{}")
    check_target(earlier, force=True)
    with pytest.raises(UserError, match="pass --force"):
        check_target(earlier, force=False)
    check_target(tmp_path / "new", force=False)


def test_eval_backend_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from localaug.config import Settings

    plain = resolve(build_config(task="demo"))
    assert plain.eval_backend == "transformers"
    # The default leaves a run's identity as it was before the setting existed (old runs still resume):
    # the fingerprint of Settings as they were without the field is the same.
    now = plain.fingerprint()
    dump = Settings.model_dump
    monkeypatch.setattr(Settings, "model_dump", lambda self, **kw: {
        k: v for k, v in dump(self, **kw).items() if k != "eval_backend"})
    assert plain.fingerprint() == now
    monkeypatch.undo()
    fast = resolve(build_config(task="demo", eval_backend="llamacpp"))
    assert fast.fingerprint() != plain.fingerprint()
    res = CliRunner().invoke(main, ["run", "--task", "demo", "--eval-backend", "llamacpp", "--dry-run",
                                    "--out", str(tmp_path / "r")])
    assert res.exit_code == 0 and "score (llamacpp)" in res.output, res.output
    from localaug.backends import make_student

    with pytest.raises(UserError, match="needs a model-card student"):
        make_student("fake", {}, eval_backend="llamacpp")


def test_eval_backend_llamacpp_refuses_an_unconvertible_student_before_the_run(tmp_path: Path) -> None:
    """A Hugging Face student llama.cpp cannot run is named before the run directory exists, not after the first
    training stage (the conversion happens then)."""
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"]}))
    (weights / "model.safetensors").write_bytes(b"")  # never read: the architecture is refused first
    card = tmp_path / "s.yaml"
    card.write_text(f"source: {{hf_path: {weights}}}\n")
    out = tmp_path / "run"
    args = ["run", "--task", "demo", "--student", str(card), "--teacher", "fake", "--out", str(out)]
    res = CliRunner().invoke(main, [*args, "--eval-backend", "llamacpp"])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "MistralForCausalLM" in lines[0] and "eval_backend llamacpp" in lines[0], lines[0]
    assert not out.exists()
    # The same student with the default backend is not refused for that reason.
    res = CliRunner().invoke(main, [*args, "--dry-run"])
    assert res.exit_code == 0 and "MistralForCausalLM" not in res.output, res.output
