"""Model cards: which weights a student or teacher uses, and how to train/run them.

A card is a small YAML file (the built-in ones: `models/`); a user passes the path of
their own. Unknown keys are an error (a typo must not silently fall back to a default). The defaults
below are the only defaults of these settings.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, model_validator

from .cards import builtin_card, builtin_names
from .errors import UserError
from .gguf_parts import package_dir
from .schema import Strict, load_yaml_model

DEFAULT_STUDENT = "gemma3-270m"  # the CPU student
DEFAULT_TEACHER = "qwen2.5-coder-1.5b"  # a teacher that can teach (docs/teachers.md)


# A top-level package name: finding it (importlib.util.find_spec) never runs code, as a dotted name would.
PACKAGE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
GGUF_MAGIC = b"GGUF"


class GgufParts(Strict):
    """A GGUF shipped on PyPI in pieces, one package each (see gguf_parts.py)."""

    packages: list[Annotated[str, Field(pattern=PACKAGE_NAME)]] = Field(
        min_length=1, description="import names of the part packages, in order")
    size: int = Field(gt=0, description="bytes of the joined file")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    install: str = Field(description="the command that installs the parts, for error messages")


class Source(Strict):
    """Where the weights are: exactly one key."""

    gguf_package: str | None = Field(None, pattern=PACKAGE_NAME,
                                     description="a model package: its data/ folder holds the GGUF's pieces and "
                                                 "its assemble() returns the joined GGUF's path")
    gguf_parts: GgufParts | None = None
    gguf_path: str | None = None
    hf_path: str | None = Field(None, description="a local Hugging Face folder with *.safetensors")

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if len(self.model_dump(exclude_none=True)) != 1:
            raise ValueError("give exactly one of gguf_package, gguf_parts, gguf_path, hf_path")
        return self


class TeacherRuntime(Strict):
    """How llama.cpp runs the card's GGUF as a teacher."""

    n_ctx: int = Field(2048, ge=256)
    n_threads: int | None = Field(None, ge=1, description="None: the cores this process may use (its CPU affinity)")
    batch_sequences: int = Field(8, ge=1, description="sequences decoded together in one llama_decode batch")
    n_gpu_layers: int = 0


class Lora(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class Training(Strict):
    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps, overriding epochs (step-matched controls)")
    lr: float = Field(2.0e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(256, ge=8)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: str = "linear"


class StudentSection(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    quantization: Literal["auto", "none", "nf4"] = "auto"
    lora: Lora = Field(default_factory=Lora)
    train: Training = Field(default_factory=Training)
    eval_batch_size: int = Field(16, ge=1)
    max_new_tokens: int | None = Field(None, ge=1, description="caps generated answers when set")
    # Past one process (README "Scaling out"): each training stage runs as torchrun workers.
    processes: int = Field(1, ge=1, description="training processes per stage (1: in the driver; N: N torchrun "
                                                "workers, one per GPU on CUDA)")
    launcher: str | None = Field(None, min_length=1, description="replaces `torchrun --standalone --nproc_per_node "
                                                                 "N` (multi-node: a torchrun rendezvous, srun ...)")
    fsdp: bool = Field(False, description="FSDP + QLoRA over the workers' GPUs, for a student too big for one GPU")


class ModelCard(Strict):
    name: str | None = None
    description: str = ""
    source: Source
    chat_template: bool = False
    teacher: TeacherRuntime = Field(default_factory=TeacherRuntime)
    student: StudentSection = Field(default_factory=StudentSection)
    _path: Path | None = PrivateAttr(None)

    @property
    def path(self) -> Path | None:
        """The card file (None for a card built in code)."""
        return self._path

    def gguf_file(self) -> Path:
        """The GGUF file, assembling it from its PyPI package on first use (offline)."""
        src = self.source
        if src.gguf_path is not None:
            p = Path(src.gguf_path).expanduser()
            if not p.is_file():
                raise UserError(f"GGUF file not found: {p}", file=self.path, field="source.gguf_path")
            return p
        if src.gguf_package is not None:
            self.check_source()  # a model package (a data/ folder) before anything of it is imported
            return Path(importlib.import_module(src.gguf_package).assemble())
        if src.gguf_parts is not None:
            from .gguf_parts import assemble

            parts = src.gguf_parts
            return assemble(self.name or "model", parts.packages, parts.size, parts.sha256, parts.install, self.path)
        raise UserError("card has no GGUF source (gguf_path, gguf_package or gguf_parts)", file=self.path,
                        field="source")

    def check_source(self) -> None:
        """The weights are where the card says, in a format loaded without running code (safetensors, GGUF);
        checked without loading, joining or converting anything (the pre-run checks call this)."""
        src, where = self.source, self.path
        if src.hf_path is not None:
            check_hf_dir(Path(src.hf_path).expanduser(), self)
        elif src.gguf_path is not None:
            p = Path(src.gguf_path).expanduser()
            if not p.is_file():
                raise UserError(f"GGUF file not found: {p}", file=where, field="source.gguf_path")
            with p.open("rb") as f:
                if f.read(4) != GGUF_MAGIC:
                    raise UserError(f"{p} is not a GGUF file (it does not start with 'GGUF')", file=where,
                                    field="source.gguf_path")
        elif src.gguf_package is not None:
            d = package_dir(src.gguf_package)
            if d is None:
                raise UserError(f"model package '{src.gguf_package}' is not installed "
                                f"(pip install {src.gguf_package.replace('_', '-')})",
                                file=where, field="source.gguf_package")
            if not (d / "data").is_dir():
                raise UserError(f"'{src.gguf_package}' is not a model package (no data/ folder in {d})",
                                file=where, field="source.gguf_package")
        elif src.gguf_parts is not None:
            from .gguf_parts import missing_parts

            parts = src.gguf_parts
            missing = missing_parts(parts.packages)
            if missing:
                raise UserError(f"the model '{self.name}' needs {len(parts.packages)} part packages; not installed: "
                                f"{', '.join(missing[:3])}{' and more' if len(missing) > 3 else ''} (install them "
                                f"with: {parts.install})", file=where, field="source.gguf_parts")


def builtin_card_names() -> list[str]:
    return builtin_names("models")


def load_model_card(name_or_path: str | Path) -> ModelCard:
    """Load a card by built-in name (e.g. 'gemma3-270m') or by the path of a YAML file."""
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") or p.exists()):
        found = builtin_card("models", str(name_or_path))
        if found is None:
            raise UserError(
                f"unknown model card '{name_or_path}' (built in: {', '.join(builtin_card_names())}; "
                "or give the path of a .yaml card)"
            )
        p = found
    elif not p.is_file():
        raise UserError(f"model card not found: {p}")
    card = load_yaml_model(ModelCard, p, "model card")
    card._path = p
    card.name = card.name or p.stem
    return card


# Weights in these formats are Python pickles: loading one runs whatever code it holds.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


def check_hf_dir(p: Path, card: ModelCard | None = None) -> Path:
    """A Hugging Face folder that holds safetensors weights and a config (never only pickles)."""
    where = card.path if card else None
    if not p.is_dir():
        raise UserError(f"model directory not found: {p}", file=where, field="source.hf_path")
    if not any(p.glob("*.safetensors")):
        pickles = sorted(f.name for f in p.iterdir() if f.suffix in PICKLE_SUFFIXES)
        if pickles:  # loading a pickle runs whatever code it holds: never done, whoever wrote the folder
            raise UserError(f"{p} holds only pickle weights ({', '.join(pickles[:3])}), which localaug never "
                            "loads (unpickling can run code): convert them to safetensors", file=where,
                            field="source.hf_path")
        raise UserError(f"no *.safetensors weights in {p}", file=where, field="source.hf_path")
    if not (p / "config.json").is_file():
        raise UserError(f"no config.json in {p}", file=where, field="source.hf_path")
    return p
