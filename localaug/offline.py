"""Offline is a guarantee: the hub libraries' switches, set before any of them is imported.

`localaug/__init__.py` calls `enforce()`, so every entry point (the CLI, `import localaug` in a notebook,
the benchmarks) sets them before transformers, huggingface_hub or datasets read them at import time.
They make those libraries fail instead of downloading, and turn off telemetry and update checks.
"""

from __future__ import annotations

import os

SWITCHES = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: no hub requests at all
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",  # never read or send a stored hub token
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "DO_NOT_TRACK": "1",  # honoured by several libraries' telemetry
}


def enforce() -> None:
    """Set every switch, whatever the user's environment says (a user's HF_HUB_OFFLINE=0 included)."""
    os.environ.update(SWITCHES)
