"""The `localaug` command: a thin click group; each topic's commands live in their own module."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__
from ..errors import UserError
from ..files import disk_fault


class _Group(click.Group):
    """Turns a UserError anywhere below into one line on stderr and exit code 2, no traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except UserError as e:
            _fail(ctx, e)
        except Exception as e:  # a full disk or a folder we may not write, met outside our own writers
            fault = disk_fault(e, Path(getattr(e, "filename", None) or "."))
            if fault is None:
                raise
            _fail(ctx, fault)
        return None


def _fail(ctx: click.Context, e: UserError) -> None:
    click.echo("error: " + " ".join(str(e).splitlines()), err=True)  # one line, whatever a library wrote
    ctx.exit(UserError.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="localaug")
def main() -> None:
    """Grow a small labelled data set with a local teacher LLM, aimed at what your student gets wrong
    (LLM2LLM, Lee et al. 2024). Everything runs on this machine; nothing is sent anywhere."""


def _register() -> None:
    from .cache import cache
    from .data import data, tasks
    from .dedup import dedup
    from .export import export_cmd
    from .plugins import plugins
    from .prepare import prepare
    from .run import run
    from .runs import report, runs
    from .stages import eval_cmd, generate, train

    for cmd in (run, prepare, report, runs, tasks, data, generate, train, eval_cmd, dedup, export_cmd, cache,
                plugins):
        main.add_command(cmd)


_register()

if __name__ == "__main__":
    sys.exit(main())
