"""Which code builds a student or a teacher: model cards, installed plug-ins, and nothing a file can name.

A backend spec, wherever it is written (a run config, a task's defaults, a run directory's config.yaml,
`--student` / `--teacher`), is data: the path of a model card, a built-in card's name, or the name of an
installed plug-in. Plug-ins are Python distributions that declare an entry point in the group
`localaug.students` or `localaug.teachers` (the way simonw/llm finds its plug-ins): installing one is the
user's decision, naming one in a file only picks among what is installed. A Python factory
`module:factory` runs arbitrary code, so it is accepted only from the command line, behind
`--student-factory` / `--teacher-factory`, never from a file: a config or a run folder someone else wrote
cannot make localaug run code (tests/test_plugins.py holds the canaries).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from .cards import builtin_card, builtin_names
from .errors import UserError

Role = Literal["student", "teacher"]
GROUPS: dict[str, str] = {"student": "localaug.students", "teacher": "localaug.teachers"}
_CODE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class Plugin:
    role: str
    name: str
    target: str  # "module:attr", as the distribution declares it
    dist: str  # "name version" of the distribution that declares it


def installed(role: str | None = None) -> list[Plugin]:
    """Every installed plug-in (of one role), sorted by role and name."""
    out = []
    for r, group in GROUPS.items():
        if role is not None and r != role:
            continue
        for ep in entry_points(group=group):
            dist = f"{ep.dist.metadata['Name']} {ep.dist.version}" if ep.dist is not None else "?"
            out.append(Plugin(r, ep.name, ep.value, dist))
    return sorted(out, key=lambda p: (p.role, p.name))


def looks_like_code(spec: str) -> bool:
    """`package.module:factory` (and not a file that happens to exist under that name)."""
    return bool(_CODE.fullmatch(spec)) and not Path(spec).exists()


def _is_card_path(spec: str) -> bool:
    return Path(spec).suffix in (".yaml", ".yml") or Path(spec).is_file()


@dataclass(frozen=True)
class Backend:
    """What a spec names. `kind`: "card" (a model card, built in or a path), "plugin", or "code"."""

    role: str
    spec: str
    kind: Literal["card", "plugin", "code"]

    @property
    def is_card(self) -> bool:
        return self.kind == "card"

    def build(self, settings: dict[str, Any]) -> Any:
        """Call the plug-in's or factory's callable with the run's settings for this role."""
        if self.kind == "plugin":
            ep = next(ep for ep in entry_points(group=GROUPS[self.role]) if ep.name == self.spec)
            try:
                factory = ep.load()
            except Exception as e:  # noqa: BLE001 - an installed plug-in that fails to import
                raise UserError(f"the {self.role} plug-in '{self.spec}' ({ep.value}) failed to load "
                                f"({type(e).__name__}: {e})") from None
        else:
            module, _, attr = self.spec.partition(":")
            try:
                factory = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise UserError(f"cannot load the {self.role} factory '{self.spec}' ({e})") from None
        return _call(factory, settings, f"{self.role} {self.kind} '{self.spec}'")


def _call(factory: Any, settings: dict[str, Any], what: str) -> Any:
    import inspect

    try:
        inspect.signature(factory).bind(**settings)
    except TypeError as e:
        raise UserError(f"the {what} does not take the run's settings {sorted(settings)} ({e})") from None
    except ValueError:  # no signature to check (a builtin): let the call tell
        pass
    return factory(**settings)


def resolve(role: Role, spec: str, *, factory: str | None = None, source: str | Path | None = None) -> Backend:
    """What `spec` names, or a one-line error; nothing is imported or loaded here.

    `factory` is the value of --student-factory / --teacher-factory when the command line gave one: the only
    way a `module:factory` spec is accepted. `source` is the file the spec was read from, for the message."""
    if factory is not None and spec == factory:
        return Backend(role, spec, "code")
    if _is_card_path(spec) or builtin_card("models", spec) is not None:
        return Backend(role, spec, "card")
    if any(p.name == spec for p in installed(role)):
        return Backend(role, spec, "plugin")
    if looks_like_code(spec):
        raise UserError(f"'{spec}' names Python code, which a run config, a card or a run directory may not: "
                        f"name a model card or an installed plug-in (`localaug plugins`), or pass "
                        f"--{role}-factory {spec} on the command line to run it", file=source, field=role)
    plugins = ", ".join(p.name for p in installed(role)) or "none"
    raise UserError(f"unknown {role} '{spec}' (built-in cards: {', '.join(builtin_names('models'))}; installed "
                    f"{role} plug-ins: {plugins}; or the path of a .yaml model card)", file=source, field=role)
