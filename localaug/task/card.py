"""The task card schema: what a task's YAML file may hold (documented key by key in docs/task-cards.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ..schema import Strict
from .kinds import KINDS

BUILTIN_PREFIX = "@builtin/"


class DataSection(Strict):
    dir: str | None = Field(None, description="absolute, relative to the data root, or @builtin/NAME")
    splits: dict[str, str]
    fields: dict[str, str] = Field(default_factory=dict, description="our field -> your column")
    id_field: str | None = None
    too_long: Literal["refuse", "truncate"] = Field(
        "refuse", description="a row longer than the student's context (max_length tokens): refused before "
                              "anything is written, or cut from the prompt's start to fit (training and evaluation)")
    duplicates: Literal["keep", "drop"] = Field(
        "keep", description="exact duplicate rows of a file: kept and reported, or dropped (the first is kept)")

    @field_validator("splits")
    @classmethod
    def _has_train(cls, v: dict[str, str]) -> dict[str, str]:
        if "train" not in v:
            raise ValueError("data.splits needs at least a 'train' file")
        return v


class StudentTemplates(Strict):
    """How the student is asked and how it answers: templates over the kind's fields."""

    prompt: str
    answer: str
    max_new_tokens: int = Field(16, ge=1)
    stop: list[str] = Field(default_factory=lambda: ["\n"])


class WorkedExample(Strict):
    original: dict[str, Any]
    wrong: str = ""
    new: dict[str, Any]


class TeacherTemplates(Strict):
    """How the teacher is asked for new examples, and how its answer is read back."""

    instruction: str
    original: str
    new: str
    example: WorkedExample
    shots_header: str = ""
    shot: str | None = None
    max_shots: int | None = Field(None, ge=1)
    stop: list[str] = Field(default_factory=lambda: ["\n\n"])
    max_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)

    @property
    def shot_template(self) -> str:
        """How one example is written in a list prompt (`shot`; default: the `new` template)."""
        return self.shot or self.new


class TaskDefaults(Strict):
    seed_size: int | None = Field(None, ge=1)
    iterations: int | None = Field(None, ge=1)
    per_wrong: int | None = Field(None, ge=1)
    test_size: int | None = Field(None, ge=1)
    eval_mode: Literal["score", "generate"] | None = None
    match_style: bool | None = None  # the task's choice of these two run settings (config.Settings)
    refuse_non_examples: bool | None = None
    student_settings: dict[str, Any] = Field(default_factory=dict)


class TaskCard(Strict):
    name: str | None = None
    kind: Literal["classification", "multiple_choice", "math"]  # kinds.KINDS (tests/test_tasks.py checks)
    description: str = ""
    data: DataSection
    labels: dict[str, str] = Field(default_factory=dict, validate_default=True,
                                   description="label in the file -> the words the models see")
    student: StudentTemplates
    teacher: TeacherTemplates
    defaults: TaskDefaults = Field(default_factory=TaskDefaults)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_mapping(cls, v: Any) -> Any:
        return {str(x): str(x) for x in v} if isinstance(v, list) else v

    @field_validator("labels")
    @classmethod
    def _labels_fit_the_kind(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if info.data.get("kind") in KINDS:
            KINDS[info.data["kind"]].check_labels(v)
        return v
