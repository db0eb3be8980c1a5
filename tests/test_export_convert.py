"""GGUF conversion of students from a Hugging Face folder, checked against transformers (the source of truth).

Tiny random Llama and Gemma 3 checkpoints (tests/tiny_models.py) go through localaug's converter (the gguf
package's tensor-name maps); llama.cpp loads them and its logits must point the way transformers' do
(cosine >= 0.999 at every position) and its tokenizer must give the same ids. A random peft LoRA on the
Llama, converted to a llama.cpp adapter and applied to the converted base, must do the same against peft.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import tiny_gemma3, tiny_llama  # also puts bench/ on sys.path (gpu_model)

from localaug.convert.arch import arch_for
from localaug.convert.gguf_model import write_gguf
from localaug.convert.lora import write_lora_gguf
from localaug.errors import UserError
from localaug.student.llamacpp_student import hf_tensors

TEXTS = ["Help-desk request: my order never arrived, I want a refund\nTopic: refund",
         "Wie geht's? ünïcödé 123  two spaces\tand a tab"]


def _llama(path: Path, lora: Path | None = None):  # noqa: ANN202
    import llama_cpp

    return llama_cpp.Llama(str(path), n_ctx=256, n_threads=2, verbose=False, logits_all=True,
                           lora_path=str(lora) if lora else None)


def _cosines(llm, model, tok) -> np.ndarray:  # noqa: ANN001
    """The cosine between llama.cpp's and transformers' next-token logits at every position of every text;
    the two tokenizers must agree on the ids."""
    out = []
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == ids, text
        llm.reset()
        llm.eval(ids)
        ours = np.array(llm.scores[: len(ids)], dtype=np.float64)
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].double().numpy()
        cos = (ours * ref).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(ref, axis=-1)
        out.append(cos)
    return np.concatenate(out)


def _assert_gguf_matches_transformers(hf_dir: Path, gguf_out: Path) -> None:
    """Convert a Hugging Face folder to GGUF; llama.cpp's next-token logits must match transformers' (cosine)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = _llama(write_gguf(gguf_out, hf_dir, hf_tensors(hf_dir)))
    try:
        cos = _cosines(llm, AutoModelForCausalLM.from_pretrained(hf_dir), AutoTokenizer.from_pretrained(hf_dir))
    finally:
        llm.close()
    assert cos.min() >= 0.999, cos


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def test_tiny_llama_from_hf_folder_matches_transformers(llama_dir: Path) -> None:
    _assert_gguf_matches_transformers(llama_dir, llama_dir / "model.gguf")


def test_gguf_fields_are_read_as_gguf_reads_them(llama_dir: Path, tmp_path: Path) -> None:
    """localaug's one-pass reader of a GGUF's key-value fields (what an export of the built-in student copies)
    against the gguf package's GGUFReader, on a converted tiny model: strings, string, int, float and bool
    arrays, scalars."""
    import gguf

    from localaug.convert.gguf_kv import read_fields

    path = write_gguf(tmp_path / "model.gguf", llama_dir, hf_tensors(llama_dir))
    reader = gguf.GGUFReader(path)
    theirs = []
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        kind, sub = int(f.types[0]), (int(f.types[-1]) if f.types[0] == gguf.GGUFValueType.ARRAY else None)
        parts = [bytes(f.parts[i]) if (sub or kind) == gguf.GGUFValueType.STRING else f.parts[i].tolist()[0]
                 for i in f.data]
        theirs.append((key, parts if sub is not None else parts[0], kind, sub))
    ours = [(f.key, f.value, f.type, f.sub_type) for f in read_fields(path)]
    assert {t for _, _, t, _ in ours} >= {int(gguf.GGUFValueType.ARRAY), int(gguf.GGUFValueType.STRING)}
    assert {s for *_, s in ours} >= {int(gguf.GGUFValueType.STRING), int(gguf.GGUFValueType.FLOAT32),
                                    int(gguf.GGUFValueType.INT32)}
    assert ours == theirs


def test_tiny_llama_lora_on_converted_base_matches_peft(llama_dir: Path, tmp_path: Path) -> None:
    """q and k rows are permuted for llama.cpp's rotary layout: the adapter's B must be permuted alike."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = llama_dir / "model.gguf"
    if not base.exists():
        write_gguf(base, llama_dir, hf_tensors(llama_dir))
    torch.manual_seed(3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(llama_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():  # peft's random init is small: make the adapter matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(2)
    model.save_pretrained(tmp_path / "adapter")
    lora = write_lora_gguf(tmp_path / "adapter", llama_dir, tmp_path / "adapter.gguf", dtype="f32")
    tok = AutoTokenizer.from_pretrained(llama_dir)
    model.eval()
    llm, plain = _llama(base, lora), _llama(base)
    try:
        cos = _cosines(llm, model, tok)
        without = _cosines(plain, model, tok)
    finally:
        llm.close()
        plain.close()
    # Random weights plus a large random adapter make a chaotic little network: a position near a tie can
    # part a little (seen: 0.9988 at 1 of 40), where a wrong layout parts everywhere (a cosine near 0.3).
    assert cos.mean() >= 0.999 and cos.min() >= 0.995, cos
    assert without.mean() < 0.99, f"the adapter changes too little for this test to tell: {without.mean()}"


def test_tiny_gemma3_from_hf_folder_matches_transformers(tmp_path: Path) -> None:
    """Gemma's norm offset (w + 1 in GGUF) and its SentencePiece-style BPE tokenizer from tokenizer.json."""
    from localaug.modelcards import load_model_card
    from localaug.student.weights import weights_dir

    gemma_dir = tiny_gemma3(tmp_path / "tiny-gemma", weights_dir(load_model_card("gemma3-270m"))[0])
    _assert_gguf_matches_transformers(gemma_dir, tmp_path / "model.gguf")


def test_other_architectures_are_one_line_naming_the_supported(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"]}))
    with pytest.raises(UserError) as e:
        arch_for(json.loads((tmp_path / "config.json").read_text()), tmp_path / "config.json")
    msg = str(e.value)
    assert "\n" not in msg and "MistralForCausalLM" in msg
    assert "LlamaForCausalLM" in msg and "Gemma3ForCausalLM" in msg


def test_a_tokenizer_llama_cpp_cannot_run_is_one_line(tmp_path: Path) -> None:
    """bench/gpu_model.py's word-level tokenizer has no llama.cpp counterpart."""
    from gpu_model import write_tokenizer

    from localaug.convert.tokenizer import tokenizer_kind

    write_tokenizer(tmp_path, 64)
    with pytest.raises(UserError) as e:
        tokenizer_kind(tmp_path)
    assert "\n" not in str(e.value) and "WordLevel" in str(e.value) and "tokenizer.json" in str(e.value)


def test_llamacpp_scoring_of_long_choices_matches_transformers(llama_dir: Path) -> None:
    """Choices of several tokens continue from a shared copy of their prompt's cache, in chunks of rows and
    groups of prompts (more rows than one chunk holds): each choice's summed log-probability must be
    transformers' (evaluate.score_batch), and so must the choice picked."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from localaug.protocols import EvalItem
    from localaug.student.evaluate import score_batch
    from localaug.student.llamacpp import LlamaCppEvaluator

    base = llama_dir / "model.gguf"
    if not base.exists():
        write_gguf(base, llama_dir, hf_tensors(llama_dir))
    tok = AutoTokenizer.from_pretrained(llama_dir)
    tok.pad_token = tok.eos_token
    choices = (" refund", " my parcel never came", " the app crashes on start", " a password reset link")
    texts = [json.loads(line)["text"] for line in
             (Path(__file__).resolve().parent.parent / "tasks" / "demo" / "test.jsonl").read_text().splitlines()]
    items = [EvalItem(f"Request: {t}\nTopic:", choices=choices) for t in texts[:20]]
    with torch.no_grad():
        ref = score_batch(AutoModelForCausalLM.from_pretrained(llama_dir), tok, items)
    ev = LlamaCppEvaluator(base, n_threads=2, batch_sequences=6)
    try:
        ours = ev.evaluate(items, lambda text, bos: tok(text, add_special_tokens=bos)["input_ids"])
    finally:
        ev.close()
    # f16 weights in the GGUF: sums of up to 7 log-probabilities (to -75) agree within 0.1% (seen: 0.05 at -75);
    # a wrong cache position or a missed token would be off by nats.
    for o, r in zip(ours, ref, strict=True):
        for a, b in zip(o.scores, r.scores, strict=True):
            assert abs(a - b) <= 0.002 * abs(b) + 0.02, (o.scores, r.scores)
    assert [o.choice_index for o in ours] == [r.choice_index for r in ref]
