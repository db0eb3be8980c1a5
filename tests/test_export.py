"""`localaug export` on a real demo run, each format checked against the source of truth, and the student
evaluated through llama.cpp (`eval_backend: llamacpp`) against the run's own transformers evaluation.

The run is conftest.py's `real_demo_run` (the Gemma 3 270M student, 16 seeds, one iteration, the first 50 demo
test rows, the fake teacher): its eval_test.jsonl holds localaug's own predictions.
- hf: the exported folder's logits equal base + adapter (peft) within 1e-4;
- gguf f16 in llama.cpp (its own tokenizer): >= 98% of the test predictions agree, accuracy within 1 point;
  llama.cpp's quantiser makes q4_k_m from it;
- lora-gguf on the student's base GGUF: the same agreement (and the base alone must disagree more, so the
  adapter is what agrees);
- the llama.cpp evaluation backend: the same agreement, and greedy generation agrees with transformers'.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from localaug.cli import main
from localaug.files import read_jsonl
from localaug.task import Example, load_task

pytestmark = pytest.mark.slow

# The bar: >= 98% of the predictions as localaug's, accuracy within 1 point. On 50 rows one row is 2
# points, so the accuracy bar is "within 1 point or one row", whichever is larger (on 120 rows: 1 point).
AGREE, ACC_POINTS = 0.98, 0.01
# A row where localaug's own scores put the label llama.cpp chose within this many nats of localaug's choice is
# a near tie: the Q4_K_M kernels (8-bit activations) may tip it either way on another CPU, so it is reported and
# not counted against the bar. Seen here: 1 of 50 rows, at 0.024 nat; every other row's gap was >= 0.1.
NEAR_TIE = 0.1


def _export(run: Path, out: Path, *args: str) -> Path:
    res = CliRunner().invoke(main, ["export", str(run), "--out", str(out), *args])
    assert res.exit_code == 0, res.output
    return out


def _test_rows(run: Path) -> tuple[list[Example], list[dict]]:
    test = [Example.from_json(r) for r in read_jsonl(run / "test.jsonl")]
    return test, read_jsonl(run / "iter_00" / "eval_test.jsonl")


def _near_tie(ref: dict, ours: str) -> bool:
    """Whether localaug's own record puts `ours` within NEAR_TIE of its own choice. The record's margin is the
    gold label's score minus the best other label's: the gap to the runner-up when localaug was right, the gap
    between its (wrong) choice and the gold label when it was wrong."""
    if ref["correct"]:
        return ours == ref["runner_up"] and ref["margin"] < NEAR_TIE
    return ours == ref["gold"] and -ref["margin"] < NEAR_TIE


def _assert_agrees(results: list, run: Path, what: str) -> None:
    """>= 98% of the predictions as localaug's and the accuracy within the bar, near ties not counted."""
    test, ref = _test_rows(run)
    judged = load_task("demo").judge_all(test, results)
    differ = [(r, o["prediction"]) for o, r in zip(judged.rows, ref, strict=True) if o["prediction"] != r["prediction"]]
    ties = [(r["id"], r["margin"]) for r, ours in differ if _near_tie(r, ours)]
    n = len(ref)
    ref_acc = sum(r["correct"] for r in ref) / n
    print(f"{what}: {n - len(differ)} of {n} test predictions as localaug's (near ties among the others: {ties}); "
          f"accuracy {judged.accuracy:.1%} vs {ref_acc:.1%}")
    assert (n - len(differ) + len(ties)) / n >= AGREE, (what, differ)
    assert abs(judged.accuracy - ref_acc) <= max(ACC_POINTS, 1 / n) + len(ties) / n + 1e-9, (what, differ)


def _score_in_llamacpp(gguf: Path, run: Path, lora: Path | None = None) -> list:
    """The demo's test rows scored in llama.cpp with the GGUF's own tokenizer (what a user of the file gets)."""
    from localaug.student.llamacpp import LlamaCppEvaluator

    task = load_task("demo")
    items = [task.eval_item(e, "score") for e in _test_rows(run)[0]]
    ev = LlamaCppEvaluator(gguf, batch_sequences=16)
    try:
        return ev.evaluate(items, lambda text, bos: ev.llm.tokenize(text.encode(), add_bos=bos, special=False), lora)
    finally:
        ev.close()


def test_hf_export_equals_base_plus_adapter(real_demo_run: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = _export(real_demo_run, tmp_path / "hf", "--format", "hf")
    try:
        for name in ("model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "MODEL_CARD.md",
                     "adapter/adapter_model.safetensors"):
            assert (out / name).is_file(), name
        meta = json.loads((out / "localaug_export.json").read_text())
        manifest = json.loads((real_demo_run / "manifest.json").read_text())  # as a user's program reads it
        assert meta["format"] == "hf" and meta["quantization"] is None and meta["iteration"] == 0
        assert meta["task"] == "demo" and meta["seed_size"] == 16 and meta["teacher_examples_added"] == 0
        assert meta["final_accuracy"] == manifest["iterations"]["00"]["test_accuracy"] == meta["plain_accuracy"]
        assert len(meta["base_model"]["sha256"]) == 64 and meta["localaug_version"]
        tok = AutoTokenizer.from_pretrained(out)
        exported = AutoModelForCausalLM.from_pretrained(out)
        from localaug.modelcards import load_model_card
        from localaug.student.weights import weights_dir

        base = AutoModelForCausalLM.from_pretrained(weights_dir(load_model_card("gemma3-270m"))[0])
        prompts = ["Help-desk request: I was charged twice this month\nTopic:",
                   "Help-desk request: the app crashes when I open settings\nTopic:",
                   "Help-desk request: where is my parcel?\nTopic:"]
        with torch.no_grad():
            plain = [base(tok(p, return_tensors="pt").input_ids).logits for p in prompts]
            tuned_model = PeftModel.from_pretrained(base, str(real_demo_run / "iter_00" / "adapter"))
            tuned = [tuned_model(tok(p, return_tensors="pt").input_ids).logits for p in prompts]
            ours = [exported(tok(p, return_tensors="pt").input_ids).logits for p in prompts]
        assert max(float((t - p).abs().max()) for t, p in zip(tuned, plain, strict=True)) > 0.1  # the adapter matters
        for t, o in zip(tuned, ours, strict=True):
            assert torch.allclose(t, o, atol=1e-4), float((t - o).abs().max())
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_gguf_f16_export_agrees_with_localaug_scoring(real_demo_run: Path, tmp_path: Path) -> None:
    from localaug.convert.gguf_kv import read_fields
    from localaug.export.quantize import quantize

    out = _export(real_demo_run, tmp_path / "gguf", "--format", "gguf")
    try:
        model = out / "student-f16.gguf"
        meta = json.loads((out / "localaug_export.json").read_text())
        assert meta["format"] == "gguf" and meta["quantization"] == "f16" and (out / "MODEL_CARD.md").is_file()
        _assert_agrees(_score_in_llamacpp(model, real_demo_run), real_demo_run, "gguf f16")
        q = quantize(model, tmp_path / "student-q4_k_m.gguf", "q4_k_m")  # llama.cpp's own quantiser
        fields = {f.key: f.value for f in read_fields(q)}
        assert fields["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        assert q.stat().st_size < model.stat().st_size / 2
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_lora_gguf_on_the_base_gguf_agrees_with_localaug_scoring(real_demo_run: Path, tmp_path: Path) -> None:
    from localaug.modelcards import load_model_card

    out = _export(real_demo_run, tmp_path / "lora", "--format", "lora-gguf")
    base = load_model_card("gemma3-270m").gguf_file()
    meta = json.loads((out / "localaug_export.json").read_text())
    assert meta["base_model"]["file"] == base.name and meta["format"] == "lora-gguf"
    tuned = _score_in_llamacpp(base, real_demo_run, out / "adapter-f32.gguf")
    _assert_agrees(tuned, real_demo_run, "lora-gguf")
    alone = _score_in_llamacpp(base, real_demo_run)  # the adapter must be what makes llama.cpp agree
    moved = sum(a.output != b.output for a, b in zip(alone, tuned, strict=True))
    print(f"lora-gguf: the adapter changes {moved} of {len(tuned)} predictions of the base GGUF")
    assert moved >= 3


def test_llamacpp_eval_backend_agrees_with_transformers(real_demo_run: Path) -> None:
    from localaug.backends import make_student

    task = load_task("demo")
    test, _ = _test_rows(real_demo_run)
    adapter = real_demo_run / "iter_00" / "adapter"
    student = make_student("gemma3-270m", {}, eval_backend="llamacpp")
    assert student.identity.endswith("eval:llama.cpp-f16")  # an f16 GGUF of the weights it trains on
    scored = student.evaluate(adapter, [task.eval_item(e, "score") for e in test])
    _assert_agrees(scored, real_demo_run, "eval_backend llamacpp (scoring)")
    # Greedy generation (the maths path): the same answers as transformers', each cut at its stop string.
    # A near tie can part greedy decoding (seen: " bug" vs " language" on 1 of 24 rows): a tolerance of 1 row.
    rows = test[:8]
    items = [task.eval_item(e, "generate") for e in rows]
    ours, theirs = student.evaluate(adapter, items), student.inner.evaluate(adapter, items)
    a, b = task.judge_all(rows, ours), task.judge_all(rows, theirs)
    same = sum(x["prediction"] == y["prediction"] for x, y in zip(a.rows, b.rows, strict=True))
    print(f"eval_backend llamacpp (generation): {same} of {len(rows)} answers as transformers'")
    assert all("\n" not in r.output for r in ours), [r.output for r in ours]
    assert same >= len(rows) - 1, [(x.output, y.output) for x, y in zip(ours, theirs, strict=True)]
