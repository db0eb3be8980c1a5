"""The run configuration: defaults <- recipe <- task card <- YAML file <- CLI options, resolved once.

`Settings` is a resolved run: every field holds a value. `RunConfig` is what a user writes (a YAML file,
CLI options): the same fields, each optional, so "not given" and "given" are told apart until
`resolve()` fills the gaps. The defaults live here and in `RECIPES`, nowhere else.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, create_model, model_validator

from .errors import UserError
from .modelcards import DEFAULT_STUDENT, DEFAULT_TEACHER
from .schema import Strict, load_yaml_model, validate

Fraction = Field(ge=0, lt=1)

# What each recipe sets when the user leaves the field open (measured in docs/RESULTS.md).
RECIPES: dict[str, dict[str, Any]] = {
    # The paper's loop: its prompt, one new example per wrong seed, every teacher example kept, and no teacher
    # call before the first augment stage (no preflight).
    "paper": {"shots": 0, "verify": "none", "holdout": 0.0, "preflight": 0},
    # localaug: out-of-fold error finding (a converged student gets its own seeds right), a same-label list
    # prompt with 3 samples per target, and teacher verification (docs/RESULTS.md, "Development").
    "localaug": {"shots": 4, "verify": "teacher", "holdout": 0.0, "per_wrong": 3, "find_errors": "oof", "folds": 2},
}


class Settings(Strict):
    """A resolved run. Field descriptions are the reference for run-config keys."""

    task: str = Field("demo", description="task name or card path")
    data_dir: str | None = Field(None, description="root of task data (None: $LOCALAUG_DATA_DIR, then ./data)")
    seed_size: int | None = Field(None, ge=1, description="seed examples drawn from the train split")
    seed_fraction: float | None = Field(None, gt=0, le=1, description="or: this fraction of the train split")
    seed: int = Field(0, description="seed sampling, training, teacher sampling: one number fixes a run")
    train_seed: int | None = Field(None, description="a separate training seed (None: `seed`)")
    target: Literal["wrong", "random"] = Field(
        "wrong", description="wrong: the paper's loop; random: untargeted control (as many random seed examples)")
    recipe: Literal["localaug", "paper"] = "localaug"
    shots: int = Field(ge=0, description="teacher prompt: 0 = the paper's; k = list of k same-label seeds")
    verify: Literal["none", "teacher"] = Field(description="teacher: it must give a new example's label")
    holdout: float = Field(ge=0, lt=1, description="fraction of the seed set held out to choose the final model")
    low_margin: float = Field(0.0, ge=0, le=1,
                              description="target at least this fraction of seeds: wrong + least-sure right")
    iterations: int = Field(ge=1, description="students trained (iteration 0 = plain fine-tuning)")
    per_wrong: int = Field(ge=1, description="new examples asked per wrong seed example (paper: 1)")
    max_targets: int | None = Field(None, ge=1, description="a teacher budget: at most this many targets per "
                                                            "iteration, a seeded random share (None: all)")
    max_retries: int = Field(2, ge=0, description="extra teacher attempts for a target that yielded nothing")
    preflight: int = Field(64, ge=0, description="seed examples the teacher labels before the loop (0: none)")
    test_size: int | None = Field(None, ge=1, description="evaluate on the first N test rows (None: all)")
    test_offset: int = Field(0, ge=0, description="skip this many test rows first (studies keep rows apart)")
    find_errors: Literal["student", "oof"] = Field(
        "student", description="student: the paper (M_i on its own seeds); oof: k students that never saw them")
    folds: int = Field(4, ge=2, description="students for out-of-fold error finding (find_errors: oof)")
    match_style: bool = Field(False, description="rewrite the teacher's text in the seeds' style (lower case, "
                                                 "tokenised punctuation: localaug.style); classification")
    refuse_non_examples: bool = Field(False, description="the verifier may answer 'not an example' (a refusal, "
                                                         "a note) instead of a label; classification")
    filter: Literal["none", "students"] = Field(
        "none", description="students: keep a candidate only if a student that never saw its source agrees")
    eval_mode: Literal["score", "generate"] | None = Field(None, description="None: the task's default")
    eval_backend: Literal["transformers", "llamacpp"] = Field(
        "transformers", description="the student's evaluation engine; llamacpp: its base GGUF plus the adapter "
                                    "as a llama.cpp LoRA, batched (training stays transformers)")
    student: str = Field(DEFAULT_STUDENT, description="model card name or path, or an installed plug-in's name")
    student_settings: dict[str, Any] = Field(default_factory=dict, description="card overrides: {epochs: 3}")
    teacher: str = Field(DEFAULT_TEACHER, description="model card name or path, or an installed plug-in's name")
    teacher_settings: dict[str, Any] = Field(default_factory=dict,
                                             description="card overrides: {n_ctx: 4096, batch_sequences: 4}")
    teacher_url: str | None = Field(None, pattern=r"^https?://",
                                    description="OpenAI-compatible server: the only way localaug opens a socket")
    teacher_urls: list[str] | None = Field(None, min_length=1,
                                           description="several servers of one model: a pool (docs/teachers.md)")
    teacher_model: str | None = Field(None, description="model name on the server(s) (None: the one they serve)")
    teacher_identity: str | None = Field(None, description="the served teacher's cache identity (None: the model "
                                                           "the servers report)")
    teacher_api_key_env: str = "OPENAI_API_KEY"
    cache_path: str | None = Field(None, description="teacher cache file (None: the user cache dir)")
    dedup: dict[str, Any] = Field(default_factory=dict, description="DedupConfig fields")
    out: str | None = Field(None, description="run directory (not part of the run's identity)")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.seed_size is not None and self.seed_fraction is not None:
            raise ValueError("give seed_size or seed_fraction, not both")
        if self.filter == "students" and self.find_errors != "oof":
            raise ValueError("filter: students needs find_errors: oof (its students judge the candidates)")
        if self.teacher_url and self.teacher_urls:
            raise ValueError("give teacher_url or teacher_urls, not both")
        bad = [u for u in self.teacher_urls or [] if not u.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"teacher_urls: '{bad[0]}' must look like http://HOST:PORT/v1")
        return self

    def held_out_count(self, seed_size: int) -> int:
        """How many of `seed_size` seed examples `holdout` keeps out; an error when either side is under 2."""
        if self.holdout <= 0:
            return 0
        n = round(self.holdout * seed_size)
        if n < 2 or seed_size - n < 2:
            raise UserError(f"holdout {self.holdout} of a {seed_size}-example seed set leaves too little on one "
                            f"side ({n} held out, {seed_size - n} for the loop; each needs 2); use a larger seed set "
                            "or holdout: 0", field="holdout")
        return n

    @property
    def teacher_servers(self) -> list[str]:
        """The configured teacher servers (none: the in-process teacher)."""
        return list(self.teacher_urls or ([self.teacher_url] if self.teacher_url else []))

    @property
    def training_seed(self) -> int:
        return self.seed if self.train_seed is None else self.train_seed

    def fingerprint(self) -> str:
        """What makes two runs the same run. Not the output dir, nor the teacher servers' addresses: a run
        resumed with another replica or a moved server is the same run (the teacher's model is checked)."""
        d = self.model_dump(exclude={"out", "teacher_urls"})
        d["teacher_url"] = None  # kept as a key (and a new field left unset is left out): older runs keep theirs
        if d.get("teacher_identity") is None:
            d.pop("teacher_identity", None)
        if d.get("eval_backend") == "transformers":  # the default: runs made before the setting keep their identity
            del d["eval_backend"]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# What a user writes: every Settings field, optional (None = not given).
RunConfig = create_model(  # type: ignore[call-overload]
    "RunConfig", __base__=Strict,
    **{name: (f.annotation | None, None) for name, f in Settings.model_fields.items()},
)


def resolve(cfg: Any, card_defaults: Any = None, source: str | Path | None = None) -> Settings:
    """Fill what the user left open: recipe presets, then the task card's defaults, then global ones.

    `card_defaults` is a task card's `defaults` section (`tasks.card.TaskDefaults`) or None."""
    given = {k: v for k, v in cfg.model_dump().items() if v is not None}
    card = card_defaults.model_dump(exclude_none=True) if card_defaults is not None else {}
    values: dict[str, Any] = {"iterations": 3, "per_wrong": 1}
    values.update({k: card[k] for k in ("iterations", "per_wrong", "test_size", "eval_mode", "match_style",
                                             "refuse_non_examples") if k in card})
    values.update(RECIPES.get(given.get("recipe", "localaug"), {}))
    if "seed_size" not in given and "seed_fraction" not in given:
        values["seed_size"] = card.get("seed_size", 50)
    values.update(given)
    # The task's training defaults first, the user's settings over them.
    values["student_settings"] = {**card.get("student_settings", {}), **given.get("student_settings", {})}
    return validate(Settings, values, source)


def load_config_file(path: str | Path) -> Any:
    return load_yaml_model(RunConfig, Path(path), "config file")


def build_config(file: str | Path | None = None, **overrides: Any) -> Any:
    """A RunConfig from an optional YAML file plus CLI overrides (None means 'not given')."""
    base = load_config_file(file).model_dump(exclude_none=True) if file else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return validate(RunConfig, base, file)


def save_config(settings: Settings, path: Path) -> None:
    from .files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(settings.model_dump(), sort_keys=False))


def load_settings(path: Path) -> Settings:
    """The resolved settings a run directory saved (config.yaml)."""
    cfg = load_yaml_model(RunConfig, path, "run config")
    if cfg.recipe is None or cfg.iterations is None:
        raise UserError("is not a resolved run config (recipe or iterations missing)", file=path)
    return validate(Settings, cfg.model_dump(exclude_none=True), path)
