"""The run's records, typed: what each stage did, one row per round of the loop, and the manifest.

The store (store.py) is the only writer of manifest.json; everyone else reads these types. On disk a stage's
marker is its summary's fields plus `done` and `finished`, keyed by the stage key (layout.py), and an
iteration row is keyed by its two-digit number: the same JSON a reader of earlier runs knows.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializeAsAny, field_validator

from . import layout


class Record(BaseModel):
    # A field the type does not know is a bug on the writing side or a run of another version: say so.
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------- stage summaries


class StageSummary(Record):
    """What every finished stage records: when, and how long it took."""

    done: bool = True
    finished: str = ""
    seconds: float = 0.0


class PrepareSummary(StageSummary):
    seed_size: int
    holdout_size: int
    test_size: int
    pool_size: int


class TrainSummary(StageSummary):
    train_size: int
    steps: int
    train_tokens: int
    final_loss: float | None = None
    peak_rss_mb: float | None = None
    processes: int = 1  # training processes (torchrun workers: student/distributed.py)


class EvalSummary(StageSummary):
    accuracy: float
    correct: int
    total: int
    wrong: int
    eval_mode: str


class AugmentSummary(StageSummary):
    wrong: int  # the targets the teacher was asked about
    requested: int
    completions: int
    parsed: int
    parse_rejected: int
    parse_failure_rate: float
    repeats: int
    repeat_rate: float
    cached: int
    completion_tokens: int
    teacher: str
    style: str | None = None  # match_style: the seeds' style the teacher's text was rewritten in


class VerifySummary(StageSummary):
    candidates: int
    verified: int
    verifier: str


class DedupSummary(StageSummary):
    candidates: int
    accepted: int
    duplicate: int
    contaminated: int
    next_train_size: int


class LabelSummary(StageSummary):
    """The teacher as a labeller of seed examples (the preflight)."""

    teacher_accuracy: float
    correct: int
    total: int
    teacher: str


SUMMARIES: dict[str, type[StageSummary]] = {
    layout.PREPARE: PrepareSummary, layout.TRAIN: TrainSummary, layout.AUGMENT: AugmentSummary,
    layout.VERIFY: VerifySummary, layout.DEDUP: DedupSummary, layout.LABEL: LabelSummary,
}


def summary_type(key: str) -> type[StageSummary]:
    """The summary type of a stage key ("iter_00/eval_seed" -> EvalSummary)."""
    name = layout.stage_name(key)
    return EvalSummary if name.startswith(layout.EVAL_PREFIX) else SUMMARIES[name]


# ---------------------------------------------------------------------- rounds and results


class HeldOutScore(Record):
    """A student on the seed examples held out of the loop."""

    accuracy: float
    correct: int


class IterationRow(Record):
    """One round of the loop: its student, what it got wrong, what the teacher added."""

    iteration: int
    train_size: int
    seed_accuracy: float  # M_i on the seed examples it trained on
    wrong: int  # the seed examples found wrong (by M_i, or by the recipe's error finder)
    test_accuracy: float
    new_examples: int = 0
    holdout_accuracy: float | None = None
    holdout_correct: int | None = None
    oof_accuracy: float | None = None  # when the errors were found by students that never saw the examples
    parsed: int | None = None
    verified: int | None = None
    duplicate: int | None = None
    contaminated: int | None = None
    seconds: float | None = None


class FinalModel(Record):
    """The student kept at the end when seeds were held out: all seeds plus the data of the winning round."""

    kept_iteration: int
    train_size: int
    added: int
    test_accuracy: float
    holdout_accuracy: list[float]


class Preflight(Record):
    """The teacher as a labeller before the loop, and the first student beside it."""

    teacher_accuracy: float
    correct: int
    total: int
    teacher: str
    student_seed_accuracy: float | None = None
    student_holdout_accuracy: float | None = None
    student_oof_accuracy: float | None = None
    warning: str | None = None


class TeacherServer(Record):
    """One server of the teacher's pool: what it is, and how many requests it answered in this run."""

    url: str
    model: str  # what it reports serving (the run's teacher identity, unless pinned)
    software: str = ""
    version: str = ""
    constraint: str  # the field it honours for the verifier's labels, or "none" (teacher/dialects.py)
    answered: int = 0  # added up across the processes of a resumed run
    set_aside: int = 0  # stages it was set aside in (refused, timed out, 5xx)


class Manifest(Record):
    localaug_run: int = 1
    created: str
    config_fingerprint: str
    versions: dict[str, str] = {}
    models: dict[str, str] = {}  # role ("student", "teacher") -> identity
    teacher_cache: str | None = None
    stages: dict[str, SerializeAsAny[StageSummary]] = {}
    iterations: dict[str, IterationRow] = {}  # "00", "01", ...
    preflight: Preflight | None = None
    final: FinalModel | None = None
    finished: bool = False
    stopped_early: str | None = None
    teacher_servers: list[TeacherServer] = []  # a teacher behind servers (teacher/pool.py)
    # The stage begun and not yet marked done: where a run that is no longer alive stopped (None between stages).
    in_progress: str | None = None

    @field_validator("stages", mode="before")
    @classmethod
    def _typed_by_name(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        return {k: s if isinstance(s, StageSummary) else summary_type(k).model_validate(s) for k, s in v.items()}

    def rows(self) -> list[IterationRow]:
        """The finished rounds, in order."""
        return [self.iterations[k] for k in sorted(self.iterations)]
