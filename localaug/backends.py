"""Build the student and teacher a run asks for. Heavy imports (torch, llama_cpp) happen only here,
and only when a backend is actually built, so `localaug tasks` or `--dry-run` start instantly.

A backend spec is a model card name or path, or "package.module:attr" for a plug-in: a callable that
returns an object implementing the Student or Teacher protocol (see protocols.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import UserError
from .protocols import Student, Teacher


def _plugin(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot load plug-in backend '{spec}' ({e})") from None
    return factory()


def is_plugin(spec: str) -> bool:
    return ":" in spec and not Path(spec).exists()


def make_student(spec: str, settings: dict[str, Any] | None = None) -> Student:
    """`settings` override the card's student section (e.g. {"epochs": 3, "lr": 1e-4})."""
    if is_plugin(spec):
        return _plugin(spec)
    import warnings

    from transformers.utils import logging as hf_logging

    # Our own rich progress is what the user watches; library bars and deprecation notes are noise there.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")

    from .student import load_student

    return load_student(spec, **(settings or {}))


def teacher_cache_path(config: RunConfig) -> Path:
    from .cache import default_cache_path

    return Path(config.cache_path).expanduser() if config.cache_path else default_cache_path()


def make_teacher(config: RunConfig) -> Teacher:
    """The configured teacher behind the on-disk cache: a rerun never pays twice for a generation."""
    from .cache import CachedTeacher, GenerationCache

    if config.teacher_url:
        from .teacher import make_teacher as build

        inner: Teacher = build(config.teacher, base_url=config.teacher_url, model=config.teacher_model,
                               api_key_env=config.teacher_api_key_env)
    elif is_plugin(config.teacher):
        inner = _plugin(config.teacher)
    else:
        from .teacher import make_teacher as build

        inner = build(config.teacher)
    return CachedTeacher(inner, GenerationCache(teacher_cache_path(config)))
