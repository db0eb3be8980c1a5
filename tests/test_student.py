"""Fast tests of the student backend on a tiny random model built offline (no downloads, seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
import torch

from localaug.errors import UserError
from localaug.modelcards import StudentSection
from localaug.protocols import EvalItem, Student, TrainItem
from localaug.student import HFStudent, StudentPlan, load_student, model_load_kwargs, resolve_plan
from localaug.student.train import (
    IGNORE,
    LengthGroupedSampler,
    answer_only_loss,
    collate,
    encode_item,
    prepare_peft,
)

SENTENCES = [
    "Question: what colour is the sky?\nAnswer: blue",
    "Question: what colour is grass?\nAnswer: green",
    "Question: how many legs has a cat?\nAnswer: four",
    "the quick brown fox jumps over the lazy dog. A cat sat on the mat; the end.",
    "numbers 0 1 2 3 4 5 6 7 8 9 and words like human, location, entity, description.",
]


def _tiny_tokenizer(path: Path):  # noqa: ANN202 - transformers type
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(SENTENCES * 5, trainer)
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    tok.save_pretrained(path)
    return tok


def _tiny_model_dir(path: Path, arch: str = "gemma3", hidden: int = 32) -> Path:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    tok = _tiny_tokenizer(path)
    torch.manual_seed(0)
    common = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "gemma3":
        cfg = Gemma3TextConfig(head_dim=hidden // 2, sliding_window=4,
                               layer_types=["sliding_attention", "full_attention"], **common)
        model = Gemma3ForCausalLM(cfg)
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    with torch.no_grad():  # larger random weights: a less uniform, more discriminating toy model
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # noqa: ANN201
    # The toy model's ops are tiny: extra threads only add OpenMP sync cost (minutes on a loaded 2-core box).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_model_dir(tmp_path_factory.mktemp("tinyllama"), "llama")


def _student(path: Path, **kw) -> HFStudent:  # noqa: ANN003
    settings = dict(device="cpu", precision="fp32", epochs=2, batch_size=2, lr=5e-3, max_length=64, r=4,
                    alpha=8, dropout=0.0)
    settings.update(kw)
    return load_student(hf_path=str(path), **settings)


TRAIN = [TrainItem("Question: what colour is the sky?\nAnswer:", " blue"),
         TrainItem("Question: what colour is grass?\nAnswer:", " green"),
         TrainItem("Question: how many legs has a cat?\nAnswer:", " four"),
         TrainItem("the quick fox jumps over the dog. Answer:", " brown")]


# --------------------------------------------------------------------------- loading and plan


def test_protocol_and_identity(tiny_dir: Path) -> None:
    st = _student(tiny_dir)
    assert isinstance(st, Student)
    assert "hf:" in st.identity and "cpu/fp32/lora" in st.identity


def test_bad_inputs(tmp_path: Path, tiny_dir: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_student(hf_path=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="safetensors"):
        load_student(hf_path=str(tmp_path / "empty"))
    with pytest.raises(UserError, match="unknown student setting"):
        load_student(hf_path=str(tiny_dir), colour="blue")
    card = tmp_path / "card.yaml"
    card.write_text(f"name: x\nsource: {{hf_path: {tiny_dir}}}\nstudent: {{lora: {{rank: 4}}}}\n")
    with pytest.raises(UserError, match="unknown key") as e:
        load_student(card)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="unknown model card"):
        load_student("no-such-card")
    st = _student(tiny_dir)
    with pytest.raises(UserError, match="no training examples"):
        st.train([], tmp_path / "a", seed=0)
    with pytest.raises(UserError, match="adapter"):
        st.evaluate(tmp_path, [EvalItem("x", choices=(" a",))])


def test_plan_cpu_auto() -> None:
    with mock.patch("torch.cuda.is_available", return_value=False):
        auto = StudentSection(device="auto", precision="auto", quantization="auto")
        # CPU precision follows the CPU's native bf16 support (read from /proc/cpuinfo): both branches.
        with mock.patch("localaug.student.plan._cpu_has_bf16", return_value=True):
            assert resolve_plan(auto).precision == "bf16"
        with mock.patch("localaug.student.plan._cpu_has_bf16", return_value=False):
            plan = resolve_plan(auto)
        assert (plan.device, plan.quantization, plan.precision) == ("cpu", "none", "fp32")
        kw = model_load_kwargs(plan)
        assert "quantization_config" not in kw and "device_map" not in kw
        assert kw["use_safetensors"] is True and kw["trust_remote_code"] is False
        with pytest.raises(UserError, match="no CUDA"):
            resolve_plan(StudentSection(device="cuda"))
    plan = resolve_plan(StudentSection(), {"precision": "fp32", "epochs": 1, "r": 4, "lora": {"alpha": 2}})
    assert plan.train.epochs == 1 and plan.lora.r == 4 and plan.lora.alpha == 2
    assert plan.torch_dtype() == torch.float32


def test_plan_cuda_qlora_config() -> None:
    # No GPU here: only is_available is mocked; we check the 4-bit config we would hand to from_pretrained.
    with mock.patch("torch.cuda.is_available", return_value=True):
        plan = resolve_plan(StudentSection(device="auto", precision="auto", quantization="auto"))
    assert (plan.device, plan.precision, plan.quantization) == ("cuda", "bf16", "nf4")
    kw = model_load_kwargs(plan)
    q = kw["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert kw["dtype"] == torch.bfloat16 and kw["device_map"] == {"": 0} and kw["use_safetensors"]
    forced = resolve_plan(StudentSection(device="cpu", quantization="auto"))
    assert forced.quantization == "none"


def test_nf4_train_reloads_fresh(tiny_dir: Path, tmp_path: Path) -> None:
    """The QLoRA path must train from a fresh load (bitsandbytes repacking after inference)."""
    st = _student(tiny_dir)
    st.plan = StudentPlan(**{**st.plan.__dict__, "quantization": "nf4"})
    loads = []
    fp32 = _student(tiny_dir)

    def fake_load():  # an fp32 model stands in for the 4-bit one; we only count loads
        loads.append(1)
        return fp32._load_base()

    with mock.patch.object(st, "_load_base", fake_load), \
            mock.patch("peft.prepare_model_for_kbit_training", side_effect=lambda m, **k: m):
        st.evaluate(None, [EvalItem("Question:", choices=(" a", " b"))])
        st.train(TRAIN[:2], tmp_path / "ad", seed=0)
        st.train(TRAIN[:2], tmp_path / "ad2", seed=0)
    assert len(loads) == 3 and st._model is None


def test_real_4bit_on_cpu_trains_after_inference(tmp_path: Path) -> None:
    """Real bitsandbytes NF4 where installed (the `gpu` extra; its 4-bit layers also run on CPU): inference on
    the 4-bit model first (which repacks its weights), then training must still move every LoRA matrix.
    (This toy does not reproduce the lost gradients; test_student_real.py's 4-bit Gemma test does.)"""
    pytest.importorskip("bitsandbytes")
    d = _tiny_model_dir(tmp_path / "m", hidden=128)  # bitsandbytes packs 64-wide blocks
    st = _student(d, quantization="nf4", precision="bf16", epochs=2)
    items = [EvalItem(it.prompt, choices=(" blue", " green")) for it in TRAIN]
    st.evaluate(None, items)
    assert "Linear4bit" in type(st.base_model().model.layers[0].self_attn.q_proj).__name__
    st.train(TRAIN, tmp_path / "ad", seed=0)
    a = _adapter_tensors(tmp_path / "ad")
    assert a and all(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k), "LoRA grads were lost"
    assert len(st.evaluate(tmp_path / "ad", items)) == len(items)


# --------------------------------------------------------------------------- training


def test_masking_only_completion(tiny_dir: Path) -> None:
    st = _student(tiny_dir)
    tok = st.tokenizer
    e = encode_item(tok, TrainItem("Question: sky?\nAnswer:", " blue"), max_length=64)
    p = tok("Question: sky?\nAnswer:")["input_ids"]
    c = tok(" blue", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert e["input_ids"] == p + c
    assert e["labels"] == [IGNORE] * len(p) + c
    # truncation keeps BOS and the whole answer, cuts the prompt from the left
    e = encode_item(tok, TrainItem("word " * 50, " blue"), max_length=10)
    assert len(e["input_ids"]) == 10 and e["input_ids"][0] == tok.bos_token_id
    assert [x for x in e["labels"] if x != IGNORE] == c


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_answer_only_loss_equals_full_loss(arch: str, tiny_dir: Path, tiny_llama_dir: Path) -> None:
    st = _student(tiny_dir if arch == "gemma3" else tiny_llama_dir)
    batch = collate([encode_item(st.tokenizer, it, 64) for it in TRAIN], st.tokenizer.pad_token_id)
    m = st.base_model()
    with torch.no_grad():
        ours = answer_only_loss(m, batch["input_ids"], batch["attention_mask"], batch["labels"])
        ref = m(**batch).loss
    assert torch.allclose(ours, ref, atol=1e-5), (ours, ref)
    # and the prompt really is masked: changing a prompt-only label target changes nothing
    assert (batch["labels"][:, :3] == IGNORE).all()


def test_all_lora_params_get_gradients(tiny_dir: Path) -> None:
    st = _student(tiny_dir)
    pm = prepare_peft(st.base_model(), st.plan, seed=0)
    try:
        lora = {n: p for n, p in pm.named_parameters() if "lora_" in n}
        assert lora and all(p.requires_grad for p in lora.values())
        batch = collate([encode_item(st.tokenizer, it, 64) for it in TRAIN], st.tokenizer.pad_token_id)
        answer_only_loss(pm, batch["input_ids"], batch["attention_mask"], batch["labels"]).backward()
        missing = [n for n, p in lora.items() if p.grad is None]
        assert not missing, f"LoRA parameters without gradient: {missing[:5]}"
        # lora_B starts at zero, so lora_A's gradient is zero on step one; lora_B's must not be
        assert all(p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)
        assert not any(p.requires_grad for n, p in pm.named_parameters() if "lora_" not in n)
    finally:
        pm.unload()


def _adapter_tensors(d: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(d / "adapter_model.safetensors"))


def test_train_deterministic_from_base_and_roundtrip(tiny_dir: Path, tmp_path: Path) -> None:
    st = _student(tiny_dir, epochs=20, lr=5e-2, r=8)
    base = {k: v.clone() for k, v in st.base_model().state_dict().items()}
    seen = []
    s1 = st.train(TRAIN, tmp_path / "a1", seed=7, progress=lambda d, t, i: seen.append((d, t, i)))
    assert s1.steps == 40 and s1.train_tokens > 0 and s1.final_loss is not None and s1.peak_rss_mb
    assert seen and seen[-1][0] == seen[-1][1] == 40 and "loss" in seen[-1][2]
    assert all(v is not None for _, _, info in seen for v in info.values())  # a CLI formats them
    # base weights untouched, no LoRA layers left behind
    after = st.base_model().state_dict()
    assert after.keys() == base.keys() and all(torch.equal(after[k], base[k]) for k in base)
    a1 = _adapter_tensors(tmp_path / "a1")
    assert all(v.abs().sum() > 0 for k, v in a1.items() if "lora_B" in k), "a LoRA matrix never moved"
    # same seed, same student object (second call): bit-identical adapter -> trained from base, not continued
    st.train(TRAIN, tmp_path / "a2", seed=7)
    a2 = _adapter_tensors(tmp_path / "a2")
    assert a1.keys() == a2.keys() and all(torch.equal(a1[k], a2[k]) for k in a1)
    st.train(TRAIN, tmp_path / "a3", seed=8)
    a3 = _adapter_tensors(tmp_path / "a3")
    assert any(not torch.equal(a1[k], a3[k]) for k in a1)
    assert not list(tmp_path.glob(".a*")), "temp dirs left behind"
    meta = json.loads((tmp_path / "a1" / "localaug_train.json").read_text())
    assert meta["seed"] == 7

    # round trip: a fresh student loading the saved adapter predicts exactly the same
    items = [EvalItem(it.prompt, choices=(" blue", " green", " four", " brown")) for it in TRAIN]
    r1 = st.evaluate(tmp_path / "a1", items)
    r2 = _student(tiny_dir, epochs=20, lr=5e-2, r=8).evaluate(tmp_path / "a1", items)
    assert [r.scores for r in r1] == [r.scores for r in r2]
    # training worked: the trained answers win, and the base model differs from the adapted one
    assert [r.output for r in r1] == [it.completion for it in TRAIN]
    assert [r.scores for r in st.evaluate(None, items)] != [r.scores for r in r1]


def test_train_overwrites_adapter_atomically(tiny_dir: Path, tmp_path: Path) -> None:
    st = _student(tiny_dir, epochs=1)
    out = tmp_path / "ad"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    st.train(TRAIN[:2], out, seed=0)
    assert (out / "adapter_model.safetensors").is_file() and not (out / "stale.txt").exists()


def test_length_grouped_sampler() -> None:
    lengths = [5, 50, 6, 51, 7, 52, 8, 53, 9]
    s = LengthGroupedSampler(lengths, batch_size=2, seed=1)
    order = list(s)
    assert sorted(order) == list(range(9))
    batches = [order[i:i + 2] for i in range(0, 8, 2)]
    spread = sum(abs(lengths[a] - lengths[b]) for a, b in batches)
    assert spread <= 8  # pairs of similar lengths
    assert len(order) == len(s) and list(LengthGroupedSampler(lengths, 2, 1)) == order  # seeded
    big = LengthGroupedSampler(list(range(100)), batch_size=4, seed=0, mega=2)
    e1, e2 = list(big), list(big)
    assert e1 != e2 and sorted(e1) == sorted(e2) == list(range(100))  # each epoch reshuffles


# --------------------------------------------------------------------------- evaluation


def _brute_score(model, tok, prompt: str, choice: str) -> float:  # noqa: ANN001
    p = tok(prompt)["input_ids"]
    c = tok(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return float(sum(lp[len(p) - 1 + k, t] for k, t in enumerate(c)))


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_scoring_matches_brute_force(arch: str, tiny_dir: Path, tiny_llama_dir: Path) -> None:
    st = _student(tiny_dir if arch == "gemma3" else tiny_llama_dir, eval_batch_size=3)
    choices = (" blue", " green sky and the lazy dog", " four", " a cat sat on the mat")
    prompts = ["Question: what colour is the sky?\nAnswer:", "the quick", "numbers 0 1 2 3 4 5 6 7 and words:",
               "Question: how many legs has a cat?\nAnswer:"]
    items = [EvalItem(p, choices=choices) for p in prompts] + [EvalItem("the", choices=(" cat", " dog"))]
    res = st.evaluate(None, items)
    m = st.base_model()
    for it, r in zip(items, res, strict=True):
        brute = [_brute_score(m, st.tokenizer, it.prompt, c) for c in it.choices]
        assert r.scores == pytest.approx(brute, abs=1e-4)
        best, second = sorted(brute, reverse=True)[:2]
        if best - second > 1e-3:  # a near-tie may go either way on another CPU's kernels
            assert r.choice_index == max(range(len(brute)), key=brute.__getitem__)
        assert r.output == it.choices[r.choice_index]
    assert st.last_eval_info["scored"] == len(items)


def _clear_greedy_prefix(st: HFStudent, prompt: str, max_new_tokens: int, tol: float = 1e-3) -> tuple[str, int]:
    """(the text greedy decoding writes before its best token leads the next by less than `tol`, its tokens):
    the base model, one sequence, the whole sequence recomputed each step (no cache, no padding)."""
    m, tok = st.base_model(), st.tokenizer
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = m(input_ids=torch.cat([ids, torch.tensor([out], dtype=ids.dtype)], 1)).logits[0, -1].float()
            top = torch.topk(logits, 2)
            if float(top.values[0] - top.values[1]) < tol or int(top.indices[0]) == tok.eos_token_id:
                break
            out.append(int(top.indices[0]))
    return tok.decode(out, skip_special_tokens=True).rstrip("\ufffd"), len(out)


def test_generation_batched_stops_and_is_deterministic(tiny_dir: Path) -> None:
    st = _student(tiny_dir, eval_batch_size=4)
    prompts = ["Question: what colour is the sky?\nAnswer:", "the", "numbers 0 1 2", "a cat"]
    free = st.evaluate(None, [EvalItem(p, max_new_tokens=12) for p in prompts])
    assert all(len(r.output) > 0 for r in free) and all(r.choice_index is None for r in free)
    # batched and one by one agree (left padding and positions are right) until greedy decoding meets a
    # near-tie: the two are different kernels, and any CPU may break a tie its own way
    single = [st.evaluate(None, [EvalItem(p, max_new_tokens=12)])[0].output for p in prompts]
    clear = [_clear_greedy_prefix(st, p, 12) for p in prompts]
    for p, b, one, (prefix, _) in zip(prompts, free, single, clear, strict=True):
        assert b.output.startswith(prefix) and one.startswith(prefix), (p, prefix, b.output, one)
    assert sum(n for _, n in clear) >= 24, clear  # most steps are clear: the test compares something
    assert st.evaluate(None, [EvalItem(p, max_new_tokens=12) for p in prompts]) == free  # the same path twice
    # a stop string taken from the middle of the free text: output is cut right before it
    text = free[0].output
    stop = text[len(text) // 2: len(text) // 2 + 2]
    cut = st.evaluate(None, [EvalItem(prompts[0], max_new_tokens=12, stop=(stop,))])[0].output
    assert cut == text[: text.find(stop)]
    # mixed batch: scoring and generation come back in input order
    mixed = st.evaluate(None, [EvalItem(prompts[0], max_new_tokens=12), EvalItem("the", choices=(" a", " b"))])
    assert mixed[0].output == text and mixed[1].choice_index is not None


def test_a_prompt_longer_than_the_context_is_cut_not_run_whole(tiny_dir: Path) -> None:
    """A 1 MB prompt (a row no check stopped) is cut from its start to the student's max_length (64 here): the
    answer is the one for the prompt's last 64 tokens, and memory stays that of a short row."""
    from localaug.student.evaluate import prompt_ids

    st = _student(tiny_dir, eval_batch_size=2)
    tail = "Question: what colour is the sky?\nAnswer:"
    long, short = "the " * 250_000 + tail, "the " * 60 + tail
    ids = prompt_ids(st.tokenizer, long, 64)
    assert len(ids) == 64 and ids[0] == st.tokenizer.bos_token_id and ids == prompt_ids(st.tokenizer, short, 64)
    for item in (lambda p: EvalItem(p, choices=(" blue", " green")), lambda p: EvalItem(p, max_new_tokens=4)):
        assert st.evaluate(None, [item(long)]) == st.evaluate(None, [item(short)])


def test_generation_early_stop(tiny_dir: Path) -> None:
    """When every row has hit a stop string, decoding ends (fewer forward passes than max_new_tokens)."""
    st = _student(tiny_dir)
    prompts = ["the", "a cat"]
    free = st.evaluate(None, [EvalItem(p, max_new_tokens=40) for p in prompts])
    stops = tuple(r.output[:1] for r in free if r.output)  # each row stops at its first character
    m = st.base_model()
    calls = []
    hook = m.register_forward_hook(lambda *a: calls.append(1))
    try:
        st.evaluate(None, [EvalItem(p, max_new_tokens=40, stop=stops) for p in prompts])
    finally:
        hook.remove()
    assert len(calls) < 10


def test_max_steps_overrides_epochs(tiny_dir: Path, tmp_path: Path) -> None:
    """Step-matched controls train plain fine-tuning for as many optimizer steps as an augmented student."""
    st = _student(tiny_dir, epochs=20, max_steps=7)
    assert st.train(TRAIN, tmp_path / "a", seed=1).steps == 7
