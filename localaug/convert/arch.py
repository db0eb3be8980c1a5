"""The architectures localaug writes as GGUF: hyperparameters, tensor names and tensor layouts.

Names come from the gguf package's own maps (`gguf.get_tensor_name_map`, `MODEL_ARCH`), so a tensor gets
the name llama.cpp looks for. The layout changes are those of llama.cpp's convert_hf_to_gguf.py:
- Llama: q and k projections are permuted from Hugging Face's rotary layout (halves) to llama.cpp's
  (interleaved pairs); a LoRA's B matrix of q/k is permuted the same way (its rows are the output rows).
- Gemma 3: Hugging Face stores RMSNorm weights as w where the model multiplies by (1 + w); llama.cpp
  multiplies by the stored value, so every norm weight is stored as w + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class Arch:
    hf_class: str  # config.json "architectures"[0]
    model_arch: Any  # gguf.MODEL_ARCH member

    @property
    def name(self) -> str:
        import gguf

        return gguf.MODEL_ARCH_NAMES[self.model_arch]


def _supported() -> dict[str, Arch]:
    import gguf

    return {"LlamaForCausalLM": Arch("LlamaForCausalLM", gguf.MODEL_ARCH.LLAMA),
            "Gemma3ForCausalLM": Arch("Gemma3ForCausalLM", gguf.MODEL_ARCH.GEMMA3)}


def arch_for(config: dict[str, Any], where: Any = None) -> Arch:
    """The supported architecture of a Hugging Face config, or one line naming the supported ones."""
    supported = _supported()
    # A config saved without a model has no "architectures"; its model_type names the causal LM then.
    by_type = {"llama": "LlamaForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}
    archs = config.get("architectures") or [by_type.get(config.get("model_type", ""), "")]
    for a in archs:
        if a in supported:
            return supported[a]
    raise UserError(f"GGUF conversion supports {', '.join(supported)} (this model is "
                    f"{', '.join(archs) or config.get('model_type', 'unknown')}); export --format hf instead",
                    file=where, field="architectures")


def n_blocks(config: dict[str, Any]) -> int:
    return int(config["num_hidden_layers"])


def gguf_name(arch: Arch, config: dict[str, Any], hf_name: str) -> str | None:
    """The GGUF name of a Hugging Face tensor name (None: no counterpart in the map)."""
    import gguf

    tmap = gguf.get_tensor_name_map(arch.model_arch, n_blocks(config))
    return tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))


def _permute(w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """Hugging Face's rotary halves -> llama.cpp's interleaved pairs (convert_hf_to_gguf LlamaModel.permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _qk_heads(config: dict[str, Any], name: str) -> tuple[int, int] | None:
    n_head = int(config["num_attention_heads"])
    if name.endswith("attn_q.weight"):
        return n_head, n_head
    if name.endswith("attn_k.weight"):
        return n_head, int(config.get("num_key_value_heads") or n_head)
    return None


def to_gguf_layout(arch: Arch, config: dict[str, Any], name: str, w: np.ndarray) -> np.ndarray:
    """A base weight in llama.cpp's layout (`name` is its GGUF name)."""
    import gguf

    if arch.model_arch == gguf.MODEL_ARCH.LLAMA and (heads := _qk_heads(config, name)):
        return _permute(w, *heads)
    if arch.model_arch == gguf.MODEL_ARCH.GEMMA3 and name.endswith("norm.weight"):
        return w + 1
    return w


def lora_b_to_gguf_layout(arch: Arch, config: dict[str, Any], base_name: str, b: np.ndarray) -> np.ndarray:
    """A LoRA B matrix (out x r) for the base weight `base_name`, in llama.cpp's layout."""
    import gguf

    if arch.model_arch == gguf.MODEL_ARCH.LLAMA and (heads := _qk_heads(config, base_name)):
        return _permute(b, *heads)
    return b


def _rope(config: dict[str, Any], layer_type: str | None = None) -> dict[str, Any]:
    """Rotary settings from a transformers 5 config (`rope_parameters`, per layer type for Gemma 3) or an
    older one (`rope_theta`, `rope_scaling`)."""
    rp = config.get("rope_parameters")
    if isinstance(rp, dict) and layer_type and isinstance(rp.get(layer_type), dict):
        rp = rp[layer_type]
    if not isinstance(rp, dict) or "rope_theta" not in rp:
        rp = {"rope_theta": config.get("rope_theta", 10000.0), **(config.get("rope_scaling") or {})}
    return rp


def _rope_scaling(writer: Any, rope: dict[str, Any], where: Any) -> None:
    import gguf

    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind == "default":
        return
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        return
    raise UserError(f"rope scaling '{kind}' is not supported by localaug's GGUF conversion (default and linear are); "
                    "export --format hf and convert it with llama.cpp's convert_hf_to_gguf.py",
                    file=where, field="rope_scaling")


def write_hparams(writer: Any, arch: Arch, config: dict[str, Any], where: Any = None) -> None:
    """The model's hyperparameters as llama.cpp reads them (convert_hf_to_gguf's set_gguf_parameters)."""
    import gguf

    c = config
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    writer.add_context_length(int(c["max_position_embeddings"]))
    writer.add_embedding_length(int(c["hidden_size"]))
    writer.add_block_count(n_blocks(c))
    writer.add_feed_forward_length(int(c["intermediate_size"]))
    writer.add_head_count(int(c["num_attention_heads"]))
    writer.add_head_count_kv(int(c.get("num_key_value_heads") or c["num_attention_heads"]))
    writer.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6)))
    writer.add_key_length(int(head_dim))
    writer.add_value_length(int(head_dim))
    if arch.model_arch == gguf.MODEL_ARCH.LLAMA:
        rope = _rope(c)
        writer.add_vocab_size(int(c["vocab_size"]))
        writer.add_rope_dimension_count(int(head_dim))
        writer.add_rope_freq_base(float(rope["rope_theta"]))
        _rope_scaling(writer, rope, where)
    else:  # Gemma 3: the global layers' rotary base; llama.cpp fixes the sliding layers' (10000) itself
        rope = _rope(c, "full_attention")
        if c.get("attn_logit_softcapping") is not None:
            raise UserError("Gemma 3 has no attention soft-capping; this config sets it", file=where,
                            field="attn_logit_softcapping")
        writer.add_rope_freq_base(float(rope["rope_theta"]))
        writer.add_sliding_window(int(c["sliding_window"]))
        _rope_scaling(writer, rope, where)
