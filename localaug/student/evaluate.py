"""Deterministic evaluation: likelihood scoring of choices, and batched greedy generation.

Scoring runs each prompt once (left-padded batch) and takes the output logits at its last position only,
which already scores the first token of every choice -- for single-token label words (all of TREC's with
Gemma) that is the whole answer in one forward pass. Longer choices continue from the prompt's KV cache:
only their own tokens pass through the network, and logits are computed only where a choice token is predicted.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..protocols import EvalItem, EvalResult, ProgressFn, best_choice

_ROW_TOKEN_BUDGET = 4096  # choice tokens per continuation forward (bounds memory for long endings)
_MAX_TOKEN_CHARS = 64  # no token spans more characters (rowcheck.py): text beyond room * this is cut unread


def prompt_ids(tok: Any, prompt: str, room: int) -> list[int]:
    """The prompt's token ids, cut from the start to at most `room` (BOS kept), as training cuts a row that is
    longer than the student's context (train.encode_item): one long row never takes the machine's memory."""
    room = max(1, room)
    if len(prompt) > room * _MAX_TOKEN_CHARS:
        prompt = prompt[-room * _MAX_TOKEN_CHARS:]
    ids = tok(prompt, add_special_tokens=True)["input_ids"]
    if len(ids) <= room:
        return ids
    bos = ids[:1] if tok.bos_token_id is not None and ids[:1] == [tok.bos_token_id] else []
    return bos + ids[len(ids) - (room - len(bos)):] if room > len(bos) else ids[-room:]


@contextmanager
def with_adapter(model: Any, adapter_dir: Path | None) -> Iterator[Any]:
    """The base model with the adapter's LoRA layers injected for the duration (removed afterwards)."""
    if adapter_dir is None:
        yield model
        return
    from peft import PeftModel

    pm = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    pm.eval()
    try:
        yield pm.get_base_model()
    finally:
        pm.unload()


def _cache_kw(model: Any) -> str:
    # transformers 5.x renamed `past_key_values` to `cache`
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _left_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, n - len(s):] = 1
    return ids, mask


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def score_batch(model: Any, tok: Any, items: Sequence[EvalItem], max_length: int = 1 << 30) -> list[EvalResult]:
    """Sum of log-probabilities of each choice's tokens after the prompt; the argmax is the answer. A prompt is
    cut so that it and its longest choice fit `max_length` (the student's context)."""
    pad = tok.pad_token_id
    dev = _device(model)
    choices = [[tok(c, add_special_tokens=False)["input_ids"] for c in (it.choices or ())] for it in items]
    prompts = [prompt_ids(tok, it.prompt, max_length - max(map(len, cs), default=0))
               for it, cs in zip(items, choices, strict=True)]
    for it, cs in zip(items, choices, strict=True):
        if not cs or any(len(c) == 0 for c in cs):
            raise ValueError(f"every choice must have at least one token: {it.choices!r}")
    ids, mask = _left_pad(prompts, pad)
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    rows = [(i, j) for i, cs in enumerate(choices) for j, c in enumerate(cs) if len(c) > 1]
    ckw = _cache_kw(model)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=bool(rows), logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    scores = [[float(first[i, c[0]]) for c in cs] for i, cs in enumerate(choices)]
    if rows:
        cache = getattr(out, ckw, None)
        plen = mask.sum(-1)
        start = 0
        while start < len(rows):  # chunks of continuation rows, bounded by a token budget
            width = 0
            end = start
            while end < len(rows):
                w = max(width, len(choices[rows[end][0]][rows[end][1]]) - 1)
                if end > start and w * (end - start + 1) > _ROW_TOKEN_BUDGET:
                    break
                width, end = w, end + 1
            chunk = rows[start:end]
            start = end
            src = torch.tensor([i for i, _ in chunk], device=dev)
            cont = torch.full((len(chunk), width), pad, dtype=torch.long, device=dev)
            tgt = torch.full((len(chunk), width), -1, dtype=torch.long, device=dev)
            cmask = torch.zeros((len(chunk), width), dtype=torch.long, device=dev)
            for r, (i, j) in enumerate(chunk):
                c = choices[i][j]
                cont[r, : len(c) - 1] = torch.tensor(c[:-1])
                tgt[r, : len(c) - 1] = torch.tensor(c[1:])
                cmask[r, : len(c) - 1] = 1
            sub = copy.deepcopy(cache)
            sub.batch_select_indices(src)
            keep = tgt >= 0
            out2 = model(
                input_ids=cont, attention_mask=torch.cat([mask[src], cmask], dim=1),
                position_ids=plen[src, None] + torch.arange(width, device=dev)[None, :],
                use_cache=True, logits_to_keep=keep, **{ckw: sub},
            )
            logits = out2.logits if out2.logits.dim() == 2 else out2.logits[keep]
            lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tgt[keep][:, None])[:, 0]
            per_row = torch.zeros(len(chunk), dtype=torch.float64, device=dev)
            per_row.index_add_(0, keep.nonzero()[:, 0], lp.double())
            for r, (i, j) in enumerate(chunk):
                scores[i][j] += float(per_row[r])
    results = []
    for it, sc in zip(items, scores, strict=True):
        best = best_choice(sc)
        results.append(EvalResult(output=(it.choices or ())[best], choice_index=best, scores=sc))
    return results


def _truncate(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _row_stopper(tok: Any, start: int, stops: list[tuple[str, ...]], limits: list[int]) -> Any:
    from transformers import StoppingCriteria

    class RowStop(StoppingCriteria):
        """Per-row stop: a row is done once it contains one of its stop strings or reached its own limit;
        `generate` stops as soon as every row is done."""

        def __call__(self, input_ids: torch.LongTensor, scores: Any, **kw: Any) -> torch.BoolTensor:
            gen = input_ids[:, start:]
            done = torch.zeros(gen.shape[0], dtype=torch.bool, device=input_ids.device)
            for r in range(gen.shape[0]):
                if gen.shape[1] >= limits[r]:
                    done[r] = True
                elif stops[r]:
                    done[r] = _truncate(tok.decode(gen[r], skip_special_tokens=True), stops[r])[1]
            return done

    return RowStop()


@torch.inference_mode()
def generate_batch(model: Any, tok: Any, items: Sequence[EvalItem], cap: int | None = None,
                   max_length: int = 1 << 30) -> list[EvalResult]:
    """Greedy decoding, left-padded, KV cache; each row truncated at its first stop string. A prompt longer
    than `max_length` (the student's context) is cut from its start."""
    from transformers import GenerationConfig, StoppingCriteriaList

    dev = _device(model)
    limits = [min(it.max_new_tokens, cap) if cap else it.max_new_tokens for it in items]
    ids, mask = _left_pad([prompt_ids(tok, it.prompt, max_length) for it in items], tok.pad_token_id)
    ids, mask = ids.to(dev), mask.to(dev)
    gc = GenerationConfig(max_new_tokens=max(limits), do_sample=False, num_beams=1,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    stopper = _row_stopper(tok, ids.shape[1], [tuple(it.stop) for it in items], limits)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gc,
                         stopping_criteria=StoppingCriteriaList([stopper]))
    gen = out[:, ids.shape[1]:]
    results = []
    for r, it in enumerate(items):
        text = tok.decode(gen[r, : limits[r]], skip_special_tokens=True)
        results.append(EvalResult(output=_truncate(text, it.stop)[0]))
    return results


def evaluate_items(model: Any, tok: Any, items: Sequence[EvalItem], plan: Any,
                   progress: ProgressFn | None = None) -> tuple[list[EvalResult], dict[str, Any]]:
    """Evaluate in batches of similar prompt length; results come back in input order."""
    model.eval()
    t0 = time.perf_counter()
    bs = max(1, int(plan.eval_batch_size))
    lengths = [len(it.prompt) for it in items]
    results: list[EvalResult | None] = [None] * len(items)
    done = 0
    for scored in (True, False):
        idx = [i for i, it in enumerate(items) if bool(it.choices) == scored]
        idx.sort(key=lambda i: -lengths[i])
        for s in range(0, len(idx), bs):
            part = idx[s:s + bs]
            batch = [items[i] for i in part]
            limit = plan.train.max_length  # the student's context: what it was trained on
            res = score_batch(model, tok, batch, limit) if scored else \
                generate_batch(model, tok, batch, plan.max_new_tokens, limit)
            for i, r in zip(part, res, strict=True):
                results[i] = r
            done += len(part)
            if progress is not None:
                progress(done, len(items), {"items_per_s": round(done / (time.perf_counter() - t0), 2)})
    n_scored = sum(1 for it in items if it.choices)
    info = {"scored": n_scored, "generated": len(items) - n_scored,
            "seconds": round(time.perf_counter() - t0, 2)}
    return [r for r in results if r is not None], info
