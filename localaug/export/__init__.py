"""`localaug export`: a run's student leaves localaug as a Hugging Face folder, a GGUF, or a llama.cpp LoRA.

    source.py     which student of the run, its base weights, its provenance
    merge.py      adapter merged into the base (peft), the `hf` folder
    quantize.py   llama.cpp's quantiser for q8_0 / q4_k_m
    card.py       localaug_export.json and MODEL_CARD.md

The GGUF writers (model and LoRA) are ../convert/, shared with the llama.cpp evaluation of a student.

Every export is written into a temp folder next to the target and renamed into place when complete.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import atomic_dir
from .source import ExportSource, find_student

# Each format and the quantisations it takes (the first is its default; hf keeps the weights' own dtype).
# lora-gguf defaults to f32: after a short training a LoRA's B entries are ~1e-4, where f16 keeps few bits
# (measured on the demo: 117 of 120 predictions as localaug's with f16, 118 with f32); it is a few MB either way.
FORMATS: dict[str, tuple[str, ...]] = {"hf": (), "gguf": ("f16", "q8_0", "q4_k_m"), "lora-gguf": ("f32", "f16")}
METADATA = "localaug_export.json"


def check_request(fmt: str, quant: str | None) -> str | None:
    """The quantisation to use, or one line saying why the request cannot be done."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}' (one of {', '.join(FORMATS)})", field="format")
    allowed = FORMATS[fmt]
    if quant is None:
        return allowed[0] if allowed else None
    if quant not in allowed:
        takes = f"takes {', '.join(allowed)}" if allowed else "keeps the weights' own dtype (no --quant)"
        raise UserError(f"format {fmt} cannot take quantisation '{quant}' ({fmt} {takes})", field="quant")
    return quant


def check_target(out: Path, force: bool) -> None:
    """A new or empty folder; --force replaces an earlier export, never a folder of other files."""
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a folder", file=out)
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UserError("is not empty; pass --force to replace an earlier export", file=out)
        if not (out / METADATA).is_file():
            raise UserError(f"is not empty and holds no earlier export ({METADATA}); --force replaces only an "
                            "export, never other files", file=out)


def export(run_dir: Path, fmt: str, out: Path, *, quant: str | None = None, iteration: int | None = None,
           force: bool = False, say: Callable[[str], None] = lambda _: None) -> Path:
    """Export the run's student (the final one, or `iteration`'s) to the folder `out`; returns the main file."""
    from .card import metadata, write_metadata

    quant = check_request(fmt, quant)
    out = Path(out)
    check_target(out, force)
    src = find_student(Path(run_dir), iteration)
    if fmt != "hf":
        from ..convert.gguf_model import check_convertible

        # A merged GGUF of a Hugging Face student writes its tokenizer; a GGUF student's is copied.
        check_convertible(src.base_dir, with_tokenizer=fmt == "gguf" and src.base_gguf is None)
    say(f"exporting {src.label} of {src.run_dir.name} as {fmt}{f' ({quant})' if quant else ''}")
    with atomic_dir(out) as tmp:
        if fmt == "lora-gguf":
            from ..convert.lora import write_lora_gguf

            main = write_lora_gguf(src.adapter_dir, src.base_dir, tmp / f"adapter-{quant}.gguf", dtype=quant or "f32")
        else:
            from .merge import merged_model

            say("merging the adapter into the base weights")
            model = merged_model(src)
            if fmt == "hf":
                from .merge import write_hf

                say("writing safetensors and tokenizer")
                write_hf(src, model, tmp)
                main = tmp / "model.safetensors"
            else:
                main = _write_gguf(src, model, tmp, quant or "f16", say)
            del model
        for p in tmp.rglob("*"):  # some writers make private temp files; an export is as readable as any file
            p.chmod(0o755 if p.is_dir() else 0o644)
        meta = metadata(src.provenance, fmt, quant, sorted(p.name for p in tmp.iterdir()))
        write_metadata(tmp, out.name, meta, main.name if fmt != "hf" else None)
        name = main.name
    return out / name


def _write_gguf(src: ExportSource, model: Any, tmp: Path, quant: str, say: Callable[[str], None]) -> Path:
    from ..convert.gguf_model import write_gguf
    from .quantize import quantize

    say("writing the f16 GGUF")
    f16 = write_gguf(tmp / "student-f16.gguf", src.base_dir, model.state_dict().items(), base_gguf=src.base_gguf)
    if quant == "f16":
        return f16
    say(f"quantising to {quant} (llama.cpp)")
    main = quantize(f16, tmp / f"student-{quant}.gguf", quant)
    f16.unlink()
    return main
