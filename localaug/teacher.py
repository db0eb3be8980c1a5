"""Teacher backends behind one factory.

`make_teacher()` returns something that satisfies `protocols.Teacher`:
- no `base_url`: a GGUF model card run in this process by llama.cpp (`teacher_llamacpp`);
- a `base_url`: an OpenAI-compatible server (llama-server, vLLM, Ollama, llama_cpp.server) over HTTP
  (`teacher_http`) -- the only code path in localaug that opens a socket.

Backends register by name (as in simonw/llm), so a new one is a class plus one `register()` line.
Wrap the result in `cache.CachedTeacher` to never pay twice for the same generation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UserError
from .modelcards import DEFAULT_MODEL, load_model_card
from .protocols import Teacher

BackendFactory = Callable[..., Teacher]
_BACKENDS: dict[str, BackendFactory] = {}


def register(name: str, factory: BackendFactory) -> None:
    _BACKENDS[name] = factory


def backends() -> list[str]:
    return sorted(_BACKENDS)


def _llamacpp(card: str | Path | None = DEFAULT_MODEL, **opts: Any) -> Teacher:
    from .teacher_llamacpp import LlamaCppTeacher

    mc = load_model_card(card or DEFAULT_MODEL)
    settings = {k: v for k, v in mc.teacher.items() if v is not None}
    settings.update({k: v for k, v in opts.items() if v is not None})
    return LlamaCppTeacher(mc.gguf_file(), chat_template=mc.chat_template, **settings)


def _http(
    card: str | Path | None = None, *, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
    **opts: Any,
) -> Teacher:
    from .teacher_http import HttpTeacher

    chat = opts.pop("chat_template", None)
    if chat is None and card is not None:
        chat = load_model_card(card).chat_template
    return HttpTeacher(base_url, model, api_key=os.environ.get(api_key_env) or None,
                       prefers_completion=not chat if chat is not None else False, **opts)


register("llama.cpp", _llamacpp)
register("http", _http)


def make_teacher(
    card: str | Path | None = DEFAULT_MODEL,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    backend: str | None = None,
    **opts: Any,
) -> Teacher:
    """Build a teacher.

    Without `base_url`: llama.cpp in process on the card's GGUF (`opts` override the card's `teacher:`
    settings: n_ctx, n_threads, batch_sequences, n_gpu_layers). With `base_url` (and `model`): the
    OpenAI-compatible server there; `card`, if given, only says whether the model wants chat or raw
    completion prompts (default chat). HTTP options: concurrency, timeout_s, retries.
    """
    name = backend or ("http" if base_url else "llama.cpp")
    if name not in _BACKENDS:
        raise UserError(f"unknown teacher backend '{name}' (known: {', '.join(backends())})")
    if name == "http":
        if not base_url:
            raise UserError("the http teacher needs a base URL (--teacher-url http://HOST:PORT/v1)")
        if not model:
            raise UserError("the http teacher needs a model name (--teacher-model NAME)")
        card_for_http = None if card == DEFAULT_MODEL and "chat_template" not in opts else card
        return _BACKENDS[name](card_for_http, base_url=base_url, model=model, api_key_env=api_key_env,
                               **opts)
    return _BACKENDS[name](card, **opts)
