"""Library noise off: our own rich progress is what the user watches."""

from __future__ import annotations


def quiet_transformers() -> None:
    """Our own rich progress is what the user watches; library bars and deprecation notes are noise there."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
