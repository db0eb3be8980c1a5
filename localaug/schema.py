"""What users write, typed: the base model of every card and config, and how a bad one is reported.

Run configs (`config.py`), task cards (`tasks/card.py`) and model cards (`modelcards.py`) are pydantic
models built on `Strict`: unknown keys are errors (a typo must never fall back to a default), and a
validation error becomes one `UserError` line naming the file, the YAML line and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .data import load_yaml
from .errors import UserError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Unknown keys are errors; YAML numbers are accepted where text is expected (`wrong: 12`)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, validate_assignment=True)


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "missing key"
    msg = str(err["msg"])
    msg = msg[0].lower() + msg[1:] if msg else msg
    if err["type"] not in ("value_error", "assertion_error"):
        msg += f", got {err.get('input')!r}"
    return msg.removeprefix("value error, ")


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a section of `model` accepts, for 'unknown key' errors."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
    return sorted(getattr(current, "model_fields", {}))


def yaml_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at `loc` (keys and list indexes), or of its nearest parent."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if str(k.value) == str(part)), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def validate(model: type[M], raw: Any, file: str | Path | None = None, text: str | None = None,
             prefix: str = "") -> M:
    """`model` from parsed data, or a one-line UserError naming the file, line and field."""
    try:
        return model.model_validate(raw if raw is not None else {})
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = _message(err)
        if err["type"] == "extra_forbidden":
            allowed = _allowed(model, loc)
            if allowed:
                msg += f" (allowed: {', '.join(allowed)})"
        field = prefix + ".".join(str(p) for p in loc) if loc else (prefix.rstrip(".") or None)
        line = yaml_line(text, loc) if text is not None and loc else None
        raise UserError(msg, file=file, line=line, field=field) from None


def load_yaml_model(model: type[M], path: Path, what: str) -> M:
    """Read and validate a YAML file (a card or a run config)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found", file=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {what} ({e.__class__.__name__})", file=path) from None
    raw = load_yaml(text, path)
    if raw is not None and not isinstance(raw, dict):
        raise UserError(f"a {what} must be a YAML mapping", file=path)
    return validate(model, raw, path, text)
