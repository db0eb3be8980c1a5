"""Student evaluation in llama.cpp: a base GGUF plus (optionally) a llama.cpp LoRA adapter.

The same two kinds of query as evaluate.py, with the same rules:
- **scoring** (items with choices): the sum of the log-probabilities of each choice's tokens after the
  prompt; the argmax is the answer (`protocols.best_choice`). Prompts are decoded together, one sequence
  each, and only their last position yields logits, which score every choice's first token; a longer
  choice continues from a copy of its prompt's KV cells (`llama_memory_seq_cp`: shared, not recomputed).
- **generation** (no choices): greedy, many sequences per decode call, each cut at its first stop string:
  the teacher's `BatchDecoder` with a greedy sampler.
Token ids come from the caller (the student's own tokenizer: the ids the adapter was trained on).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..cores import usable_cores
from ..errors import UserError
from ..protocols import EvalItem, EvalResult, ProgressFn, Sampling, best_choice

Tokenize = Callable[[str, bool], list[int]]  # (text, add the BOS token) -> ids
_TOKEN_BUDGET = 2048  # tokens per decode call; the KV buffer holds two such calls' worth
_ROW_SEQUENCES = 64  # continuation rows decoded together


@contextmanager
def quiet_llama() -> Iterator[None]:
    """llama-cpp-python prints llama.cpp's warnings even with verbose=False (its table of ggml log levels is
    older than ggml's: a warning passes as an error), e.g. "using full-size SWA cache" for every context and
    a line per LoRA tensor kept out of the repacked CPU buffers. The student's evaluation stays quiet."""
    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _log_softmax_at(logits: np.ndarray, ids: Sequence[int]) -> list[float]:
    x = logits.astype(np.float64)
    m = x.max()
    lse = m + np.log(np.exp(x - m).sum())
    return [float(x[i] - lse) for i in ids]


class LlamaCppEvaluator:
    """A base GGUF loaded once; `evaluate` runs a list of items with or without a LoRA adapter."""

    def __init__(self, gguf: Path, *, n_threads: int | None = None, batch_sequences: int = 16) -> None:
        import llama_cpp

        self._ll = llama_cpp
        self.path = Path(gguf)
        self.n_threads = int(n_threads or usable_cores())
        self.batch_sequences = max(1, int(batch_sequences))
        try:  # the Llama object holds the model; its own small context is unused (ours are made per call)
            with quiet_llama():
                self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=256, n_threads=self.n_threads,
                                           n_threads_batch=self.n_threads, verbose=False, flash_attn=True,
                                           swa_full=False)  # (it would say so on stderr; ours set it quietly)
        except (ValueError, RuntimeError) as e:
            raise UserError(f"llama.cpp could not load {self.path}: {e}") from None
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.llm._model.vocab)
        # Freed before the interpreter tears its modules down: Llama.__del__ at that point raises (and prints).
        atexit.register(self.close)
        self.last_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ public

    def evaluate(self, items: Sequence[EvalItem], tokenize: Tokenize, lora: Path | None = None,
                 progress: ProgressFn | None = None, cap: int | None = None) -> list[EvalResult]:
        """Results in input order. `cap` bounds every generated answer's length (the card's max_new_tokens)."""
        with quiet_llama():
            return self._evaluate(items, tokenize, lora, progress, cap)

    def _evaluate(self, items: Sequence[EvalItem], tokenize: Tokenize, lora: Path | None,
                  progress: ProgressFn | None, cap: int | None) -> list[EvalResult]:
        ll = self._ll
        t0 = time.perf_counter()
        adapter = None
        if lora is not None:
            adapter = ll.llama_adapter_lora_init(self.llm._model.model, str(lora).encode())
            if not adapter:
                raise UserError("llama.cpp could not load the LoRA adapter", file=lora)
        results: list[EvalResult | None] = [None] * len(items)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress(done[0], len(items), {"items_per_s": round(done[0] / (time.perf_counter() - t0), 2)})

        try:
            scored = [i for i, it in enumerate(items) if it.choices]
            generated = [i for i, it in enumerate(items) if not it.choices]
            if scored:
                for i, r in zip(scored, self._score([items[i] for i in scored], tokenize, adapter, tick),
                                strict=True):
                    results[i] = r
            if generated:
                for i, r in zip(generated, self._generate([items[i] for i in generated], tokenize, adapter, tick,
                                                          cap), strict=True):
                    results[i] = r
        finally:
            if adapter:
                ll.llama_adapter_lora_free(adapter)
        self.last_info = {"scored": len(scored), "generated": len(generated), "backend": "llama.cpp",
                          "seconds": round(time.perf_counter() - t0, 2)}
        return [r for r in results if r is not None]

    def close(self) -> None:
        if self.llm is not None:
            with quiet_llama():
                self.llm.close()
            self.llm = None

    # ------------------------------------------------------------------ contexts

    def _context(self, n_ctx: int, n_batch: int, n_seq: int, adapter: Any) -> Any:
        ll = self._ll
        p = ll.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch = n_ctx, n_batch, min(512, n_batch)
        p.n_seq_max = n_seq
        p.n_threads = p.n_threads_batch = self.n_threads
        p.kv_unified = True  # prompt cells are shared by reference with their choices' sequences
        p.swa_full = True  # sliding-window layers keep every cell: a copied prompt is never pruned
        p.no_perf = True
        p.flash_attn_type = self.llm.context_params.flash_attn_type
        ctx = ll.llama_init_from_model(self.llm._model.model, p)
        if not ctx:
            raise UserError("llama.cpp could not create an evaluation context (lower eval_batch_size)")
        self._set_adapter(ctx, adapter)
        return ctx

    def _set_adapter(self, ctx: Any, adapter: Any) -> None:
        if adapter:
            ll = self._ll
            adapters = (ll.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(1.0)
            if ll.llama_set_adapters_lora(ctx, adapters, 1, scales) != 0:
                raise UserError("llama.cpp could not apply the LoRA adapter to the model")

    # ------------------------------------------------------------------ scoring

    def _score(self, items: Sequence[EvalItem], tokenize: Tokenize, adapter: Any,
               tick: Callable[[int], None]) -> list[EvalResult]:
        prompts = [tokenize(it.prompt, True) for it in items]
        choices = [[tokenize(c, False) for c in (it.choices or ())] for it in items]
        for it, cs in zip(items, choices, strict=True):
            if not cs or any(len(c) == 0 for c in cs):
                raise ValueError(f"every choice must have at least one token: {it.choices!r}")
        longest = max(len(p) + max(len(c) for c in cs) for p, cs in zip(prompts, choices, strict=True))
        budget = max(_TOKEN_BUDGET, longest)
        ctx = self._context(2 * budget, budget, self.batch_sequences + _ROW_SEQUENCES, adapter)
        batch = self._ll.llama_batch_init(budget, 0, 1)
        try:
            by_item: dict[int, list[float]] = {}
            order = sorted(range(len(items)), key=lambda i: -len(prompts[i]))  # similar lengths together
            start = 0
            while start < len(order):
                group, used = [], 0
                while start < len(order) and len(group) < self.batch_sequences and \
                        (not group or used + len(prompts[order[start]]) <= budget):
                    group.append(order[start])
                    used += len(prompts[order[start]])
                    start += 1
                group_scores = self._score_group(ctx, batch, [prompts[i] for i in group],
                                                 [choices[i] for i in group], budget)
                by_item.update(zip(group, group_scores, strict=True))
                tick(len(group))
        finally:
            self._ll.llama_batch_free(batch)
            self._ll.llama_free(ctx)
        out = []
        for i, it in enumerate(items):
            best = best_choice(by_item[i])
            out.append(EvalResult(output=(it.choices or ())[best], choice_index=best, scores=by_item[i]))
        return out

    def _put(self, batch: Any, n: int, tok: int, pos: int, seq: int, logits: bool) -> None:
        batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = tok, pos, 1, logits
        batch.seq_id[n][0] = seq

    def _decode(self, ctx: Any, batch: Any, n: int) -> None:
        batch.n_tokens = n
        rc = self._ll.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")

    def _logits(self, ctx: Any, idx: int) -> np.ndarray:
        return np.ctypeslib.as_array(self._ll.llama_get_logits_ith(ctx, idx), shape=(self.n_vocab,))

    def _score_group(self, ctx: Any, batch: Any, prompts: list[list[int]], choices: list[list[list[int]]],
                     budget: int) -> list[list[float]]:
        """Prompt k in sequence k; continuation rows in sequences after the prompts'."""
        ll = self._ll
        mem = ll.llama_get_memory(ctx)
        n = 0
        last = []
        for k, p in enumerate(prompts):
            for t, tok in enumerate(p):
                self._put(batch, n, tok, t, k, t == len(p) - 1)
                n += 1
            last.append(n - 1)
        self._decode(ctx, batch, n)
        scores = [_log_softmax_at(self._logits(ctx, last[k]), [c[0] for c in cs]) for k, cs in enumerate(choices)]
        rows = [(k, j) for k, cs in enumerate(choices) for j, c in enumerate(cs) if len(c) > 1]
        first_row_seq = len(prompts)
        r0 = 0
        while r0 < len(rows):  # chunks of continuation rows, bounded by sequences and tokens
            chunk, n = [], 0
            while r0 < len(rows) and len(chunk) < _ROW_SEQUENCES:
                k, j = rows[r0]
                width = len(choices[k][j]) - 1
                if chunk and n + width > budget:
                    break
                seq = first_row_seq + len(chunk)
                ll.llama_memory_seq_cp(mem, k, seq, -1, -1)
                for t, tok in enumerate(choices[k][j][:-1]):
                    self._put(batch, n + t, tok, len(prompts[k]) + t, seq, True)
                chunk.append((k, j, n))
                n += width
                r0 += 1
            self._decode(ctx, batch, n)
            for k, j, at in chunk:
                c = choices[k][j]
                scores[k][j] += sum(_log_softmax_at(self._logits(ctx, at + t), [c[t + 1]])[0]
                                    for t in range(len(c) - 1))
            for s in range(first_row_seq, first_row_seq + len(chunk)):
                ll.llama_memory_seq_rm(mem, s, -1, -1)
        ll.llama_memory_clear(mem, True)
        return scores

    # ------------------------------------------------------------------ generation

    def _generate(self, items: Sequence[EvalItem], tokenize: Tokenize, adapter: Any, tick: Callable[[int], None],
                  cap: int | None) -> list[EvalResult]:
        from ..teacher.batch import BatchDecoder, Job

        limits = [min(it.max_new_tokens, cap) if cap else it.max_new_tokens for it in items]
        jobs = [Job(i, tokenize(it.prompt, True), Sampling(temperature=0.0, max_tokens=lim, stop=tuple(it.stop)),
                    lim) for i, (it, lim) in enumerate(zip(items, limits, strict=True))]
        per_seq = max(len(j.tokens) + j.max_tokens for j in jobs) + 8
        decoder = BatchDecoder(self.llm, n_ctx=per_seq, n_threads=self.n_threads,
                               batch_sequences=min(self.batch_sequences, len(jobs)), kv_unified=True,
                               on_context=lambda ctx: self._set_adapter(ctx, adapter))
        texts: dict[int, str] = {}
        try:
            for index, completion in decoder.decode(jobs):
                texts[index] = completion.text
                tick(1)
        finally:
            decoder.close()
        return [EvalResult(output=texts[i]) for i in range(len(items))]
