"""`localaug export`: the run's trained student as a Hugging Face folder, a GGUF, or a llama.cpp LoRA adapter."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--iteration", type=int, help="Export this iteration's student [the run's final student].")
@click.option("--format", "fmt", required=True, help="hf | gguf | lora-gguf")
@click.option("--quant", help="gguf: f16 | q8_0 | q4_k_m (llama.cpp's quantiser) [f16]; lora-gguf: f32 | f16 [f32].")
@click.option("--out", "out", required=True, type=click.Path(), help="Folder to write (new or empty).")
@click.option("--force", is_flag=True, help="Replace an earlier export in --out.")
def export_cmd(run_dir: str, iteration: int | None, fmt: str, quant: str | None, out: str, force: bool) -> None:
    """Export RUN_DIR's student: the final one (final/ when the run held seeds out, else the last trained
    iteration) or --iteration's. Writes MODEL_CARD.md and localaug_export.json beside the model."""
    from ..export import export

    console = Console(stderr=True)
    main = export(Path(run_dir), fmt, Path(out), quant=(quant or None) and quant.lower(), iteration=iteration,
                  force=force, say=lambda msg: console.print(msg, highlight=False))
    Console().print(f"exported -> {main}", highlight=False, soft_wrap=True)
