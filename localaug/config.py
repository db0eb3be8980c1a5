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


@dataclass
class RunConfig:
    task: str = "demo"
    data_dir: str | None = None
    seed_size: int | None = None  # None: the task card's default
    seed_fraction: float | None = None
    seed: int = 0  # seed sampling, training, teacher sampling: one number makes a run reproducible
    train_seed: int | None = None  # a separate training seed (LoRA init, batch order); None: `seed`
    target: str = "wrong"  # wrong: the paper's loop; random: untargeted control (same count, random seeds)
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
    for name in ("seed_size", "iterations", "per_wrong", "max_retries", "seed", "test_size", "train_seed"):
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
