"""Teachers: a GGUF model in this process (llama.cpp), or one or several OpenAI-compatible servers over HTTP.

`build_teacher()` returns an object that satisfies `protocols.Teacher`:
- no `url`: the model card's GGUF, run in this process by llama.cpp (`llamacpp.py`);
- one or several URLs: servers of one model (llama-server, vLLM, Ollama, llama_cpp.server), each checked
  before anything is written (`servers.py`), as a pool (`pool.py`) -- the only code path in localaug that
  opens a socket.
Runs wrap it in `cache.CachedTeacher` (see `localaug.backends.make_teacher`), so a generation is never
paid for twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..modelcards import DEFAULT_TEACHER, load_model_card
from ..protocols import Teacher

# ServerClient (one server's client) options; the rest of `opts` are the pool's.
_CLIENT_OPTS = ("timeout_s", "connect_timeout_s", "retries", "backoff_s")


def build_teacher(card: str | Path | None = None, *, url: str | Sequence[str] | None = None,
                  model: str | None = None, identity: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                  **opts: Any) -> Teacher:
    """A teacher from a model card, or from server URLs.

    In process (no `url`): `opts` override the card's `teacher:` section (n_ctx, n_threads, batch_sequences,
    n_gpu_layers). Over HTTP (`url`: one or several): every server is checked first (servers.py); `model`
    is the name on the servers (None: the one model they serve); `identity` pins the cache identity
    (None: the model the servers report); `card`, when given, only says whether the model wants chat or raw
    completion prompts (default: chat); `opts`: concurrency (per server), timeout_s, connect_timeout_s,
    retries, backoff_s, chat_template."""
    if url is None:
        from .llamacpp import LlamaCppTeacher

        mc = load_model_card(card or DEFAULT_TEACHER)
        settings = {**mc.teacher.model_dump(exclude_none=True), **{k: v for k, v in opts.items() if v is not None}}
        return LlamaCppTeacher(mc.gguf_file(), chat_template=mc.chat_template, **settings)
    from .http import ServerClient
    from .pool import TeacherPool
    from .servers import check_servers

    urls = [url] if isinstance(url, str) else list(url)
    chat = opts.pop("chat_template", None)
    if chat is None:
        chat = load_model_card(card).chat_template if card is not None else True
    client_opts = {k: opts.pop(k) for k in _CLIENT_OPTS if k in opts}
    unknown = sorted(set(opts) - {"concurrency"})
    if unknown:
        raise UserError(f"teacher_settings for a server teacher: unknown {', '.join(unknown)} (known: "
                        f"concurrency, chat_template, {', '.join(_CLIENT_OPTS)})", field="teacher_settings")
    api_key = os.environ.get(api_key_env) or None
    clients = [ServerClient(u, model or "", api_key=api_key, **client_opts) for u in urls]
    infos = check_servers(clients, model, chat=bool(chat), pinned_identity=identity)
    return TeacherPool(list(zip(clients, infos, strict=True)), identity=identity or infos[0].reported,
                       prefers_completion=not chat, **opts)
