"""bench/gpu_check.py, run for real on its tiny shape on CPU (bitsandbytes' CPU 4-bit path), so that the script
that is meant for a GPU cannot rot between the rare runs that have one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STEPS = 2  # one warm-up step and one timed step
Run = tuple[subprocess.CompletedProcess[str], dict]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    pytest.importorskip("bitsandbytes", reason="the 4-bit path needs bitsandbytes (the gpu extra; CI installs it)")
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "gpu_check.json"
    # One thread: the toy's ops are tiny, and extra threads only spin on a shared 2-core machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--shape", "tiny", "--device", "cpu",
         "--steps", str(STEPS), "--gen-tokens", "16", "--workdir", str(tmp / "work"), "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"gpu_check failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc, json.loads(out.read_text())


def test_checks_pass_and_the_card_is_followed(tiny_run: Run) -> None:
    _, res = tiny_run
    assert res["ok"] is True
    assert res["checks"] and all(res["checks"].values()), res["checks"]
    # The llama2-7b-qlora card's own settings, with only the weights source and the device overridden.
    assert res["card"] == "llama2-7b-qlora"
    assert set(res["overrides"]) == {"hf_path", "epochs", "device"}
    plan = res["plan"]
    assert (plan["device"], plan["precision"], plan["quantization"]) == ("cpu", "bf16", "nf4")
    assert plan["lora"]["r"] == 16 and plan["lora"]["target_modules"] == "all-linear"
    assert (plan["train"]["batch_size"], plan["train"]["grad_accum"], plan["train"]["max_length"]) == (4, 4, 512)
    assert "qlora-nf4" in res["identity"]


def test_really_4bit_and_at_the_cards_batch_and_length(tiny_run: Run) -> None:
    _, res = tiny_run
    q = res["quant"]
    layers = res["config"]["num_hidden_layers"]
    assert q["linear4bit"] == 7 * layers and q["other_linear"] == 1  # only the output layer stays unquantised
    assert (q["quant_type"], q["double_quant"], q["compute_dtype"]) == ("nf4", True, "bfloat16")
    t = res["train"]
    assert t["steps"] == STEPS and t["tokens_per_step"] == 4 * 4 * 512
    assert t["train_tokens"] == STEPS * 4 * 4 * 512  # every row is exactly max_length tokens: no padding
    assert len(t["step_s"]) == STEPS - 1 and t["step_s_median"] > 0 and t["tokens_per_s"] > 0
    assert len(t["losses"]) == STEPS
    assert res["checkpoint"]["shards"] > 1  # the same sharded format (index file) as the 7B checkpoint
    # embeddings + output layer, 2 layers of attention + MLP + 2 norms, the final norm
    assert res["checkpoint"]["params"] == 2 * 512 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64
    e = res["eval"]
    assert e["score"]["prompts"] == 16 and e["generate"]["rows"] == 16 and e["generate"]["new_tokens"] > 0
    assert res["memory"]["peak_gib"] > 0 and res["memory"]["phases"]


def test_report_says_random_weights_and_versions(tiny_run: Run) -> None:
    proc, res = tiny_run
    import bitsandbytes
    import torch

    assert "WEIGHTS ARE RANDOM" in res["weights"]
    report = proc.stdout[proc.stdout.index("== gpu_check:"):]
    assert "WEIGHTS ARE RANDOM" in report and "checks: all passed" in report
    assert f"bitsandbytes {bitsandbytes.__version__}" in report and f"torch {torch.__version__}" in report
    for what in ("tokens/s", "peak", "step", "Linear4bit", "nf4"):
        assert what in report, what
    assert res["versions"]["bitsandbytes"] == bitsandbytes.__version__
    # The same report as a GPU run would print it (the GPU-only fields, made up here).
    mod = _module()
    mem = mod.Mem(cuda=True)
    mem.phases = {"train": {"peak_allocated_gib": 7.5, "peak_reserved_gib": 9.0}}
    gpu = {**res, "memory": mem.summary(), "versions": {**res["versions"], "gpu": "NVIDIA H100 80GB HBM3"}}
    text = mod.report(gpu)
    assert "peak 9.0 GiB (allocated 7.5 GiB); fits a 24 GB card: yes" in text and "H100" in text


def _module():  # noqa: ANN202 - the script, imported by path (bench/ is no package)
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_24gb_verdict() -> None:
    """The GPU-only memory summary, fed made-up allocator peaks (GiB)."""
    mem = _module().Mem(cuda=True)
    verdicts = []
    for reserved, allocated in ((9.0, 7.5), (23.5, 19.0), (26.0, 23.0)):
        mem.phases = {"train": {"peak_allocated_gib": 3.0, "peak_reserved_gib": 4.0},
                      "scoring": {"peak_allocated_gib": allocated, "peak_reserved_gib": reserved}}
        s = mem.summary()
        assert (s["peak_gib"], s["peak_allocated_gib"]) == (reserved, allocated)
        verdicts.append(s["fits_24gb_card"])
    assert verdicts == ["yes", "tight", "no"]


def test_items_are_exactly_max_length_tokens(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    mod = _module()
    mod.write_tokenizer(tmp_path, 32000)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == 32000 and tok.pad_token_id is None  # like Llama-2's: the student falls back to EOS
    items = mod.make_items(3, 2, 512, 32000, seed=0)
    for it in items["train"]:
        p = tok(it.prompt)["input_ids"]
        c = tok(it.completion, add_special_tokens=False)["input_ids"]
        assert len(p) + len(c) + 1 == 512 and p[0] == tok.bos_token_id  # + EOS
    assert len({it.completion for it in items["train"]}) == 1  # one answer to learn
    assert all(len(set(it.choices)) == 4 for it in items["score"])


def test_refuses_the_7b_shape_without_a_gpu() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--shape", "llama2-7b",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0 and "needs a CUDA GPU" in proc.stderr, proc.stderr
