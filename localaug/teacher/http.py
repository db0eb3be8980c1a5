"""One OpenAI-compatible HTTP server: llama-server, vLLM, Ollama, llama_cpp.server.

With `pool.py`, the only code in localaug that opens a socket, and only to a URL the user configured.
Standard library only (urllib): the requests are few and large, so connection reuse matters little.
This module knows one server: what it serves (`models`), what it is (`software`), which constraint field
it honours (`dialects.py`, measured by a probe), and how to send it one sample (`complete`). Spreading
samples over servers, threads and failures is `pool.TeacherPool`'s job.

A request that fails because the *server* fails (connection refused or reset, a timeout, HTTP 5xx) raises
`ServerFailure`, so a pool can send it elsewhere; a request the server rejects as wrong (HTTP 4xx) is the
user's problem and a one-line `UserError`.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

from ..errors import UserError
from ..protocols import Completion, GenerationRequest, Sampling
from . import dialects

_BACKPRESSURE = {408, 409, 429}  # the server is busy, not broken: wait and ask the same server again


class ServerFailure(Exception):
    """The server did not answer (refused, reset, timed out) or answered 5xx."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


class _HttpStatus(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"HTTP {status} {detail}")


def normalise_url(base_url: str) -> str:
    u = urlparse(base_url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise UserError(f"teacher URL must look like http://HOST:PORT/v1, got '{base_url}'")
    base = base_url.rstrip("/")
    if not u.path.strip("/"):
        base += "/v1"  # llama-server, vLLM, Ollama and llama_cpp.server all serve under /v1
    return base


class ServerClient:
    """A client of one server. `dialect` is set by the pre-run check (`servers.check_server`)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 300.0,
                 connect_timeout_s: float = 5.0, retries: int = 4, backoff_s: float = 0.5,
                 dialect: str = dialects.NONE) -> None:
        self.base_url = normalise_url(base_url)
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retries = max(0, int(retries))
        self.backoff_s = backoff_s
        self.dialect = dialect

    @property
    def root(self) -> str:
        """The server's root (vLLM serves /version there, not under /v1)."""
        u = urlparse(self.base_url)
        return f"{u.scheme}://{u.netloc}"

    # ------------------------------------------------------------------ what the server is

    def models(self) -> list[dict[str, Any]] | None:
        """The server's /v1/models entries; None when it has no listing (HTTP 404)."""
        try:
            listing = self._request("GET", self.base_url + "/models", None, timeout=self.connect_timeout_s,
                                    retries=1)
        except _HttpStatus as e:
            if e.status == 404:
                return None
            raise UserError(f"teacher server at {self.base_url}: {e}") from None
        except ServerFailure as e:
            raise UserError(f"teacher server at {self.base_url} is unreachable or failing ({e.reason}); "
                            "is it running?") from None
        return [m for m in listing.get("data") or [] if isinstance(m, dict)]

    def software(self, entries: list[dict[str, Any]] | None) -> tuple[str, str]:
        """(software, version) as the server tells them; ("", "") when it does not say."""
        owners = {str(m.get("owned_by", "")) for m in entries or []}
        if owners == {"vllm"}:
            return "vllm", str(self._get_quietly(self.root + "/version").get("version", ""))
        if owners == {"me"}:  # llama_cpp.server (a FastAPI app titled with its version)
            return "llama_cpp.server", str(self._get_quietly(self.root + "/openapi.json").get("info", {})
                                           .get("version", ""))
        if owners == {"llamacpp"}:  # llama.cpp's own llama-server
            return "llama-server", str(self._get_quietly(self.root + "/props").get("build_info", ""))
        version = self._get_quietly(self.root + "/version").get("version")
        return ("", "") if version is None else ("unknown", str(version))

    def probe_dialect(self, software: str, version: str) -> tuple[str, list[str]]:
        """Which constraint field this server honours (dialects.probe), on the completions endpoint the
        verifier uses; the order tried follows what the server says it is (`software`)."""

        def send(fields: dict[str, Any]) -> str | None:
            try:
                out = self._request("POST", self.base_url + "/completions",
                                    {**dialects.probe_body(self.model), **fields},
                                    timeout=self.timeout_s, retries=self.retries)
            except _HttpStatus:
                return None  # a server that validates fields strictly refuses the ones it does not know
            return str(((out.get("choices") or [{}])[0]).get("text") or "")

        return dialects.probe(send, dialects.probe_order(software, version))

    def chat_problem(self) -> str | None:
        """Why this server cannot answer a chat request (one tiny one is sent), or None when it can."""
        body = {"model": self.model, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1,
                "temperature": 0.0}
        try:
            self._request("POST", self.base_url + "/chat/completions", body, timeout=self.timeout_s,
                          retries=self.retries)
        except _HttpStatus as e:
            return f"HTTP {e.status} {e.detail}".strip()
        return None

    # ------------------------------------------------------------------ one sample

    def complete(self, req: GenerationRequest, s: Sampling, *, retries: int | None = None) -> Completion:
        """One sample: chat when the request has messages, else a raw completion; `choices` constrained in
        this server's dialect. Raises ServerFailure after `retries` more attempts."""
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
            body.update(dialects.constraint_fields(self.dialect, req.choices))
        t0 = time.perf_counter()
        path = "/chat/completions" if chat else "/completions"
        try:
            out = self._request("POST", self.base_url + path, body, timeout=self.timeout_s,
                                retries=self.retries if retries is None else retries)
        except _HttpStatus as e:
            if e.status == 404 and "model" in e.detail.lower():
                raise UserError(f"teacher server at {self.base_url} does not serve model "
                                f"'{self.model}': {e.detail}") from None
            raise UserError(f"teacher server at {self.base_url} rejected the request: {e}") from None
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

    # ------------------------------------------------------------------ transport

    def _get_quietly(self, url: str) -> dict[str, Any]:
        """A best-effort GET (version endpoints): {} when there is none."""
        try:
            out = self._request("GET", url, None, timeout=self.connect_timeout_s, retries=0)
        except (_HttpStatus, ServerFailure, UserError):
            return {}
        return out if isinstance(out, dict) else {}

    def _request(self, method: str, url: str, body: dict[str, Any] | None, *, timeout: float,
                 retries: int) -> dict[str, Any]:
        """The reply's JSON. HTTP 4xx raises _HttpStatus (401/403: UserError); server failures are tried
        `retries` more times with backoff, then raise ServerFailure; backpressure (429...) is waited out."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        attempts = retries + 1
        attempt = 0
        while attempt < attempts:
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            attempt += 1
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = _error_detail(e)
                if e.code in _BACKPRESSURE:
                    last = f"HTTP {e.code} {detail}"
                    attempts = max(attempts, min(attempt + 1, 8))  # busy is no failure: a few more tries
                    continue
                if e.code >= 500:
                    last = f"HTTP {e.code} {detail}"
                    continue
                if e.code in (401, 403):
                    raise UserError(f"teacher server at {self.base_url} refused the API key "
                                    f"(HTTP {e.code}); set the key's environment variable") from None
                raise _HttpStatus(e.code, detail) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", e)
                last = f"{type(reason).__name__}: {reason}"
                continue
            except json.JSONDecodeError:
                raise UserError(f"teacher server at {self.base_url} did not answer with JSON") from None
        raise ServerFailure(self.base_url, f"{last} after {attempt} attempt{'s' if attempt > 1 else ''}")


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
