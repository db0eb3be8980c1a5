"""User-facing errors: one line, naming file, line and field where known; the CLI exits 2 on them."""

from __future__ import annotations

import sys
from pathlib import Path


class UserError(Exception):
    """Bad input or configuration. Printed as one line without a traceback; exit code 2."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line is not None else "") + ": "
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}{what}{self.message}"


def warn(message: str) -> None:
    """A warning on stderr, on one line whatever the message holds (a library's multi-line text included)."""
    sys.stderr.write("localaug: warning: " + " ".join(message.split()) + "\n")
