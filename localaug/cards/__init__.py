"""The built-in task and model cards: the project's top-level `models/` and `tasks/` folders.

The wheel carries them as the packages `localaug.cards.models` and `localaug.cards.tasks` (pyproject.toml maps
the folders there), so they are found through `importlib.resources` the same way from a checkout, an editable
install or a wheel installed on an air-gapped machine, from any working directory. A user's own card is passed
by path and never looked up here.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

CardFolder = Literal["tasks", "models"]


def builtin_dir(folder: CardFolder) -> Path:
    # localaug installs as plain files (never a zip), so the resource folder is a real directory:
    # the demo task's data must be a Path for the row readers.
    return Path(str(files(f"{__name__}.{folder}")))


def builtin_names(folder: CardFolder) -> list[str]:
    return sorted(p.stem for p in builtin_dir(folder).glob("*.yaml"))


def builtin_card(folder: CardFolder, name: str) -> Path | None:
    """The built-in card called `name`, or None."""
    p = builtin_dir(folder) / f"{name}.yaml"
    return p if p.is_file() else None
