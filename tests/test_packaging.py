"""The wheel's package list is written out by hand (pyproject.toml maps the top-level card folders into the
package, which setuptools' `find` cannot express): every package folder under localaug/ must be in it."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_in_the_wheel_list() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "localaug").rglob("__init__.py")}
    assert found - listed == set(), "package folders missing from [tool.setuptools] packages"
    mapped = config["package-dir"]
    assert mapped == {"localaug.cards.models": "models", "localaug.cards.tasks": "tasks"}
    for name in listed - found:  # the mapped card folders
        assert name in mapped or name.rsplit(".", 1)[0] in mapped, name
        folder = REPO / mapped.get(name, mapped.get(name.rsplit(".", 1)[0], ""))
        assert folder.is_dir(), folder
