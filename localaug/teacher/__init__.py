"""Teachers: a GGUF model in this process (llama.cpp), or an OpenAI-compatible server over HTTP.

`build_teacher()` returns an object that satisfies `protocols.Teacher`:
- no `url`: the model card's GGUF, run in this process by llama.cpp (`llamacpp.py`);
- a `url`: an OpenAI-compatible server (llama-server, vLLM, Ollama, llama_cpp.server) over HTTP
  (`http.py`) -- the only code path in localaug that opens a socket.
Runs wrap it in `cache.CachedTeacher` (see `localaug.backends.make_teacher`), so a generation is never
paid for twice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..modelcards import DEFAULT_TEACHER, load_model_card
from ..protocols import Teacher


def build_teacher(card: str | Path | None = None, *, url: str | None = None, model: str | None = None,
                  api_key_env: str = "OPENAI_API_KEY", **opts: Any) -> Teacher:
    """A teacher from a model card, or from a server URL.

    In process (no `url`): `opts` override the card's `teacher:` section (n_ctx, n_threads, batch_sequences,
    n_gpu_layers). Over HTTP (`url` and `model`): `card`, when given, only says whether the model wants
    chat or raw completion prompts (default: chat); `opts` are HttpTeacher options (concurrency, timeout_s,
    retries, chat_template)."""
    if url is None:
        from .llamacpp import LlamaCppTeacher

        mc = load_model_card(card or DEFAULT_TEACHER)
        settings = {**mc.teacher.model_dump(exclude_none=True), **{k: v for k, v in opts.items() if v is not None}}
        return LlamaCppTeacher(mc.gguf_file(), chat_template=mc.chat_template, **settings)
    from .http import HttpTeacher

    if not model:
        raise UserError("the http teacher needs a model name (--teacher-model NAME)")
    chat = opts.pop("chat_template", None)
    if chat is None and card is not None:
        chat = load_model_card(card).chat_template
    return HttpTeacher(url, model, api_key=os.environ.get(api_key_env) or None,
                       prefers_completion=chat is False, **opts)
