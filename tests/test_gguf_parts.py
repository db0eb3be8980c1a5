"""A GGUF shipped in part packages: joined on first use, checked, and a missing or damaged part is one line.

Small real part packages are written to a temporary folder on sys.path (real files, real imports); the
real 22-part 1.5B teacher is assembled in tests/test_teacher_qwen.py.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from localaug.errors import UserError
from localaug.files import sha256_file
from localaug.gguf_parts import assemble
from localaug.modelcards import load_model_card

PIECES = [b"GGUF" + bytes(range(256)) * 40, b"second piece" * 500, b"last"]


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    root = tmp_path / "site"
    names = []
    for i, piece in enumerate(PIECES, start=1):
        name = f"fake_model_part{i}_{tmp_path.name[-6:]}"  # unique per test: imports are cached per process
        (root / name / "data").mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
        (root / name / "data" / f"part{i:02d}.bin").write_bytes(piece)
        names.append(name)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("LOCALAUG_CACHE_DIR", str(tmp_path / "cache"))
    yield names
    for name in names:
        sys.modules.pop(name, None)


def _card(tmp_path: Path, names: list[str], sha: str, size: int) -> Path:
    card = tmp_path / "parts.yaml"
    packages = "".join(f"\n      - {n}" for n in names)
    card.write_text(f"name: fake\nsource:\n  gguf_parts:\n    packages:{packages}\n    size: {size}\n"
                    f"    sha256: {sha}\n    install: pip install fake-parts\nchat_template: true\n")
    return card


def test_parts_join_in_order_once(parts: list[str], tmp_path: Path) -> None:
    whole = b"".join(PIECES)
    card = load_model_card(_card(tmp_path, parts, hashlib.sha256(whole).hexdigest(), len(whole)))
    path = card.gguf_file()
    assert path.read_bytes() == whole and path.parent == tmp_path / "cache" / "models"
    assert sha256_file(path) == hashlib.sha256(whole).hexdigest()
    mtime = path.stat().st_mtime_ns
    assert card.gguf_file() == path and path.stat().st_mtime_ns == mtime  # second use: not joined again
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_a_missing_part_is_one_line_naming_the_pip_command(parts: list[str], tmp_path: Path) -> None:
    whole = b"".join(PIECES)
    card = load_model_card(_card(tmp_path, [*parts[:2], "fake_model_part_not_installed"],
                                 hashlib.sha256(whole).hexdigest(), len(whole)))
    with pytest.raises(UserError) as e:
        card.gguf_file()
    msg = str(e.value)
    assert "\n" not in msg and "parts.yaml" in msg and "field 'source.gguf_parts'" in msg
    assert "fake-model-part-not-installed" in msg and "pip install fake-parts" in msg
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())


@pytest.mark.parametrize("damage", ["bytes", "size"])
def test_a_damaged_part_leaves_no_model_behind(parts: list[str], tmp_path: Path, damage: str) -> None:
    whole = b"".join(PIECES)
    site = tmp_path / "site" / parts[1] / "data" / "part02.bin"
    site.write_bytes(site.read_bytes()[:-1] + (b"X" if damage == "bytes" else b""))
    with pytest.raises(UserError, match="a part is damaged") as e:
        assemble("fake", parts, len(whole), hashlib.sha256(whole).hexdigest(), "pip install fake-parts")
    assert ("instead of" in str(e.value)) == (damage == "size")
    assert not any((tmp_path / "cache" / "models").iterdir())  # the half-made file was not kept


_HOLDER = """
import sys
from pathlib import Path
from localaug.files import one_maker
with one_maker(Path(sys.argv[1])):
    print("holding", flush=True)
    sys.stdin.readline()  # until the test says go on (or the process is killed)
    if sys.argv[2] == "make":
        Path(sys.argv[1]).write_bytes(Path(sys.argv[3]).read_bytes())
"""


def _holder(final: Path, action: str, source: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(final), action, str(source)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=os.environ.copy())
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_process_waits_for_the_first_joiner_and_uses_its_file(parts: list[str], tmp_path: Path) -> None:
    # Two first uses at once (two runs started together on a fresh machine): the one that comes second waits
    # while the other joins, then takes the other's file instead of joining the parts again.
    whole = b"".join(PIECES)
    (tmp_path / "whole.bin").write_bytes(whole)
    final = tmp_path / "cache" / "models" / f"fake-{hashlib.sha256(whole).hexdigest()[:16]}.gguf"
    holder = _holder(final, "make", tmp_path / "whole.bin")
    got: list[Path] = []
    second = threading.Thread(target=lambda: got.append(
        assemble("fake", parts, len(whole), hashlib.sha256(whole).hexdigest(), "pip install fake-parts")))
    second.start()
    second.join(timeout=1.0)
    assert second.is_alive() and not final.exists()  # blocked while the first holds the entry
    holder.communicate("go\n", timeout=60)
    second.join(timeout=60)
    assert got == [final] and final.read_bytes() == whole
    assert not list(final.parent.glob(".*.tmp"))
    inode = final.stat().st_ino
    assert assemble("fake", parts, len(whole), hashlib.sha256(whole).hexdigest(), "x") == final
    assert final.stat().st_ino == inode  # the first's file, never rewritten


def test_a_killed_joiner_does_not_block_the_next(parts: list[str], tmp_path: Path) -> None:
    whole = b"".join(PIECES)
    final = tmp_path / "cache" / "models" / f"fake-{hashlib.sha256(whole).hexdigest()[:16]}.gguf"
    holder = _holder(final, "die", tmp_path)
    holder.kill()
    holder.wait(timeout=60)
    path = assemble("fake", parts, len(whole), hashlib.sha256(whole).hexdigest(), "pip install fake-parts")
    assert path == final and final.read_bytes() == whole
