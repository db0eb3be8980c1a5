"""The built-in task and model cards, shipped inside the package (and so inside its wheel).

They are found through `importlib.resources`, so `localaug run` works the same from a checkout, an
editable install or a wheel installed on an air-gapped machine, from any working directory. A user's
own card is passed by path and never looked up here.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

Kind = Literal["tasks", "models"]


def builtin_dir(kind: Kind) -> Path:
    # localaug installs as plain files (never a zip), so the resource folder is a real directory:
    # the demo task's data must be a Path for the row readers.
    return Path(str(files(__name__).joinpath(kind)))


def builtin_names(kind: Kind) -> list[str]:
    return sorted(p.stem for p in builtin_dir(kind).glob("*.yaml"))


def builtin_card(kind: Kind, name: str) -> Path | None:
    """The built-in card called `name`, or None."""
    p = builtin_dir(kind) / f"{name}.yaml"
    return p if p.is_file() else None
