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


def make_student(spec: str, settings: dict[str, Any] | None = None, *, factory: str | None = None,
                 eval_backend: str = "transformers") -> Student:
    """`settings` override the card's student section (e.g. {"epochs": 3, "lr": 1e-4}); `eval_backend`
    "llamacpp" evaluates the student in llama.cpp (student/llamacpp_student.py), training stays transformers."""
    backend = resolve("student", spec, factory=factory)
    if not backend.is_card:
        if eval_backend != "transformers":
            raise UserError(f"eval_backend {eval_backend} needs a model-card student, not the {backend.kind} "
                            f"'{spec}'", field="eval_backend")
        return backend.build(settings or {})
    from .student import load_student
    from .student.quiet import quiet_transformers

    quiet_transformers()

    student = load_student(spec, **(settings or {}))
    if eval_backend == "llamacpp":
        from .student.llamacpp_student import LlamaCppEvalStudent

        # An f16 GGUF of the weights the student trains on (made once, ~540 MB for the 270M), not the card's
        # Q4_K_M file: on TREC the f16 base gave the transformers student's label on 100 of 100 rows and the
        # Q4_K_M base on 96 (its kernels tip near ties), and f16 scored them 3x faster (bench/README.md).
        return LlamaCppEvalStudent(student, base="f16")
    return student


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
