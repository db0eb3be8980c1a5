"""A GGUF file's key-value fields, read in one pass with struct.

gguf's GGUFReader builds a numpy view for every element of every array: for Gemma 3's 262,144-token
vocabulary that took ~30 s of a ~40 s GGUF export on 2 cores. This reads the same section (the file's
header, before any tensor data) in about a second. Strings stay bytes: a token need not be valid UTF-8.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

STRING, ARRAY = 8, 9
# GGUFValueType -> struct format of one value (gguf's constants.py; 8 STRING and 9 ARRAY are variable-sized).
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@dataclass(frozen=True)
class Field:
    key: str
    value: Any  # a number, bool, bytes, or a list of them
    type: int  # gguf.GGUFValueType
    sub_type: int | None = None  # an array's element type


class _Cursor:
    def __init__(self, buf: Any, where: Path) -> None:
        self.buf, self.pos, self.where = buf, 0, where

    def take(self, fmt: str) -> Any:
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> bytes:
        n = self.take("<Q")
        s = bytes(self.buf[self.pos: self.pos + n])
        self.pos += n
        return s

    def value(self, kind: int) -> Any:
        if kind in _SCALAR:
            return self.take(_SCALAR[kind])
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            sub, n = self.take("<I"), self.take("<Q")
            if sub in _SCALAR:  # one numpy read for the whole array
                dtype = np.dtype(_SCALAR[sub])
                arr = np.frombuffer(self.buf, dtype=dtype, count=n, offset=self.pos)
                self.pos += n * dtype.itemsize
                return arr.tolist()
            return [self.value(sub) for _ in range(n)]
        raise UserError(f"unknown GGUF value type {kind}", file=self.where)


def read_fields(path: Path) -> list[Field]:
    """Every key-value field of the GGUF at `path`, in file order."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        c = _Cursor(buf, path)
        if bytes(buf[:4]) != b"GGUF":
            raise UserError("is not a GGUF file", file=path)
        c.pos = 4
        version = c.take("<I")
        if version < 2:
            raise UserError(f"GGUF version {version} is too old (2 and later are read)", file=path)
        c.take("<Q")  # tensor count
        fields = []
        for _ in range(c.take("<Q")):
            key = c.string().decode("utf-8")
            kind = c.take("<I")
            sub = struct.unpack_from("<I", buf, c.pos)[0] if kind == ARRAY else None
            fields.append(Field(key, c.value(kind), kind, sub))
        return fields
