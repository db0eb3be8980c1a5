"""Build the student and teacher a run asks for: the one place where backends are chosen.

A backend spec is a model card (name or path) or an installed plug-in's name; a Python `module:factory`
only when the command line gave it (`factory=`, from --student-factory / --teacher-factory): see plugins.py.
A plug-in or factory is called with the run's settings for that backend as keyword arguments and returns an
object implementing the Student or Teacher protocol (protocols.py). Heavy imports (torch, llama_cpp) happen
only here, and only when a backend is built, so `localaug tasks` or `--dry-run` start at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Settings
from .errors import UserError
from .modelcards import DEFAULT_TEACHER
from .plugins import resolve
from .protocols import Student, Teacher


def make_student(spec: str, settings: dict[str, Any] | None = None, *, factory: str | None = None) -> Student:
    """`settings` override the card's student section (e.g. {"epochs": 3, "lr": 1e-4})."""
    backend = resolve("student", spec, factory=factory)
    if not backend.is_card:
        return backend.build(settings or {})
    from .student import load_student
    from .student.quiet import quiet_transformers

    quiet_transformers()

    return load_student(spec, **(settings or {}))


def teacher_cache_path(settings: Settings) -> Path:
    from .teacher.cache import default_cache_path

    return Path(settings.cache_path).expanduser() if settings.cache_path else default_cache_path()


def make_teacher(settings: Settings, *, factory: str | None = None) -> Teacher:
    """The configured teacher behind the on-disk cache: a rerun never pays twice for a generation.
    `factory`: the command line's --teacher-factory, the only way `settings.teacher` may name code."""
    from .teacher import build_teacher
    from .teacher.cache import CachedTeacher, GenerationCache

    opts = dict(settings.teacher_settings)
    if settings.teacher_servers:
        # Every server is checked here (models, chat, constraint field), before the run writes anything.
        # The default card says nothing about a server's model: assume chat unless the user names a card.
        card = None if settings.teacher == DEFAULT_TEACHER else settings.teacher
        inner = build_teacher(card, url=settings.teacher_servers, model=settings.teacher_model,
                              identity=settings.teacher_identity, api_key_env=settings.teacher_api_key_env, **opts)
    elif not (backend := resolve("teacher", settings.teacher, factory=factory)).is_card:
        inner = backend.build(opts)
        if not isinstance(inner, Teacher):
            raise UserError(f"the teacher {backend.kind} '{settings.teacher}' lacks a method of "
                            "localaug.protocols.Teacher (generate, generate_stream, close): subclass "
                            "localaug.protocols.TeacherBase")
    else:
        inner = build_teacher(settings.teacher, **opts)
    return CachedTeacher(inner, GenerationCache(teacher_cache_path(settings)))
