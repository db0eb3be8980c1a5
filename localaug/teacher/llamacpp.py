"""The in-process teacher: a GGUF model run by llama.cpp (llama-cpp-python).

Two decoding paths with the same sampling semantics:
- **batched** (default): the low-level API decodes up to `batch_sequences` sequences per
  `llama_decode` call, each sequence with its own sampler chain (and grammar, for json_schema
  requests), in one unified KV buffer where the prompt prefix common to the call is evaluated once.
  llama-cpp-python's high-level API decodes one sequence at a time (its issue #771).
- **sequential**: `Llama.create_completion`, one sample at a time: the baseline, and what
  `batch_sequences: 1` gives.

Both build the sampler chain of `Llama._init_sampler` (top_k 40, typical 1, top_p, min_p 0.05,
temperature, dist(seed); greedy at temperature 0) and sample i of a request uses seed
`sampling.seed + i`. Caveat: llama.cpp's logits are not bit-identical across batch layouts, so where
two tokens nearly tie, greedy text from the two paths can part (see bench/README.md "Teacher").
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import sha256_file
from ..protocols import Completion, GenerationRequest, ProgressFn, Sampling
from .common import iter_jobs, run_stream

# The defaults of Llama.create_completion that Sampling does not expose; both paths use them.
TOP_K = 40
MIN_P = 0.05
TYPICAL_P = 1.0


@dataclass
class _Job:
    index: int  # position in the flattened (request, sample) list
    tokens: list[int]
    sampling: Sampling  # seed already offset by the sample index
    max_tokens: int
    grammar: tuple[bytes, bytes] | None = None  # (GBNF text, root rule) for json_schema requests


@dataclass
class _Seq:
    job: _Job
    seq_id: int
    chain: Any
    pos: int
    t0: float
    out: list[int] = field(default_factory=list)
    text: bytes = b""
    logit_idx: int = -1
    grammar: Any = None  # this sequence's grammar sampler (stateful: it tracks the parse)


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

        self._ll = llama_cpp
        self.path = path
        self.n_ctx = int(n_ctx)
        self.n_threads = int(n_threads or os.cpu_count() or 1)
        self.batch_sequences = max(1, int(batch_sequences))
        self.kv_unified = kv_unified
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
        self._vocab = self.llm._model.vocab
        self._lock = threading.Lock()
        self._bctx: Any = None  # the multi-sequence context, created on first batched call
        self._batch: Any = None
        self._batch_cap = 0
        self._chat_formatter: Any = None
        self.last_shared_prefix = 0
        self.model_calls = 0  # completions produced by the model (not counting cache hits)
        self.timings: dict[str, float] = {"decode_s": 0.0, "decode_calls": 0}  # batched path, cumulative

    # ------------------------------------------------------------------ Teacher protocol

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
    ) -> list[list[Completion]]:
        return run_stream(self.generate_stream, requests, progress)

    def generate_stream(
        self, requests: Sequence[GenerationRequest], *, batched: bool | None = None
    ) -> Iterator[tuple[int, int, Completion]]:
        """Yield (request index, sample index, completion) as each sample finishes."""
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
                grammars: dict[str, tuple[bytes, bytes]] = {}
                for k, (_, _, req, s) in enumerate(plain):
                    toks = self._tokens(req)
                    # create_completion's rule: <= 0 means "to the end of the context", and never past it.
                    room = self.n_ctx - len(toks)
                    g = None
                    if req.json_schema is not None:
                        key = json.dumps(req.json_schema, sort_keys=True)
                        if key not in grammars:
                            lg = _grammar(req.json_schema)
                            grammars[key] = (lg._grammar.encode("utf-8"), lg._root.encode("utf-8"))
                        g = grammars[key]
                    jobs.append(_Job(k, toks, s, room if s.max_tokens <= 0 else min(s.max_tokens, room), g))
                for k, comp in self._generate_batched(jobs):
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
        grammar = _grammar(req.json_schema) if req.json_schema is not None else None
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

    # ------------------------------------------------------------------ batched path

    def _ensure_batch_ctx(self, need_tokens: int) -> None:
        ll = self._ll
        if self._bctx is None:
            p = ll.llama_context_default_params()
            # One KV buffer shared by all sequences (kv_unified) so that a prompt prefix common to the
            # call is evaluated once and shared by reference (llama_memory_seq_cp); the extra sequence
            # id holds that prefix.
            p.n_seq_max = self.batch_sequences + 1
            p.n_ctx = self.n_ctx * self.batch_sequences
            p.n_batch = max(512, self.n_ctx)
            p.n_ubatch = 512
            p.n_threads = p.n_threads_batch = self.n_threads
            p.kv_unified = self.kv_unified
            p.no_perf = True
            p.flash_attn_type = self.llm.context_params.flash_attn_type  # same kernels as sequential
            ctx = ll.llama_init_from_model(self.llm._model.model, p)
            if not ctx:
                raise UserError("llama.cpp could not create a multi-sequence context (lower batch_sequences)")
            self._bctx = ctx
            self._n_batch = p.n_batch
        if self._batch_cap < need_tokens:
            if self._batch is not None:
                ll.llama_batch_free(self._batch)
            self._batch_cap = max(need_tokens, self._n_batch)
            self._batch = ll.llama_batch_init(self._batch_cap, 0, 1)

    def _make_chain(self, s: Sampling) -> Any:
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

    def _generate_batched(self, jobs: list[_Job]) -> Iterator[tuple[int, Completion]]:
        ll = self._ll
        longest = max(len(j.tokens) for j in jobs)
        self._ensure_batch_ctx(longest + self.batch_sequences)
        ctx, batch, cap = self._bctx, self._batch, self._batch_cap
        mem = ll.llama_get_memory(ctx)
        piece = ctypes.create_string_buffer(256)
        pending = deque(jobs)
        free = list(range(self.batch_sequences - 1, -1, -1))
        active: dict[int, _Seq] = {}
        psid = self.batch_sequences  # the shared-prefix sequence
        shared = self._eval_shared_prefix(jobs, psid) if self.kv_unified else 0
        self.last_shared_prefix = shared  # tokens evaluated once for all sequences (tests, bench)

        def add(n: int, tok: int, pos: int, seq_id: int, logits: bool) -> None:
            batch.token[n] = tok
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq_id
            batch.logits[n] = logits

        try:
            while pending or active:
                n = 0
                for st in active.values():  # one new token for every running sequence
                    add(n, st.out[-1], st.pos, st.seq_id, True)
                    st.logit_idx, st.pos, n = n, st.pos + 1, n + 1
                # Admit waiting prompts into free slots while the batch has room (continuous batching).
                while pending and free and n + len(pending[0].tokens) - shared <= cap:
                    job = pending.popleft()
                    sid = free.pop()
                    ll.llama_memory_seq_rm(mem, sid, -1, -1)
                    if shared:
                        ll.llama_memory_seq_cp(mem, psid, sid, 0, shared)
                    last = len(job.tokens) - 1
                    for i in range(shared, last + 1):
                        add(n + i - shared, job.tokens[i], i, sid, i == last)
                    n += len(job.tokens) - shared
                    gs = None
                    if job.grammar is not None:
                        gs = ll.llama_sampler_init_grammar(self._vocab, job.grammar[0], job.grammar[1])
                    active[sid] = _Seq(job, sid, self._make_chain(job.sampling), len(job.tokens),
                                       time.perf_counter(), logit_idx=n - 1, grammar=gs)
                batch.n_tokens = n
                t_dec = time.perf_counter()
                rc = ll.llama_decode(ctx, batch)
                self.timings["decode_s"] += time.perf_counter() - t_dec
                self.timings["decode_calls"] += 1
                if rc != 0:
                    raise RuntimeError(f"llama_decode failed with code {rc}")
                for sid in list(active):
                    st = active[sid]
                    tok = ll.llama_sampler_sample(st.chain, ctx, st.logit_idx)
                    if st.grammar is not None:
                        tok = self._constrain(st, tok)
                    finish = None
                    if ll.llama_vocab_is_eog(self._vocab, tok):
                        finish = "stop"
                    else:
                        st.out.append(tok)
                        k = ll.llama_token_to_piece(self._vocab, tok, piece, len(piece), 0, False)
                        st.text += piece.raw[:k]
                        cut = _first_stop(st.text, st.job.sampling.stop)
                        if cut is not None:
                            st.text, finish = st.text[:cut], "stop"
                        elif len(st.out) >= st.job.max_tokens:
                            finish = "length"
                    if finish is None:
                        continue
                    self.model_calls += 1
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

    def _constrain(self, st: _Seq, tok: int) -> int:
        """Keep `tok` if the grammar allows it, else sample again from the grammar-allowed tokens.

        Checking one token is cheap; masking the whole 262k-token vocabulary every step (what a
        grammar-first chain does) is what makes constrained decoding slow, so it is done only when
        the free choice breaks the grammar (llama.cpp's common sampler does the same). Greedy output
        is identical to grammar-first decoding; at temperature > 0 the distribution is the
        grammar-allowed part of the model's, sampled with the sequence's seed.
        """
        ll = self._ll
        one = (ll.llama_token_data * 1)(ll.llama_token_data(tok, 1.0, 0.0))
        arr = ll.llama_token_data_array(one, 1, -1, False)
        ll.llama_sampler_apply(st.grammar, ctypes.byref(arr))
        if one[0].logit == float("-inf"):
            import numpy as np

            n_vocab = ll.llama_vocab_n_tokens(self._vocab)
            logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(self._bctx, st.logit_idx), (n_vocab,))
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

    def _eval_shared_prefix(self, jobs: list[_Job], psid: int) -> int:
        """Decode the token prefix common to all jobs once, into sequence `psid`; return its length.

        Few-shot teacher prompts share their instructions and examples, and the n samples of a request
        share the whole prompt: without this every sequence would re-evaluate them.
        """
        ll = self._ll
        mem = ll.llama_get_memory(self._bctx)
        ll.llama_memory_seq_rm(mem, psid, -1, -1)
        first = jobs[0].tokens
        n = min(len(j.tokens) for j in jobs) - 1  # keep >= 1 token per job to produce its logits
        for j in jobs[1:]:
            k = 0
            while k < n and j.tokens[k] == first[k]:
                k += 1
            n = k
        if n < 16 or len(jobs) < 2:  # not worth an extra decode call
            return 0
        batch = self._batch
        for i in range(n):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = first[i], i, 1, False
            batch.seq_id[i][0] = psid
        batch.n_tokens = n
        rc = ll.llama_decode(self._bctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")
        return n

    def close(self) -> None:
        if self._batch is not None:
            self._ll.llama_batch_free(self._batch)
            self._batch = None
        if self._bctx is not None:
            self._ll.llama_free(self._bctx)
            self._bctx = None
        self.llm.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing useful to do
            pass


def _free(ll: Any, st: _Seq) -> None:
    ll.llama_sampler_free(st.chain)
    if st.grammar is not None:
        ll.llama_sampler_free(st.grammar)
        st.grammar = None


def _grammar(schema: dict[str, Any]) -> Any:
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)


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
