"""How a server is asked to answer with one of a few strings: the constraint dialects, and the probe.

Servers disagree on the field, and most ignore a field they do not know instead of refusing it:
- `structured_outputs: {"choice": [...]}`: vLLM >= 0.12 (it removed `guided_choice` then, and ignores it
  with a log line: the reply is not constrained);
- `guided_choice: [...]`: vLLM before 0.12;
- `grammar`: a GBNF grammar, llama.cpp's servers (`llama-server`, `python -m llama_cpp.server`).
So which field works is measured, not assumed: `probe` sends a request whose free answer is a number
("1, 2, 3, 4, 5," continues with 6) and whose constrained answer must be one of two words; the first
dialect whose reply is exactly one of the words is the server's. The order tried first follows what the
server says it is (its software and version), so a probe usually costs one tiny request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .common import choice_grammar

STRUCTURED_OUTPUTS = "structured_outputs"
GUIDED_CHOICE = "guided_choice"
GRAMMAR = "grammar"
NONE = "none"  # the server honours none: the verifier reads its label from the first line of free text
DIALECTS = (STRUCTURED_OUTPUTS, GUIDED_CHOICE, GRAMMAR)

PROBE_PROMPT = "1, 2, 3, 4, 5,"
PROBE_CHOICES = (" apple", " zebra")


def constraint_fields(dialect: str, choices: Sequence[str]) -> dict[str, Any]:
    """The request fields that ask a server of this dialect to answer with one of `choices`."""
    if dialect == STRUCTURED_OUTPUTS:
        return {"structured_outputs": {"choice": list(choices)}}
    if dialect == GUIDED_CHOICE:
        return {"guided_choice": list(choices)}
    if dialect == GRAMMAR:
        return {"grammar": choice_grammar(choices)}
    return {}


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for p in version.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(p):  # "12rc1": stop after the number
            break
    return tuple(parts)


def probe_order(software: str, version: str) -> tuple[str, ...]:
    """The dialects to try, most likely first, for what the server says it is."""
    if software == "vllm":
        v = _version_tuple(version)
        if v and v < (0, 12):
            return (GUIDED_CHOICE, STRUCTURED_OUTPUTS, GRAMMAR)
        return DIALECTS
    if software.startswith("llama"):
        return (GRAMMAR, STRUCTURED_OUTPUTS, GUIDED_CHOICE)
    return DIALECTS


# The probe's transport: (extra request fields) -> the reply's text, or None when the server refused the
# request (an HTTP 4xx: a server that validates its fields strictly). Server failures propagate.
SendFn = Callable[[dict[str, Any]], str | None]


def probe_body(model: str) -> dict[str, Any]:
    return {"model": model, "prompt": PROBE_PROMPT, "max_tokens": 8, "temperature": 0.0, "top_p": 1.0,
            "seed": 0, "n": 1}


def probe(send: SendFn, order: Sequence[str]) -> tuple[str, list[str]]:
    """The first dialect in `order` that constrains the probe's answer, or NONE; and what each try said."""
    tried: list[str] = []
    for dialect in order:
        text = send(constraint_fields(dialect, PROBE_CHOICES))
        if text is not None and text.strip() in {c.strip() for c in PROBE_CHOICES}:
            return dialect, tried
        tried.append(f"{dialect}: " + ("refused" if text is None else f"free answer {text.strip()[:20]!r}"))
    return NONE, tried
