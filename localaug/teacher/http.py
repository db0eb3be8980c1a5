"""A teacher behind an OpenAI-compatible HTTP server: llama-server (-np N), vLLM, Ollama, llama_cpp.server.

The only module in localaug that opens a socket, and only to the configured base URL. Standard library
only (urllib + a thread pool): the requests are few and large, so connection reuse matters little.
Each sample is its own request with seed = sampling.seed + sample index, so samples are reproducible
(where the server honours seeds) and cacheable one by one; servers batch concurrent requests themselves.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlparse

from ..errors import UserError
from ..protocols import Completion, GenerationRequest, ProgressFn, Sampling, TeacherBase
from .common import choice_grammar, iter_jobs, run_stream

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class HttpTeacher(TeacherBase):  # its own generate_stream; close: nothing held between requests
    kind = "http"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        prefers_completion: bool = False,
        concurrency: int = 8,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 5.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        structured: str = "auto",  # auto | openai | llama_cpp_python | none: how `choices` is sent
        check: bool = True,
    ) -> None:
        u = urlparse(base_url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise UserError(f"teacher URL must look like http://HOST:PORT/v1, got '{base_url}'")
        base = base_url.rstrip("/")
        if not u.path.strip("/"):
            base += "/v1"  # llama-server, vLLM, Ollama and llama_cpp.server all serve under /v1
        self.base_url = base
        self.model = model
        self.api_key = api_key
        self.prefers_completion = prefers_completion
        self.concurrency = max(1, int(concurrency))
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retries = max(0, int(retries))
        self.backoff_s = backoff_s
        self.structured = structured
        self.identity = f"http:{self.base_url}:{model}"
        self.model_calls = 0
        self._count_lock = threading.Lock()  # model_calls is bumped from the pool's threads
        if check:
            self.check()

    # ------------------------------------------------------------------ setup

    def check(self) -> None:
        """Fail early, in one line, when the server is down or does not serve `model`."""
        try:
            listing = self._request("GET", "/models", None, timeout=self.connect_timeout_s, retries=1)
        except _HttpStatus as e:
            if e.status == 404:  # some servers have no model listing; the first request will tell
                return
            raise UserError(f"teacher server at {self.base_url}: {e}") from None
        data = listing.get("data") or []
        ids = [str(m.get("id")) for m in data if isinstance(m, dict)]
        if ids and self.model not in ids:
            raise UserError(
                f"teacher server at {self.base_url} does not serve model '{self.model}' "
                f"(it serves: {', '.join(ids[:10])})"
            )
        owners = {str(m.get("owned_by", "")) for m in data if isinstance(m, dict)}
        if self.structured == "auto":
            # llama_cpp.server lists its models as owned by "me"; it takes a GBNF grammar, nothing else.
            self.structured = "llama_cpp_python" if owners == {"me"} else "openai"

    # ------------------------------------------------------------------ Teacher protocol

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
    ) -> list[list[Completion]]:
        return run_stream(self.generate_stream, requests, progress)

    def generate_stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, int, Completion]]:
        jobs = list(iter_jobs(requests))
        if not jobs:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)),
                                  thread_name_prefix="localaug-http")
        try:
            futs: dict[Future[Completion], tuple[int, int]] = {
                pool.submit(self._one, req, s): (ri, si) for ri, si, req, s in jobs
            }
            pending = set(futs)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    ri, si = futs[f]
                    yield ri, si, f.result()
        finally:
            # A failure (or the consumer stopping) cancels what has not started yet.
            pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ one sample

    def _one(self, req: GenerationRequest, s: Sampling) -> Completion:
        body: dict[str, Any] = {
            "model": self.model, "max_tokens": s.max_tokens, "temperature": s.temperature,
            "top_p": s.top_p, "seed": s.seed, "n": 1,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        chat = req.prompt is None
        if chat:
            if not req.messages:
                raise UserError("generation request has neither prompt nor messages")
            body["messages"] = [{"role": r, "content": c} for r, c in req.messages]
        else:
            body["prompt"] = req.prompt
        if req.choices is not None:
            body.update(self._constraint(req.choices))
        t0 = time.perf_counter()
        out = self._request("POST", "/chat/completions" if chat else "/completions", body,
                            timeout=self.timeout_s, retries=self.retries)
        with self._count_lock:
            self.model_calls += 1
        try:
            choice = out["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
            usage = out.get("usage") or {}
        except (KeyError, IndexError, TypeError):
            raise UserError(f"teacher server at {self.base_url} sent an unexpected reply: "
                            f"{json.dumps(out)[:200]}") from None
        return Completion(
            text=text or "", finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=time.perf_counter() - t0,
        )

    def _constraint(self, choices: tuple[str, ...]) -> dict[str, Any]:
        """Ask the server to answer with one of `choices`. llama-server and llama_cpp.server read a GBNF
        `grammar`; vLLM reads `guided_choice`; each ignores the other's field. A server that reads neither
        answers freely, and the caller reads the label from the text (docs/teachers.md)."""
        if self.structured == "none":
            return {}
        fields: dict[str, Any] = {"grammar": choice_grammar(choices)}
        if self.structured == "openai":
            fields["guided_choice"] = list(choices)
        return fields

    # ------------------------------------------------------------------ transport

    def _request(self, method: str, path: str, body: dict[str, Any] | None, *, timeout: float,
                 retries: int) -> dict[str, Any]:
        url = self.base_url + path
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = _error_detail(e)
                if e.code in _RETRY_STATUS:
                    last = f"HTTP {e.code} {detail}"
                    continue
                if e.code in (401, 403):
                    raise UserError(f"teacher server at {self.base_url} refused the API key "
                                    f"(HTTP {e.code}); set the key's environment variable") from None
                if e.code == 404 and body is not None and "model" in detail.lower():
                    raise UserError(f"teacher server at {self.base_url} does not serve model "
                                    f"'{self.model}': {detail}") from None
                raise _HttpStatus(e.code, detail) if body is None else UserError(
                    f"teacher server at {self.base_url} rejected the request: HTTP {e.code} {detail}"
                ) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                reason = getattr(e, "reason", e)
                last = f"{type(reason).__name__}: {reason}"
                continue
            except json.JSONDecodeError:
                raise UserError(f"teacher server at {self.base_url} did not answer with JSON") from None
        raise UserError(f"teacher server at {self.base_url} is unreachable or failing after "
                        f"{retries + 1} attempts ({last}); is it running?")


class _HttpStatus(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status} {detail}")


def _error_detail(e: urllib.error.HTTPError) -> str:
    try:
        raw = e.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    try:
        j = json.loads(raw)
        msg = j.get("error", j) if isinstance(j, dict) else j
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        raw = str(msg)
    except ValueError:
        pass
    return " ".join(raw.split())[:200]
