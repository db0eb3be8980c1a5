"""Batched decoding on llama.cpp's low-level API: many sequences per `llama_decode` call.

llama-cpp-python's high-level API decodes one sequence at a time (its issue #771). Here up to
`batch_sequences` sequences share one decode call, each with its own sampler chain (and grammar, for
constrained requests), in one unified KV buffer where the prompt prefix common to the call is
evaluated once (continuous batching: a finished sequence's slot takes the next waiting prompt).

The sampler chain is the one of `Llama._init_sampler` (top_k 40, typical 1, top_p, min_p 0.05,
temperature, dist(seed); greedy at temperature 0), so the sequential path (`Llama.create_completion`)
and this one sample alike.
"""

from __future__ import annotations

import ctypes
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..protocols import Completion, Sampling

# The defaults of Llama.create_completion that Sampling does not expose; both paths use them.
TOP_K = 40
MIN_P = 0.05
TYPICAL_P = 1.0


@dataclass
class Job:
    index: int  # position in the caller's flattened (request, sample) list
    tokens: list[int]
    sampling: Sampling  # seed already offset by the sample index
    max_tokens: int
    grammar: tuple[bytes, bytes] | None = None  # (GBNF text, root rule) for constrained requests


@dataclass
class _Seq:
    job: Job
    seq_id: int
    chain: Any
    pos: int
    t0: float
    out: list[int] = field(default_factory=list)
    text: bytes = b""
    logit_idx: int = -1
    grammar: Any = None  # this sequence's grammar sampler (stateful: it tracks the parse)


class BatchDecoder:
    """The multi-sequence context of one loaded model. Not thread-safe: the teacher serialises calls."""

    def __init__(self, llm: Any, *, n_ctx: int, n_threads: int, batch_sequences: int, kv_unified: bool,
                 on_context: Callable[[Any], None] | None = None) -> None:
        import llama_cpp

        self._ll = llama_cpp
        self.llm = llm
        self._vocab = llm._model.vocab
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.batch_sequences = batch_sequences
        self.kv_unified = kv_unified
        self.on_context = on_context  # called with each new context (the student sets its LoRA adapter there)
        self._ctx: Any = None  # created on first use
        self._batch: Any = None
        self._batch_cap = 0
        self.n_batch = max(512, n_ctx)  # tokens one llama_decode call takes (the context's n_batch)
        self._piece = ctypes.create_string_buffer(256)
        self.last_shared_prefix = 0  # tokens of the last call evaluated once for all sequences (tests, bench)
        self.timings: dict[str, float] = {"decode_s": 0.0, "decode_calls": 0}  # cumulative

    # ------------------------------------------------------------------ setup

    def _ensure(self, need_tokens: int) -> None:
        ll = self._ll
        if self._ctx is None:
            p = ll.llama_context_default_params()
            # One KV buffer shared by all sequences (kv_unified) so that a prompt prefix common to the
            # call is evaluated once and shared by reference (llama_memory_seq_cp); the extra sequence
            # id holds that prefix.
            p.n_seq_max = self.batch_sequences + 1
            p.n_ctx = self.n_ctx * self.batch_sequences
            p.n_batch = self.n_batch
            p.n_ubatch = 512
            p.n_threads = p.n_threads_batch = self.n_threads
            p.kv_unified = self.kv_unified
            p.no_perf = True
            p.flash_attn_type = self.llm.context_params.flash_attn_type  # same kernels as sequential
            ctx = ll.llama_init_from_model(self.llm._model.model, p)
            if not ctx:
                raise UserError("llama.cpp could not create a multi-sequence context (lower batch_sequences)")
            self._ctx = ctx
            if self.on_context is not None:
                self.on_context(ctx)
        if self._batch_cap < need_tokens:
            if self._batch is not None:
                ll.llama_batch_free(self._batch)
            self._batch_cap = max(need_tokens, self.n_batch)
            self._batch = ll.llama_batch_init(self._batch_cap, 0, 1)

    def _chain(self, s: Sampling) -> Any:
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if s.temperature <= 0.0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        else:  # the order of Llama._init_sampler
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(TOP_K))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_typical(TYPICAL_P, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(s.top_p, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(MIN_P, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(s.temperature))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(s.seed & 0xFFFFFFFF))
        return chain

    def _put(self, n: int, tok: int, pos: int, seq_id: int, logits: bool) -> None:
        b = self._batch
        b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = tok, pos, 1, logits
        b.seq_id[n][0] = seq_id

    # ------------------------------------------------------------------ decoding

    def decode(self, jobs: list[Job]) -> Iterator[tuple[int, Completion]]:
        """Yield (job index, completion) as each job finishes."""
        ll = self._ll
        # The admission limit is a function of this call's jobs alone, never of earlier calls (the batch buffer
        # only grows): a resumed run that skips earlier calls must batch this one's jobs the same way.
        limit = max(max(len(j.tokens) for j in jobs) + self.batch_sequences, self.n_batch)
        self._ensure(limit)
        mem = ll.llama_get_memory(self._ctx)
        pending = deque(jobs)
        free = list(range(self.batch_sequences - 1, -1, -1))
        active: dict[int, _Seq] = {}
        psid = self.batch_sequences  # the shared-prefix sequence
        shared = self._shared_prefix(jobs, psid) if self.kv_unified else 0
        self.last_shared_prefix = shared
        try:
            while pending or active:
                n = 0
                for st in active.values():  # one new token for every running sequence
                    self._put(n, st.out[-1], st.pos, st.seq_id, True)
                    st.logit_idx, st.pos, n = n, st.pos + 1, n + 1
                # Admit waiting prompts into free slots while the batch has room (continuous batching).
                while pending and free and n + len(pending[0].tokens) - shared <= limit:
                    sid = free.pop()
                    n, active[sid] = self._admit(pending.popleft(), sid, n, shared, psid)
                self._batch.n_tokens = n
                t_dec = time.perf_counter()
                rc = ll.llama_decode(self._ctx, self._batch)
                self.timings["decode_s"] += time.perf_counter() - t_dec
                self.timings["decode_calls"] += 1
                if rc != 0:
                    raise RuntimeError(f"llama_decode failed with code {rc}")
                for sid in list(active):
                    st = active[sid]
                    finish = self._advance(st)
                    if finish is None:
                        continue
                    _free(ll, st)
                    ll.llama_memory_seq_rm(mem, sid, -1, -1)
                    del active[sid]
                    free.append(sid)
                    yield st.job.index, Completion(
                        text=st.text.decode("utf-8", errors="ignore"), finish_reason=finish,
                        prompt_tokens=len(st.job.tokens), completion_tokens=len(st.out),
                        seconds=time.perf_counter() - st.t0,
                    )
        finally:  # also when the consumer stops early or decoding fails
            for st in active.values():
                _free(ll, st)
            ll.llama_memory_clear(mem, True)

    def _admit(self, job: Job, sid: int, n: int, shared: int, psid: int) -> tuple[int, _Seq]:
        """Put a waiting prompt's tokens (after the shared prefix) into the batch in slot `sid`."""
        ll = self._ll
        mem = ll.llama_get_memory(self._ctx)
        ll.llama_memory_seq_rm(mem, sid, -1, -1)
        if shared:
            ll.llama_memory_seq_cp(mem, psid, sid, 0, shared)
        last = len(job.tokens) - 1
        for i in range(shared, last + 1):
            self._put(n + i - shared, job.tokens[i], i, sid, i == last)
        n += len(job.tokens) - shared
        gs = None
        if job.grammar is not None:
            gs = ll.llama_sampler_init_grammar(self._vocab, job.grammar[0], job.grammar[1])
        return n, _Seq(job, sid, self._chain(job.sampling), len(job.tokens), time.perf_counter(),
                       logit_idx=n - 1, grammar=gs)

    def _advance(self, st: _Seq) -> str | None:
        """Sample one token for `st`; its finish reason when it is done, else None."""
        ll = self._ll
        tok = ll.llama_sampler_sample(st.chain, self._ctx, st.logit_idx)
        if st.grammar is not None:
            tok = self._constrain(st, tok)
        if ll.llama_vocab_is_eog(self._vocab, tok):
            return "stop"
        st.out.append(tok)
        k = ll.llama_token_to_piece(self._vocab, tok, self._piece, len(self._piece), 0, False)
        st.text += self._piece.raw[:k]
        cut = _first_stop(st.text, st.job.sampling.stop)
        if cut is not None:
            st.text = st.text[:cut]
            return "stop"
        return "length" if len(st.out) >= st.job.max_tokens else None

    def _constrain(self, st: _Seq, tok: int) -> int:
        """Keep `tok` if the grammar allows it, else sample again from the grammar-allowed tokens.

        Checking one token is cheap; masking the whole vocabulary every step (what a grammar-first
        chain does) is what makes constrained decoding slow, so it is done only when the free choice
        breaks the grammar (llama.cpp's common sampler does the same). Greedy output is identical to
        grammar-first decoding; at temperature > 0 the distribution is the grammar-allowed part of the
        model's, sampled with the sequence's seed.
        """
        ll = self._ll
        one = (ll.llama_token_data * 1)(ll.llama_token_data(tok, 1.0, 0.0))
        arr = ll.llama_token_data_array(one, 1, -1, False)
        ll.llama_sampler_apply(st.grammar, ctypes.byref(arr))
        if one[0].logit == float("-inf"):
            import numpy as np

            n_vocab = ll.llama_vocab_n_tokens(self._vocab)
            logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(self._ctx, st.logit_idx), (n_vocab,))
            data = (ll.llama_token_data * n_vocab)()
            view = np.frombuffer(data, dtype=np.dtype([("id", np.int32), ("logit", np.float32),
                                                         ("p", np.float32)]))
            view["id"] = np.arange(n_vocab, dtype=np.int32)
            view["logit"] = logits
            view["p"] = 0.0
            full = ll.llama_token_data_array(data, n_vocab, -1, False)
            ll.llama_sampler_apply(st.grammar, ctypes.byref(full))
            ll.llama_sampler_apply(st.chain, ctypes.byref(full))
            tok = int(data[full.selected].id)
        ll.llama_sampler_accept(st.grammar, tok)
        return tok

    def _shared_prefix(self, jobs: list[Job], psid: int) -> int:
        """Decode the token prefix common to all jobs once, into sequence `psid`; return its length.

        Few-shot teacher prompts share their instructions and examples, and the n samples of a request
        share the whole prompt: without this every sequence would re-evaluate them.
        """
        ll = self._ll
        ll.llama_memory_seq_rm(ll.llama_get_memory(self._ctx), psid, -1, -1)
        first = jobs[0].tokens
        n = min(len(j.tokens) for j in jobs) - 1  # keep >= 1 token per job to produce its logits
        for j in jobs[1:]:
            k = 0
            while k < n and j.tokens[k] == first[k]:
                k += 1
            n = k
        if n < 16 or len(jobs) < 2:  # not worth an extra decode call
            return 0
        for i in range(n):
            self._put(i, first[i], i, psid, False)
        self._batch.n_tokens = n
        rc = ll.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")
        return n

    def close(self) -> None:
        if self._batch is not None:
            self._ll.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._ll.llama_free(self._ctx)
            self._ctx = None


def _free(ll: Any, st: _Seq) -> None:
    ll.llama_sampler_free(st.chain)
    if st.grammar is not None:
        ll.llama_sampler_free(st.grammar)
        st.grammar = None


def _first_stop(text: bytes, stops: Sequence[str]) -> int | None:
    """Byte offset of the earliest stop string in `text` (create_completion cuts there too)."""
    best: int | None = None
    for s in stops:
        if not s:
            continue
        i = text.find(s.encode("utf-8"))
        if i >= 0 and (best is None or i < best):
            best = i
    return best
