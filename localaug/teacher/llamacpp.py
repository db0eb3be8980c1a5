"""The in-process teacher: a GGUF model run by llama.cpp (llama-cpp-python).

Two decoding paths with the same sampling semantics:
- **batched** (default): `batch.BatchDecoder` decodes up to `batch_sequences` sequences per
  `llama_decode` call, sharing the prompt prefix common to the call.
- **sequential**: `Llama.create_completion`, one sample at a time: the baseline, and what
  `batch_sequences: 1` gives.

Sample i of a request uses seed `sampling.seed + i`. Caveat: llama.cpp's logits are not bit-identical
across batch layouts, so where two tokens nearly tie, greedy text from the two paths can part (see
bench/README.md "Teacher").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..cores import usable_cores
from ..errors import UserError
from ..files import sha256_file
from ..protocols import Completion, GenerationRequest, ProgressFn, Sampling
from .batch import MIN_P, TOP_K, TYPICAL_P, BatchDecoder, Job
from .common import choice_grammar, iter_jobs, run_stream

# Samples decoded as one fixed group, stored together by CachedTeacher (batched logits depend on which
# sequences share a decode call): a few of the decoder's batches, so that continuous batching keeps the slots
# busy inside a group, while a killed run loses at most one group.
GROUP_BATCHES = 4


class LlamaCppTeacher:
    """A GGUF teacher in this process. Not thread-safe internally; calls are serialised by a lock."""

    kind = "llama.cpp"

    def __init__(
        self,
        gguf: str | Path,
        *,
        chat_template: bool = False,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        batch_sequences: int = 8,
        n_gpu_layers: int = 0,
        kv_unified: bool = True,
        verbose: bool = False,
    ) -> None:
        path = Path(gguf).expanduser()
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path}")
        import llama_cpp  # deferred: importing loads the shared library

        self.path = path
        self.n_ctx = int(n_ctx)
        self.n_threads = int(n_threads or usable_cores())
        self.batch_sequences = max(1, int(batch_sequences))
        self.batch_group = self.batch_sequences * GROUP_BATCHES if self.batch_sequences > 1 else 1
        self.prefers_completion = not chat_template
        self.identity = "llama.cpp:" + sha256_file(path)
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                n_threads_batch=self.n_threads, n_gpu_layers=n_gpu_layers, verbose=verbose,
                # Flash attention in both paths: its kernel skips masked KV cells, so a sequence's
                # logits depend less on where its cells sit among other sequences' in the shared
                # buffer (greedy samples of one prompt agree; without it they can part).
                flash_attn=True,
            )
        except (ValueError, RuntimeError) as e:
            raise UserError(f"llama.cpp could not load {path}: {e}") from None
        self._lock = threading.Lock()
        self.decoder = BatchDecoder(self.llm, n_ctx=self.n_ctx, n_threads=self.n_threads,
                                    batch_sequences=self.batch_sequences, kv_unified=kv_unified)
        self._chat_formatter: Any = None
        self.model_calls = 0  # completions produced by the model (not counting cache hits)
        self._closed = False

    # ------------------------------------------------------------------ Teacher protocol

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
    ) -> list[list[Completion]]:
        return run_stream(self.generate_stream, requests, progress)

    def generate_stream(
        self, requests: Sequence[GenerationRequest], *, batched: bool | None = None
    ) -> Iterator[tuple[int, int, Completion]]:
        """Yield (request index, sample index, completion) as each sample finishes."""
        if self._closed:  # llama.cpp's freed model would crash the process (a segfault), not raise
            raise RuntimeError(f"the llama.cpp teacher of {self.path.name} is closed: build a new one")
        use_batch = self.batch_sequences > 1 if batched is None else batched
        plain: list[tuple[int, int, GenerationRequest, Sampling]] = []
        with self._lock:
            for ri, si, req, sampling in iter_jobs(requests):
                if not use_batch:
                    yield ri, si, self._generate_one(req, sampling)
                else:
                    plain.append((ri, si, req, sampling))
            if plain:
                jobs = []
                grammars: dict[tuple[str, ...], tuple[bytes, bytes]] = {}
                for k, (_, _, req, s) in enumerate(plain):
                    toks = self._tokens(req)
                    # create_completion's rule: <= 0 means "to the end of the context", and never past it.
                    room = self.n_ctx - len(toks)
                    g = None
                    if req.choices is not None:
                        if req.choices not in grammars:
                            lg = _grammar(req.choices)
                            grammars[req.choices] = (lg._grammar.encode("utf-8"), lg._root.encode("utf-8"))
                        g = grammars[req.choices]
                    jobs.append(Job(k, toks, s, room if s.max_tokens <= 0 else min(s.max_tokens, room), g))
                for k, comp in self.decoder.decode(jobs):
                    self.model_calls += 1
                    yield plain[k][0], plain[k][1], comp

    # ------------------------------------------------------------------ prompts

    def _render(self, req: GenerationRequest) -> str:
        if req.prompt is not None:
            return req.prompt
        if not req.messages:
            raise UserError("generation request has neither prompt nor messages")
        if self._chat_formatter is None:
            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise UserError(
                    f"{self.path.name} has no chat template: send completion prompts "
                    "(teacher.prefers_completion is True for this model)"
                )
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            def tok_text(i: int) -> str:
                return self.llm._model.token_get_text(i) if i >= 0 else ""

            self._chat_formatter = Jinja2ChatFormatter(
                template, eos_token=tok_text(self.llm.token_eos()), bos_token=tok_text(self.llm.token_bos())
            )
        msgs = [{"role": r, "content": c} for r, c in req.messages]
        return str(self._chat_formatter(messages=msgs).prompt)

    def _tokens(self, req: GenerationRequest) -> list[int]:
        # Same tokenisation as create_completion: BOS (if the model adds one) + prompt with specials.
        text = self._render(req)
        toks = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self.llm._model.add_bos_token() and self.llm.token_bos() >= 0:
            if toks[:1] != [self.llm.token_bos()]:
                toks = [self.llm.token_bos(), *toks]
        if len(toks) >= self.n_ctx:
            raise UserError(f"teacher prompt has {len(toks)} tokens, the context holds {self.n_ctx} (n_ctx)")
        return toks

    # ------------------------------------------------------------------ sequential path

    def _generate_one(self, req: GenerationRequest, s: Sampling) -> Completion:
        grammar = _grammar(req.choices) if req.choices is not None else None
        t0 = time.perf_counter()
        out = self.llm.create_completion(
            self._tokens(req), max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
            top_k=TOP_K, min_p=MIN_P, typical_p=TYPICAL_P, repeat_penalty=1.0, seed=s.seed,
            stop=list(s.stop) or None, grammar=grammar,
        )
        self.model_calls += 1
        choice = out["choices"][0]  # type: ignore[index]
        usage = out["usage"]  # type: ignore[index]
        return Completion(
            text=choice["text"], finish_reason=choice["finish_reason"] or "stop",
            prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"],
            seconds=time.perf_counter() - t0,
        )

    @property
    def last_shared_prefix(self) -> int:
        return self.decoder.last_shared_prefix

    @property
    def timings(self) -> dict[str, float]:
        return self.decoder.timings

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.decoder.close()
            self.llm.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing useful to do
            pass


def _grammar(choices: Sequence[str]) -> Any:
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(choice_grammar(choices), verbose=False)
