"""A small OpenAI-compatible server on 127.0.0.1 with a fixed latency: the pool's dispatch bench and its
fast tests (the real servers, llama_cpp.server and vLLM, are tested in tests/test_teacher_servers_real.py).

It says what a real server would say about itself (/v1/models with `owned_by` and `root`, vLLM's /version),
honours one constraint field or none (answering the first choice, else free text, as a real server that
ignores the field would), can refuse chat as vLLM does for a model without a chat template, and can be told
to fail. `slots` requests are served at once (llama-server's -np); the others wait, as they would there.

    python bench/fake_openai.py --servers 4 --latency 0.05 --slots 2    # prints {"urls": [...]} and serves
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_REFUSAL = ("As of transformers v4.44, default chat template is no longer allowed, so you must provide a "
                "chat template if the tokenizer does not define one.")


@dataclass
class Behaviour:
    model: str = "m"
    root: str | None = None  # vLLM reports the weights it loaded as `root`
    owned_by: str = "vllm"
    version: str | None = "0.32.0"  # served at /version (vLLM), when not None
    honours: str | None = "structured_outputs"  # structured_outputs | guided_choice | grammar | None
    chat: bool = True  # False: chat requests are refused as vLLM refuses them without a chat template
    latency_s: float = 0.0
    slots: int = 64
    fail_with: int | None = None  # answer every completion with this HTTP status (e.g. 503)
    fail_next: list[int] = field(default_factory=list)  # answer the next completions with these, in order
    log: list[dict[str, Any]] = field(default_factory=list)  # every POST body, in order
    answered: int = 0


def _choices(body: dict[str, Any], honours: str | None) -> list[str] | None:
    if honours == "structured_outputs":
        return (body.get("structured_outputs") or {}).get("choice")
    if honours == "guided_choice":
        return body.get("guided_choice")
    if honours == "grammar" and body.get("grammar"):
        return [part.strip().strip('"') for part in body["grammar"].split("::=", 1)[1].split(" | ")]
    return None


def handler(b: Behaviour, lock: threading.Lock, slots: threading.Semaphore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, obj: dict[str, Any]) -> None:
            raw = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            if self.path == "/v1/models":
                entry = {"id": b.model, "object": "model", "owned_by": b.owned_by}
                if b.root is not None:
                    entry["root"] = b.root
                return self._send(200, {"object": "list", "data": [entry]})
            if self.path == "/version" and b.version is not None:
                return self._send(200, {"version": b.version})
            self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                b.log.append(body)
            chat = self.path.endswith("/chat/completions")
            if chat and not b.chat:
                return self._send(400, {"error": {"message": CHAT_REFUSAL}})
            with lock:
                status = b.fail_next.pop(0) if b.fail_next else b.fail_with
            if status is not None:
                return self._send(status, {"error": {"message": "failing on purpose"}})
            with slots:
                time.sleep(b.latency_s)
            picked = _choices(body, b.honours)
            text = picked[0] if picked else " 6, 7, 8, 9"
            with lock:
                b.answered += 1
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            self._send(200, {"choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})

    return Handler


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a real server's backlog; http.server's 5 drops connections under load

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors: list[BaseException] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a handler's exception to stderr, which in a test is the stream of the command under
        # test (CliRunner): seen once, a client's closed keep-alive connection turned a one-line error into 22
        # lines. Kept here for a test to look at instead.
        self.errors.append(sys.exc_info()[1] or RuntimeError("unknown handler error"))


class FakeServer:
    """One fake server in a thread of this process; `stop()` makes its port refuse connections."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.b = behaviour or Behaviour()
        self.httpd = _Httpd(("127.0.0.1", 0), handler(self.b, threading.Lock(),
                                                                   threading.Semaphore(self.b.slots)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", type=int, default=1)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--slots", type=int, default=1)
    args = ap.parse_args()
    servers = [FakeServer(Behaviour(latency_s=args.latency, slots=args.slots)) for _ in range(args.servers)]
    print(json.dumps({"urls": [s.url for s in servers]}), flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin


if __name__ == "__main__":
    main()
