"""`localaug plugins`: the installed student and teacher plug-ins, the only backends a file may name."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from ..plugins import GROUPS, installed


@click.command()
def plugins() -> None:
    """List the installed plug-ins (entry points in the groups localaug.students and localaug.teachers)."""
    found = installed()
    if not found:
        click.echo(f"no plug-ins installed (a plug-in is a Python distribution with an entry point in "
                   f"{' or '.join(GROUPS.values())})")
        return
    table = Table(title="localaug plug-ins")
    for col in ("role", "name", "factory", "distribution"):
        table.add_column(col)
    for p in found:
        table.add_row(p.role, p.name, p.target, p.dist)
    Console().print(table)
