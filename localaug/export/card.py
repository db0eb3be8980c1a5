"""What every export says about itself: localaug_export.json (for programs) and MODEL_CARD.md (for people)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .. import __version__


def metadata(prov: dict[str, Any], fmt: str, quant: str | None, files: list[str]) -> dict[str, Any]:
    return {"localaug_export": 1, "localaug_version": __version__, "format": fmt, "quantization": quant,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files, **prov}


def _pct(x: float | None) -> str:
    return "not measured" if x is None else f"{x:.1%}"


_LOADERS = {
    "hf": ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
           "model = AutoModelForCausalLM.from_pretrained(\"{out}\")\n"
           "tokenizer = AutoTokenizer.from_pretrained(\"{out}\")\n```\n"
           "The LoRA adapter alone (peft) is in `adapter/`."),
    "gguf": ("```bash\nllama-server -m {out}/{model}     # or: python -c \"import llama_cpp; "
             "llama_cpp.Llama('{out}/{model}')\"\n```\n"
             "Ollama: a Modelfile holding `FROM ./{model}`, then `ollama create student -f Modelfile`."),
    "lora-gguf": ("```bash\nllama-server -m BASE.gguf --lora {out}/{model}\n```\n"
                  "BASE.gguf: {base}. Ollama: a Modelfile holding `FROM BASE.gguf` and `ADAPTER ./{model}`."),
}


def model_card(meta: dict[str, Any], out_name: str, model_file: str | None) -> str:
    """A short card: where the student came from, how well it did, how to load it."""
    base = meta["base_model"]
    base_text = (f"the GGUF `{base['file']}` (sha256 `{base['sha256']}`)" if base["kind"] == "gguf"
                 else f"a GGUF converted from the Hugging Face folder `{base['file']}` (sha256 of its weights "
                      f"`{base['sha256']}`)")
    which = "the final student (trained on every seed example plus the kept teacher data)" \
        if meta["iteration"] == "final" else f"the student of iteration {meta['iteration']}"
    quant = f", {meta['quantization']}" if meta.get("quantization") else ""
    load = _LOADERS[meta["format"]].format(out=out_name, model=model_file or "", base=base_text)
    prompt = meta.get("prompt")
    asked = "" if not prompt else (
        "\n## Prompt it as it was trained\n\nA completion prompt (no chat template), the task card's student "
        f"template:\n\n```\n{prompt['prompt']}\n```\n\nIt answers `{prompt['answer']}`"
        + (f", then stops at {' or '.join(repr(x) for x in prompt['stop'])}" if prompt["stop"] else "") + ".\n")
    return f"""# {meta['task']} student ({meta['format']}{quant})

Fine-tuned by [localaug](https://arxiv.org/abs/2403.15042) {meta['localaug_version']} (LLM2LLM): {which} of
run `{meta['run']}`.

| | |
|---|---|
| task | {meta['task']} |
| seed examples | {meta['seed_size']} |
| test rows | {meta.get('test_size')} |
| test accuracy, plain fine-tuning (iteration 0) | {_pct(meta['plain_accuracy'])} |
| test accuracy, this student | {_pct(meta['final_accuracy'])} |
| training examples | {meta['train_size']} ({meta['teacher_examples_added']} written by the teacher) |
| teacher | {meta['teacher'] or 'none (no teacher round)'} |
| base model | {meta['student']}: {base_text} |
| format | {meta['format']}{quant} |

Accuracies are localaug's own evaluation in the run ({meta.get('eval_backend', 'transformers')}; greedy,
classification by the likelihood of each label).

## Load it

{load}
{asked}"""


def write_metadata(out: Path, out_name: str, meta: dict[str, Any], model_file: str | None) -> None:
    """Into the folder `out` (a temp folder that becomes `out_name`)."""
    (out / "localaug_export.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(model_card(meta, out_name, model_file), encoding="utf-8")
