"""The dedup index file: one `.npz` read with `allow_pickle=False`.

`meta`: ids, roles, normalised texts, the config and FORMAT_VERSION as UTF-8 JSON bytes; `sigs`: the
MinHash signatures as a uint32 matrix. The LSH buckets are not stored (they are rebuilt on load).
Written to a temp file and renamed, so a crash leaves the old file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..files import atomic_file

FORMAT_VERSION = 1  # bump when normalisation, shingle hashing or permutations change: stored signatures
# are only comparable with signatures computed by the same code


def write_index(path: Path, meta: dict[str, Any], sigs: np.ndarray) -> None:
    """Write meta (FORMAT_VERSION is put first) and signatures atomically."""
    meta = {"format": FORMAT_VERSION, **meta}
    with atomic_file(Path(path)) as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
                 sigs=sigs)


def read_index(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """(meta, uint32 signatures) of a file this version wrote; anything else is a UserError."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
            sigs = np.asarray(z["sigs"], dtype=np.uint32)
    except FileNotFoundError:
        raise UserError("dedup index not found", file=path) from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"not a dedup index ({e})", file=path) from None
    if meta.get("format") != FORMAT_VERSION:
        raise UserError(f"dedup index format {meta.get('format')} not supported", file=path)
    return meta, sigs
