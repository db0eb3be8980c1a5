"""`localaug cache stats` / `localaug cache clear`: look at and empty the teacher generation cache."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..teacher.cache import GenerationCache, default_cache_path

_path_option = click.option(
    "--path", "path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Cache file (default: $LOCALAUG_CACHE_DIR/teacher.sqlite, else ~/.cache/localaug/teacher.sqlite).",
)


@click.group()
def cache() -> None:
    """The on-disk cache of teacher generations."""


@cache.command()
@_path_option
def stats(path: Path | None) -> None:
    """Entries, size and tokens per model. Reads only: a damaged cache is reported, not moved."""
    p = path or default_cache_path()
    console = Console()
    if not p.exists():
        console.print(f"cache: {p} (empty, not created yet)")
        return
    st = GenerationCache(p, read_only=True).stats()
    # One fact per line, never wrapped: a long path must not split "entries: N" at a narrow terminal.
    console.print(f"cache: {st.path}", soft_wrap=True)
    console.print(f"entries: {st.entries}  size: {st.size_bytes / 1e6:.2f} MB", soft_wrap=True)
    table = Table("model", "entries", "prompt tokens", "completion tokens", "generation s")
    for m in st.models:
        table.add_row(m.model, str(m.entries), str(m.prompt_tokens), str(m.completion_tokens), f"{m.seconds:.1f}")
    console.print(table)


@cache.command()
@_path_option
@click.option("--model", default=None, help="Only this model identity (as listed by `cache stats`).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def clear(path: Path | None, model: str | None, yes: bool) -> None:
    """Delete cached generations."""
    p = path or default_cache_path()
    if not p.exists():
        click.echo(f"cache: {p} (empty, nothing to clear)")
        return
    what = f"the entries of {model}" if model else "every entry"
    if not yes and not click.confirm(f"Delete {what} in {p}?", default=False):
        click.echo("nothing deleted")
        return
    n = GenerationCache(p).clear(model)
    click.echo(f"deleted {n} entries from {p}")
