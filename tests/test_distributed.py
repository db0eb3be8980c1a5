"""The student on several processes, for real: torchrun with 2 gloo workers on CPU, one thread each, training a tiny
random Llama (bench/gpu_model.py's `tiny` shape) through the same HFStudent a run uses.

A launch costs two Python processes importing torch + transformers + peft (seconds each), so the tests share
launches: two in the equivalence test, two for the failing workers (driven through the student, as a training
stage calls it), three in the `localaug run` sequence (reference, killed driver, resume). The runs train one
iteration: a second would add a launch per run and no new path (the same training stage with more rows).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import torch

from localaug.errors import UserError
from localaug.modelcards import StudentSection
from localaug.protocols import TrainItem
from localaug.student import HFStudent, load_student, model_load_kwargs, resolve_plan
from localaug.student.distributed import launch_command
from localaug.student.train import fsdp_environment, prepare_peft, training_kwargs
from tests.conftest import plugin_env

REPO = Path(__file__).resolve().parent.parent


def _gpu_model():  # noqa: ANN202 - a module loaded by path (bench/ is a folder of scripts)
    spec = importlib.util.spec_from_file_location("gpu_model", REPO / "bench" / "gpu_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gm = _gpu_model()
    d = tmp_path_factory.mktemp("tiny-llama")
    gm.write_random_checkpoint(gm.llama_config("tiny"), d, "cpu", seed=0, shard_gib=1.0)
    return d


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # noqa: ANN201
    # One thread per process (the workers read OMP_NUM_THREADS): the toy's ops are tiny, extra threads only spin.
    threads, old = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old


def _items(n: int, seed: int = 0) -> list[TrainItem]:
    rng = random.Random(seed)
    words = lambda k, hi: " ".join(f"w{rng.randrange(3, hi)}" for _ in range(k))  # noqa: E731
    return [TrainItem(words(rng.randrange(4, 12), 512), " " + words(3, 24)) for _ in range(n)]


def _lora(adapter: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_processes_equal_one_with_accumulation(tiny_dir: Path, tmp_path: Path) -> None:
    """2 processes x batch 4 x accumulation 1 == 1 process x batch 4 x accumulation 2: the same batches make each
    optimizer step, and DDP averages the two ranks' gradients as accumulation averages the two micro-batches.
    LoRA dropout is 0: with dropout each rank would draw other masks than one process does.

    FSDP too, on CPU: a user's plan is refused there (it needs CUDA), but its mechanics run with gloo, so the
    sharded training and the LoRA weights gathered for rank 0 to write are checked the same way. It is launched
    through a user's `launcher` line: a c10d rendezvous, as on several machines, here on one."""
    items = _items(16)
    common = {"hf_path": str(tiny_dir), "device": "cpu", "precision": "fp32", "epochs": 2, "batch_size": 4,
              "lr": 1e-2, "r": 4, "dropout": 0.0}
    two = load_student(**common, grad_accum=1, processes=2).train(items, tmp_path / "two" / "adapter", seed=3)
    ddp_student = load_student(**common, grad_accum=1, processes=2)
    launcher = (f"{sys.executable} -m torch.distributed.run --nnodes 1 --nproc_per_node 2 --rdzv-backend c10d "
                "--rdzv-endpoint 127.0.0.1:0 --rdzv-id fsdp-test")
    fsdp_plan = dataclasses.replace(ddp_student.plan, fsdp=True, launcher=launcher)
    fsdp_student = HFStudent(ddp_student.model_dir, fsdp_plan, "tiny")
    fsdp = fsdp_student.train(items, tmp_path / "fsdp" / "adapter", seed=3)
    one_student = load_student(**common, grad_accum=2)
    one = one_student.train(items, tmp_path / "one" / "adapter", seed=3)
    # Negative control: the same single process without accumulation takes other steps, so it must differ.
    control = load_student(**common, grad_accum=1).train(items, tmp_path / "control" / "adapter", seed=3)

    initial = prepare_peft(one_student.base_model(), one_student.plan, seed=3)
    from peft import get_peft_model_state_dict

    init = {k: v.detach().clone() for k, v in get_peft_model_state_dict(initial).items()}
    initial.unload()

    lt, lf, lo, lc = two.extra["losses"], fsdp.extra["losses"], one.extra["losses"], control.extra["losses"]
    a2, af, a1, ac = (_lora(tmp_path / name / "adapter") for name in ("two", "fsdp", "one", "control"))
    for name, losses, tensors in (("DDP", lt, a2), ("FSDP", lf, af)):
        print(f"equivalence, {name} 2 x 4 x 1 vs 1 x 4 x 2: {len(losses)} steps, max loss difference "
              f"{max(abs(x - y) for x, y in zip(losses, lo, strict=True)):.3g}, max LoRA tensor difference "
              f"{_max_diff(tensors, a1):.3g}")
    print(f"LoRA moved from init by {_max_diff(a1, init):.3g}; the control differs by {_max_diff(ac, a1):.3g}")
    assert two.processes == fsdp.processes == 2 and one.processes == 1
    assert two.steps == fsdp.steps == one.steps == len(lt) == 4
    for losses, tensors in ((lt, a2), (lf, af)):
        assert torch.allclose(torch.tensor(losses), torch.tensor(lo), rtol=1e-4, atol=0)
        assert all(torch.allclose(tensors[k], a1[k], rtol=0, atol=1e-5) for k in a1)
    assert _max_diff(a1, init) > 1e-3  # the LoRA weights really trained
    # The control breaks both equalities: the comparison above can fail.
    assert not torch.allclose(torch.tensor(lc[:len(lo)]), torch.tensor(lo), rtol=1e-4, atol=0)
    assert not all(torch.allclose(ac[k], a1[k], rtol=0, atol=1e-5) for k in a1)
    # One adapter, written once (rank 0) through the atomic folder; of the job only the logs stay.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["adapter", "train_workers"]
    assert sorted(p.name for p in (tmp_path / "two" / "train_workers").iterdir()) == [
        "launcher.log", "rank0.log", "rank1.log"]
    meta = json.loads((tmp_path / "two" / "adapter" / "localaug_train.json").read_text())
    assert meta["stats"]["processes"] == 2


def test_fsdp_settings_and_cpu_refusal(tiny_dir: Path) -> None:
    """FSDP + QLoRA needs CUDA GPUs, which this machine has not: the settings the worker builds are checked here,
    the training itself is left to bench/gpu_check.py --processes N on a multi-GPU machine."""
    with pytest.raises(UserError) as e:
        resolve_plan(StudentSection(fsdp=True), {"device": "cpu"})
    assert e.value.field == "student.fsdp" and "CUDA" in str(e.value) and "\n" not in str(e.value)
    with mock.patch("torch.cuda.is_available", return_value=True), mock.patch("torch.cuda.device_count",
                                                                              return_value=4):
        plan = resolve_plan(StudentSection(fsdp=True, processes=4))
        with pytest.raises(UserError, match="processes: 8 asks for a GPU each, but this machine has 4"):
            resolve_plan(StudentSection(processes=8))
    assert (plan.device, plan.precision, plan.quantization, plan.distributed) == ("cuda", "bf16", "nf4", True)
    load = model_load_kwargs(plan, for_training=True)
    q = load["quantization_config"]
    # 4-bit weights stored in bf16, the model's own dtype: FSDP flattens and shards them with the rest.
    assert q.load_in_4bit and q.bnb_4bit_quant_storage == torch.bfloat16 == load["dtype"] == q.bnb_4bit_compute_dtype
    assert "device_map" not in load  # FSDP places the shards
    assert model_load_kwargs(plan)["device_map"] == "auto"  # the driver's evaluation copy spans the GPUs
    kw = training_kwargs(plan, "out", seed=0, distributed=True)
    assert kw["fsdp"] is True and kw["ddp_backend"] == "nccl" and kw["bf16"]
    assert kw["fsdp_config"]["version"] == 1 and kw["fsdp_config"]["use_orig_params"] is False
    assert kw["fsdp_config"]["activation_checkpointing"] and not kw["activation_checkpointing"]
    assert fsdp_environment(plan) == {"ACCELERATE_USE_FSDP": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}
    assert kw["fsdp_config"]["sync_module_states"] and kw["fsdp_config"]["cpu_ram_efficient_loading"]
    # transformers accepts the FSDP settings (its own parse of fsdp_config into accelerate's plugin arguments).
    from transformers import TrainingArguments

    args = TrainingArguments(**{**kw, "bf16": False, "ddp_backend": None, "use_cpu": True})
    assert args.fsdp and args.fsdp_config["use_orig_params"] is False and args.fsdp_config["version"] == 1
    # The LoRA layers stay in the storage dtype (no fp32 upcast), all trainable, on a bf16 model.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.bfloat16)
    peft_model = prepare_peft(model, plan, seed=0)
    lora = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert lora and all(p.dtype == torch.bfloat16 and p.requires_grad for p in lora.values())
    assert not any(p.requires_grad for n, p in peft_model.named_parameters() if "lora_" not in n)
    # DDP on the same plan (no fsdp): one whole model per GPU, the default launch line.
    ddp = resolve_plan(StudentSection(processes=4), {"device": "cpu"})
    assert launch_command(ddp, Path("j.json"))[1:] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m", "localaug.student.worker",
        "j.json"]
    multi = resolve_plan(StudentSection(launcher="torchrun --nnodes 2 --rdzv-endpoint 'head:29500'"), {"device": "cpu"})
    assert multi.distributed and launch_command(multi, Path("j.json")) == [
        "torchrun", "--nnodes", "2", "--rdzv-endpoint", "head:29500", "-m", "localaug.student.worker", "j.json"]


def test_a_launcher_that_is_not_there_is_one_line(tiny_dir: Path, tmp_path: Path) -> None:
    st = load_student(hf_path=str(tiny_dir), device="cpu", launcher="no-such-launcher --nnodes 2")
    with pytest.raises(UserError) as e:
        st.train(_items(4), tmp_path / "adapter", seed=0)
    assert e.value.field == "student.launcher" and "'no-such-launcher'" in str(e.value)
    assert not (tmp_path / "adapter").exists()


def test_a_failing_or_killed_worker_is_one_line_naming_its_rank_and_log(tiny_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank that raises: one line naming it and its log, where its traceback is. A rank killed without a word
    (as by the OOM killer): torchrun's summary names it. Neither leaves an adapter behind; `localaug run` prints
    such an error as its one line, exit 2, and does not mark the stage (a stage is marked only when it returns)."""
    st = load_student(hf_path=str(tiny_dir), device="cpu", precision="fp32", epochs=1, batch_size=4, lr=1e-2, r=4,
                      dropout=0.0, processes=2)
    out = tmp_path / "iter_00" / "adapter"
    log = tmp_path / "iter_00" / "train_workers" / "rank1.log"
    monkeypatch.setenv("LOCALAUG_FAILPOINT", "worker:rank1")
    with pytest.raises(UserError) as e:
        st.train(_items(12), out, seed=0)
    said = str(e.value)
    assert "\n" not in said and "rank 1" in said and str(log) in said, said
    assert "RuntimeError: failpoint worker:rank1" in log.read_text()
    assert not out.exists()
    monkeypatch.setenv("LOCALAUG_FAILPOINT", "worker:rank1:kill")
    with pytest.raises(UserError) as e:
        st.train(_items(12), out, seed=0)
    said = str(e.value)
    assert "\n" not in said and "rank 1 died (killed by signal 9)" in said and str(log) in said, said
    assert not out.exists()


# --------------------------------------------------------------------------- `localaug run`, end to end


def _card(tmp: Path, tiny_dir: Path) -> Path:
    card = tmp / "tiny.yaml"
    card.write_text(f"name: tiny\nsource: {{hf_path: {tiny_dir}}}\nstudent:\n  device: cpu\n  precision: fp32\n"
                    "  lora: {r: 4, dropout: 0.0}\n  train: {epochs: 1, batch_size: 4, lr: 1.0e-2}\n")
    return card


def _run(tmp: Path, name: str, card: Path, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = plugin_env(OMP_NUM_THREADS="1")  # the fake teacher, an installed plug-in (tests/plugins)
    if failpoint:
        env["LOCALAUG_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "localaug.cli", "run", "--task", "demo", "--student-processes", "2",
           "--student", str(card), "--teacher", "fake", "--recipe", "paper", "--iterations", "1",
           "--seed-size", "12", "--test-size", "8", "--cache", str(tmp / f"{name}.sqlite"), "--out", str(tmp / name)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited (its parent, gone, no longer waits for it)


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and p.name != ".lock"}


def test_run_on_two_processes_fails_cleanly_and_resumes(tiny_dir: Path, tmp_path: Path) -> None:
    card = _card(tmp_path, tiny_dir)
    ref = _run(tmp_path, "ref", card)
    assert ref.returncode == 0, ref.stderr[-3000:]
    manifest = json.loads((tmp_path / "ref" / "manifest.json").read_text())
    d = tmp_path / "ref" / "iter_00"
    assert [p.name for p in d.iterdir() if "adapter" in p.name] == ["adapter"]  # one, and no temp folders
    assert sorted(p.name for p in (d / "train_workers").iterdir()) == ["launcher.log", "rank0.log", "rank1.log"]
    assert not [p for p in (tmp_path / "ref").rglob(".*") if p.name != ".lock"]
    trains = [v for k, v in manifest["stages"].items() if k.endswith("/train")]
    assert len(trains) == 1 and trains[0]["processes"] == 2, manifest["stages"]
    assert (tmp_path / "ref" / "iter_00" / "eval_test.jsonl").is_file()  # the driver evaluated what they trained

    # The driver killed (-9) while its workers train: no worker outlives it.
    killed = _run(tmp_path, "k", card, "workers:iter_00")
    assert killed.returncode == -9, killed.stderr[-3000:]
    folder = tmp_path / "k" / "iter_00" / "train_workers"
    pids = [int((folder / "launcher.pid").read_text())] + [
        json.loads(p.read_text().splitlines()[0])["pid"] for p in folder.glob("rank*.progress.jsonl")]
    assert len(pids) == 3
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)], "workers outlived the driver"

    # The same command resumes at that stage and ends with the reference's files.
    resumed = _run(tmp_path, "k", card)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _files(tmp_path / "k") == _files(tmp_path / "ref")
    for rel in sorted(_files(tmp_path / "ref")):
        if rel.endswith(".jsonl"):
            assert (tmp_path / "k" / rel).read_bytes() == (tmp_path / "ref" / rel).read_bytes(), rel
    assert _max_diff(_lora(tmp_path / "k" / "iter_00" / "adapter"), _lora(d / "adapter")) < 1e-6
