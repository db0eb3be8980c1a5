"""The pre-run check of every configured teacher server: nothing is trained or written before it passes.

For each server: /v1/models answers and lists the named model; when the teacher writes in chat, the chat
endpoint answers one tiny request (a base model served without a chat template fails here, not after the
students have trained); and a probe finds the constraint field it honours (dialects.py). Across a pool:
every server must report the same model, since they share one cache identity (the model, never the URL).
Any failure is one line (`UserError`, exit 2).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from . import dialects
from .http import ServerClient, ServerFailure


@dataclass
class ServerInfo:
    url: str
    model: str  # the name requests carry
    reported: str  # what the server says the model is: vLLM's `root` (the weights it loaded), else the id
    software: str
    version: str
    dialect: str
    tried: list[str] = field(default_factory=list)  # dialects that did not constrain the probe

    def describe(self) -> str:
        return " ".join(p for p in (self.software, self.version) if p) or "unknown server"


# Probes already made in this process, per server and version: a teacher built again skips them.
_PROBED: dict[tuple[str, str, str, str], tuple[str, list[str]]] = {}


def _served_model(client: ServerClient, model: str | None, entries: list[dict[str, Any]] | None) -> tuple[str, str]:
    """(the model name to request, what the server reports it to be), checked against the listing."""
    if entries is None:  # no listing (some servers): the name is all there is; the first request will tell
        if not model:
            raise UserError(f"teacher server at {client.base_url} lists no models: name one with --teacher-model")
        return model, model
    ids = [str(m.get("id")) for m in entries]
    if not model:
        if len(ids) != 1:
            raise UserError(f"teacher server at {client.base_url} serves {len(ids)} models "
                            f"({', '.join(ids[:10]) or 'none'}): name one with --teacher-model")
        model = ids[0]
    if model not in ids:
        raise UserError(f"teacher server at {client.base_url} does not serve model '{model}' "
                        f"(it serves: {', '.join(ids[:10]) or 'nothing'})")
    entry = entries[ids.index(model)]
    return model, str(entry.get("root") or entry.get("id"))


def check_server(client: ServerClient, model: str | None, *, chat: bool) -> ServerInfo:
    try:
        return _check(client, model, chat=chat)
    except ServerFailure as e:
        raise UserError(f"teacher server at {client.base_url} is unreachable or failing ({e.reason}); "
                        "is it running?") from None


def _check(client: ServerClient, model: str | None, *, chat: bool) -> ServerInfo:
    entries = client.models()
    name, reported = _served_model(client, model, entries)
    client.model = name
    software, version = client.software(entries)
    if chat:
        problem = client.chat_problem()
        if problem is not None:
            raise UserError(
                f"teacher server at {client.base_url} cannot answer chat requests ({problem[:160]}), and the "
                "teacher card writes in chat: serve an instruction-tuned model with a chat template, or name a "
                "card with chat_template: false (--teacher CARD)")
    key = (client.base_url, software, version, name)
    if key not in _PROBED:
        _PROBED[key] = client.probe_dialect(software, version)
    client.dialect, tried = _PROBED[key]
    return ServerInfo(client.base_url, name, reported, software, version, client.dialect, list(tried))


def check_servers(clients: list[ServerClient], model: str | None, *, chat: bool,
                  pinned_identity: str | None = None) -> list[ServerInfo]:
    """Check every server (see the module's docstring); warn about one that honours no constraint."""
    urls = [c.base_url for c in clients]
    if len(set(urls)) != len(urls):
        raise UserError(f"a teacher server is listed twice: {', '.join(u for u in urls if urls.count(u) > 1)}")
    infos = [check_server(c, model, chat=chat) for c in clients]
    if pinned_identity is None and len({i.reported for i in infos}) > 1:
        served = "; ".join(f"{i.url} serves {i.reported}" for i in infos)
        raise UserError(f"the teacher servers serve different models ({served}): a pool must serve one model; "
                        "if they are the same weights, pin one name with teacher_identity: NAME")
    for i in infos:
        if i.dialect == dialects.NONE:
            sys.stderr.write(
                f"localaug: warning: teacher server {i.url} ({i.describe()}) honours none of "
                f"{', '.join(dialects.DIALECTS)}: the verifier reads its label from the first line of free "
                "text (docs/teachers.md)\n")
    return infos
