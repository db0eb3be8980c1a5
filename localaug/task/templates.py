"""Every template of a task card, rendered once against the fields its rows have, before any work.

A `{foo}` that no row of the card's kind provides would otherwise surface as a KeyError deep in a run, after
the students have trained (the student prompt) or never at all until a recipe uses it (`teacher.new`). The
card's worked example (`teacher.example`) stands in for a row: it holds the kind's fields by definition, and
it is validated here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import UserError
from ..schema import yaml_line
from .kinds import Where
from .task import Task


def _templates(task: Task) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(card key, template, the fields it is rendered with) for every template the code renders."""
    kind, labels, card = task.kind, task.labels, task.card
    where = Where(str(task.path))
    original = kind.validate(dict(card.teacher.example.original), labels, where)
    new = kind.validate(dict(card.teacher.example.new), labels, where)
    fields = kind.fields(original, labels)
    yield "student.prompt", card.student.prompt, fields
    yield "student.answer", card.student.answer, fields
    if kind.has_choices:
        for choice in kind.choice_fields(original, labels):
            yield "student.answer", card.student.answer, choice
    yield "teacher.original", card.teacher.original, {**fields, "wrong": card.teacher.example.wrong}
    yield "teacher.new", card.teacher.new, kind.fields(new, labels)
    if card.teacher.shot is not None:
        yield "teacher.shot", card.teacher.shot, fields
    if card.teacher.shots_header:
        yield "teacher.shots_header", card.teacher.shots_header, fields


def check_templates(task: Task) -> None:
    """Render each template of `task`'s card; a one-line UserError naming the card, line and key if one fails."""
    text: str | None = None
    for key, template, fields in _templates(task):
        try:
            template.format(**fields)
            continue
        except KeyError as e:
            problem = (f"the template names {{{e.args[0]}}}, which a {task.kind.name} row does not have "
                       f"(its fields: {', '.join('{' + f + '}' for f in sorted(fields))})")
        except (ValueError, IndexError) as e:
            problem = f"is not a valid template ({e}); write a literal brace as {{{{ or }}}}"
        if text is None:
            try:
                text = task.path.read_text(encoding="utf-8")
            except OSError:
                text = ""
        raise UserError(problem, file=task.path, line=yaml_line(text, tuple(key.split("."))), field=key)
