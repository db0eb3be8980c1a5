"""Build the student and teacher a run asks for: the one place where backends are chosen.

A backend spec is a model card name or path, or "package.module:factory" for a plug-in: a callable that
takes the run's settings for that backend as keyword arguments and returns an object implementing the
Student or Teacher protocol (see protocols.py). Heavy imports (torch, llama_cpp) happen only here, and
only when a backend is built, so `localaug tasks` or `--dry-run` start at once.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import UserError
from .modelcards import DEFAULT_TEACHER
from .protocols import Student, Teacher


def is_plugin(spec: str) -> bool:
    return ":" in spec and not Path(spec).exists()


def _plugin(spec: str, settings: dict[str, Any]) -> Any:
    module, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot load plug-in backend '{spec}' ({e})") from None
    try:
        inspect.signature(factory).bind(**settings)
    except TypeError as e:
        raise UserError(f"plug-in backend '{spec}' does not take the run's settings {sorted(settings)} ({e})") from None
    except ValueError:  # no signature to check (a builtin): let the call tell
        pass
    return factory(**settings)


def make_student(spec: str, settings: dict[str, Any] | None = None) -> Student:
    """`settings` override the card's student section (e.g. {"epochs": 3, "lr": 1e-4})."""
    if is_plugin(spec):
        return _plugin(spec, settings or {})
    quiet_transformers()
    from .student import load_student

    return load_student(spec, **(settings or {}))


def quiet_transformers() -> None:
    """Our own rich progress is what the user watches; library bars and deprecation notes are noise there."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def teacher_cache_path(settings: Settings) -> Path:
    from .teacher.cache import default_cache_path

    return Path(settings.cache_path).expanduser() if settings.cache_path else default_cache_path()


def make_teacher(settings: Settings) -> Teacher:
    """The configured teacher behind the on-disk cache: a rerun never pays twice for a generation."""
    from .teacher import build_teacher
    from .teacher.cache import CachedTeacher, GenerationCache

    opts = dict(settings.teacher_settings)
    if settings.teacher_servers:
        # Every server is checked here (models, chat, constraint field), before the run writes anything.
        # The default card says nothing about a server's model: assume chat unless the user names a card.
        card = None if settings.teacher == DEFAULT_TEACHER else settings.teacher
        inner = build_teacher(card, url=settings.teacher_servers, model=settings.teacher_model,
                              identity=settings.teacher_identity, api_key_env=settings.teacher_api_key_env, **opts)
    elif is_plugin(settings.teacher):
        inner = _plugin(settings.teacher, opts)
        if not isinstance(inner, Teacher):
            raise UserError(f"plug-in teacher '{settings.teacher}' lacks a method of localaug.protocols.Teacher "
                            "(generate, generate_stream, close): subclass localaug.protocols.TeacherBase")
    else:
        inner = build_teacher(settings.teacher, **opts)
    return CachedTeacher(inner, GenerationCache(teacher_cache_path(settings)))
