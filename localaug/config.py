"""One RunConfig: defaults <- task card <- YAML file <- CLI options; validated; saved in every run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .data import load_yaml
from .errors import UserError

# What each recipe sets when the user leaves the field open (measured in docs/RESULTS.md).
RECIPES: dict[str, dict[str, Any]] = {
    # The paper's loop: its prompt, one new example per wrong seed, every teacher example kept.
    "paper": {"shots": 0, "verify": "none", "holdout": 0.0, "low_margin": 0.0},
    # For small local teachers: a same-label list prompt, teacher verification, 3 tries per wrong seed,
    # and a quarter of the seed set held out to decide whether augmentation is kept at all.
    "localaug": {"shots": 4, "verify": "teacher", "holdout": 0.25, "per_wrong": 3, "low_margin": 0.0},
}


@dataclass
class RunConfig:
    task: str = "demo"
    data_dir: str | None = None
    seed_size: int | None = None  # None: the task card's default
    seed_fraction: float | None = None
    seed: int = 0  # seed sampling, training, teacher sampling: one number makes a run reproducible
    train_seed: int | None = None  # a separate training seed (LoRA init, batch order); None: `seed`
    target: str = "wrong"  # wrong: the paper's loop; random: untargeted control (same count, random seeds)
    recipe: str = "localaug"  # localaug: the small-model recipe below; paper: the paper's loop as published
    shots: int | None = None  # teacher prompt: 0 = the paper's; k = list of k seed examples of the same label
    verify: str | None = None  # none | teacher: the teacher must give a new example's label before it is kept
    holdout: float | None = None  # fraction of the seed set held out to pick the final model (0: none)
    low_margin: float | None = None  # target at least this fraction of seeds: wrong + least-sure right ones
    iterations: int | None = None  # number of students trained (iteration 0 = plain fine-tuning)
    per_wrong: int | None = None  # new examples asked per wrong seed example (paper: 1)
    max_retries: int = 2  # extra teacher attempts for a wrong example that yielded nothing valid
    test_size: int | None = None  # evaluate on the first N test rows (None: card default / all)
    eval_mode: str | None = None  # score | generate (None: card default)
    student: str = "gemma3-270m"  # model card name/path, or "module:attr" for a plug-in backend
    student_settings: dict[str, Any] = field(default_factory=dict)  # card overrides, e.g. {epochs: 3}
    teacher: str = "gemma3-270m"
    teacher_url: str | None = None  # OpenAI-compatible server; the only way localaug opens a socket
    teacher_model: str | None = None
    teacher_api_key_env: str = "OPENAI_API_KEY"
    cache_path: str | None = None  # teacher cache (None: the user cache dir)
    dedup: dict[str, Any] = field(default_factory=dict)  # DedupConfig fields
    out: str | None = None

    def resolve(self, card_defaults: dict[str, Any]) -> RunConfig:
        """Fill what the user left open from the task card's defaults."""
        c = RunConfig(**asdict(self))
        if c.seed_size is None and c.seed_fraction is None:
            c.seed_size = int(card_defaults.get("seed_size", 50))
        if c.iterations is None:
            c.iterations = int(card_defaults.get("iterations", 3))
        preset = RECIPES.get(c.recipe, {})
        for name, value in preset.items():
            if getattr(c, name) is None:
                setattr(c, name, value)
        if c.per_wrong is None:
            c.per_wrong = int(card_defaults.get("per_wrong", 1))
        if c.test_size is None and card_defaults.get("test_size") is not None:
            c.test_size = int(card_defaults["test_size"])
        if c.eval_mode is None and card_defaults.get("eval_mode"):
            c.eval_mode = str(card_defaults["eval_mode"])
        # The task's training defaults first, the user's settings over them.
        c.student_settings = {**dict(card_defaults.get("student_settings") or {}), **c.student_settings}
        c.validate()
        return c

    def validate(self, source: str | None = None) -> None:
        def bad(name: str, msg: str) -> UserError:
            return UserError(msg, file=source, field=name)

        if self.seed_size is not None and self.seed_fraction is not None:
            raise bad("seed_size", "give seed_size or seed_fraction, not both")
        if self.seed_size is not None and self.seed_size < 1:
            raise bad("seed_size", f"must be >= 1, got {self.seed_size}")
        if self.seed_fraction is not None and not 0 < self.seed_fraction <= 1:
            raise bad("seed_fraction", f"must be in (0, 1], got {self.seed_fraction}")
        if self.iterations is not None and self.iterations < 1:
            raise bad("iterations", f"must be >= 1, got {self.iterations}")
        if self.per_wrong is not None and self.per_wrong < 1:
            raise bad("per_wrong", f"must be >= 1, got {self.per_wrong}")
        if self.max_retries < 0:
            raise bad("max_retries", f"must be >= 0, got {self.max_retries}")
        if self.recipe not in RECIPES:
            raise bad("recipe", f"must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        if self.shots is not None and (not isinstance(self.shots, int) or self.shots < 0):
            raise bad("shots", f"must be an integer >= 0, got {self.shots!r}")
        if self.verify not in (None, "none", "teacher"):
            raise bad("verify", f"must be 'none' or 'teacher', got {self.verify!r}")
        if self.holdout is not None and not (isinstance(self.holdout, int | float) and 0 <= self.holdout < 1):
            raise bad("holdout", f"must be a fraction in [0, 1), got {self.holdout!r}")
        if self.low_margin is not None and not (isinstance(self.low_margin, int | float) and 0 <= self.low_margin <= 1):
            raise bad("low_margin", f"must be a fraction in [0, 1], got {self.low_margin!r}")
        if self.target not in ("wrong", "random"):
            raise bad("target", f"must be 'wrong' or 'random', got {self.target!r}")
        if self.eval_mode not in (None, "score", "generate"):
            raise bad("eval_mode", f"must be 'score' or 'generate', got {self.eval_mode!r}")
        if self.teacher_url is not None and not self.teacher_url.startswith(("http://", "https://")):
            raise bad("teacher_url", f"must start with http:// or https://, got {self.teacher_url!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        """What makes two runs the same run (the output dir is not part of it)."""
        d = self.to_dict()
        d.pop("out", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


_TYPES = {f.name: f.type for f in fields(RunConfig)}


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("config file not found", file=p) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config ({e.__class__.__name__})", file=p) from None
    raw = load_yaml(text, p) or {}
    if not isinstance(raw, dict):
        raise UserError("a run config must be a YAML mapping", file=p)
    for k in raw:
        if k not in _TYPES:
            raise UserError(f"unknown key (allowed: {', '.join(sorted(_TYPES))})", file=p, field=str(k))
    return raw


def build_config(file: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Config from an optional YAML file plus CLI overrides (None means 'not given')."""
    values: dict[str, Any] = load_config_file(file) if file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = RunConfig(**values)
    except TypeError as e:
        raise UserError(str(e), file=file) from None
    for name in ("seed_size", "iterations", "per_wrong", "max_retries", "seed", "test_size", "train_seed", "shots"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise UserError(f"must be an integer, got {v!r}", file=file, field=name)
    for name in ("dedup", "student_settings"):
        if not isinstance(getattr(cfg, name), dict):
            raise UserError("must be a mapping", file=file, field=name)
    cfg.validate(str(file) if file else None)
    return cfg


def save_config(cfg: RunConfig, path: Path) -> None:
    from .data import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
