"""The run directory read for report.html: per round, each seed example the teacher was asked about (the
student's answer beside the right one) and every example the teacher wrote for it, kept or refused and why;
the student's answers on the test set per label. Plain dicts, ready to be embedded as JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from .. import layout
from ..errors import UserError
from ..layout import round_folder
from ..store import RunStore
from ..task import Example, Task, load_task

NO_ANSWER = "(no answer)"
TEST_TEXT_CHARS = 400  # of a test row the student got wrong, in the page


def reason_kind(reason: str) -> str:
    """The filter's word at the head of a rejection's reason ("duplicate: of seed-3" -> "duplicate")."""
    return reason.split(":", 1)[0].strip() or "refused"


@dataclass
class Shown:
    """How an example is shown: through its task when the task card loads, field by field when it does not."""

    task: Task | None

    def text(self, data: dict[str, Any]) -> str:
        if self.task is not None:
            try:
                return self.task.kind.dedup_text(data)
            except (KeyError, TypeError):
                pass
        for key in ("text", "question", "context"):
            if isinstance(data.get(key), str):
                return data[key]
        return " ".join(f"{k}: {v}" for k, v in data.items())

    def answer(self, data: dict[str, Any]) -> str:
        if self.task is not None:
            try:
                return self.said(self.task.kind.gold(data))
            except (KeyError, TypeError):
                pass
        return str(data.get("label", data.get("answer", "")))

    def said(self, prediction: str | None) -> str:
        """A student's or the teacher's answer in words (a label's word, a number)."""
        if prediction is None:
            return NO_ANSWER
        return self.task.readable(prediction) if self.task is not None else str(prediction)

    def detail(self, data: dict[str, Any]) -> str | None:
        """What the text leaves out: a maths example's worked solution."""
        return self.task.kind.worked_answer(data) if self.task is not None else None

    @property
    def labels(self) -> list[str]:
        """The label words in the card's order (empty unless the answer is one of a fixed set of labels)."""
        return list(self.task.labels.values()) if self.task is not None and self.task.kind.has_classes else []


def shown_for(store: RunStore) -> Shown:
    from ..config import load_settings

    try:
        settings = load_settings(store.path(layout.CONFIG))
        return Shown(load_task(settings.task, settings.data_dir))
    except (UserError, OSError):  # the task card moved: show every field as it is
        return Shown(None)


class Lookup:
    """Examples by id, with the role each plays: a dedup rejection names the example it is a copy of."""

    def __init__(self, store: RunStore) -> None:
        self.roles: dict[str, tuple[str, Example]] = {}
        for rel, role in ((layout.TEST, "test row"), (layout.HOLDOUT, "held-out seed"), (layout.SEED, "seed example")):
            for e in _examples(store, rel):
                self.roles[e.id] = (role, e)

    def add(self, examples: list[Example], role: str) -> None:
        for e in examples:
            self.roles.setdefault(e.id, (role, e))

    def seed(self, sid: str) -> Example | None:
        found = self.roles.get(sid)
        return found[1] if found and found[0] in ("seed example", "held-out seed") else None


def _examples(store: RunStore, rel: str) -> list[Example]:
    return store.read_examples(rel) if store.path(rel).exists() else []


def _rows(store: RunStore, rel: str) -> list[dict[str, Any]]:
    return store.read_jsonl(rel) if store.path(rel).exists() else []


def rounds_of(store: RunStore) -> list[int]:
    """The rounds the run began, in order (from the manifest's stage keys)."""
    keys = [*store.manifest.stages, *([store.manifest.in_progress] if store.manifest.in_progress else [])]
    return sorted({f.iteration for k in keys if (f := layout.folder_of(k)) is not None and f.iteration >= 0})


def gather(store: RunStore, shown: Shown) -> dict[str, Any]:
    """Everything report.html shows of the examples: {"rounds": [...], "refs": {id: {"role", "text"}}}."""
    lookup = Lookup(store)
    refs: dict[str, dict[str, str]] = {}
    rounds = [_round(store, shown, lookup, refs, i) for i in rounds_of(store)]
    final = store.path(layout.FINAL.judged("test"))
    return {"rounds": rounds, "labels": shown.labels, "kind": shown.task.kind.name if shown.task else "",
            "refs": refs,
            "final_test": _test_view(shown, lookup, _rows(store, layout.FINAL.judged("test"))) if final.exists()
            else None}


def _round(store: RunStore, shown: Shown, lookup: Lookup, refs: dict[str, dict[str, str]], i: int
           ) -> dict[str, Any]:
    here = round_folder(i)
    oof = store.path(here.errors_out_of_fold).exists()
    errors = _rows(store, here.errors_out_of_fold if oof else here.judged("seed"))
    candidates = _examples(store, here.candidates)
    # D_i is the seed set plus the earlier rounds' kept candidates, all in the lookup already: with this round's
    # candidates, every example a dedup refusal can name.
    lookup.add(candidates, f"teacher example of iteration {i}")
    dedup_done = store.stage_done(here.key(layout.DEDUP))
    rejected = _rows(store, here.rejected) if dedup_done else store.rejections(here)
    kept_ids = {e.id for e in _examples(store, here.added)}
    refused = {r["id"]: r for r in rejected if r.get("id")}

    written: dict[str, list[dict[str, Any]]] = {}
    for c in candidates:
        r = refused.get(c.id)
        fate = "kept" if c.id in kept_ids else "refused" if r else "pending"
        item = _teacher_item(shown, c.id, c.data, fate, r, c.meta)
        if r:
            _note_near(item, r, lookup, shown, refs)
        written.setdefault(str(c.meta.get("seed_id")), []).append(item)
    for r in rejected:  # the parse step's refusals: raw teacher text, no example id
        if not r.get("id"):
            item = {"id": "", "text": str(r.get("text", "")), "answer": "", "fate": "refused",
                    "kind": reason_kind(str(r.get("reason", ""))), "reason": str(r.get("reason", "")),
                    "order": [r.get("attempt", 0), r.get("sample", 0)]}
            written.setdefault(str(r.get("seed_id")), []).append(item)
    for items in written.values():
        items.sort(key=lambda x: x.pop("order"))

    targets = []
    by_id = {str(r["id"]): r for r in errors}
    asked = [sid for sid in by_id if not by_id[sid].get("correct")] + [sid for sid in written if sid not in by_id
                                                                          or by_id[sid].get("correct")]
    for sid in dict.fromkeys(asked):
        seed, judged = lookup.seed(sid), by_id.get(sid, {})
        data = seed.data if seed else {}
        targets.append({"seed": sid, "text": shown.text(data) if seed else sid, "answer": shown.answer(data),
                        "detail": shown.detail(data), "pred": shown.said(judged.get("prediction")) if judged else "",
                        "ok": bool(judged.get("correct")), "ex": written.get(sid, [])})
    counts = Counter(x["fate"] if x["fate"] != "refused" else f"refused:{x['kind']}"
                     for t in targets for x in t["ex"])
    return {"iteration": i, "errors_from": "out-of-fold students" if oof else f"the student of iteration {i}",
            "asked_teacher": store.stage_done(here.key(layout.AUGMENT)) or bool(candidates or rejected),
            "targets": targets, "counts": dict(counts),
            "test": _test_view(shown, lookup, _rows(store, here.judged("test")))}


def _teacher_item(shown: Shown, eid: str, data: dict[str, Any], fate: str, rejection: dict[str, Any] | None,
                  meta: dict[str, Any]) -> dict[str, Any]:
    reason = str(rejection.get("reason", "")) if rejection else ""
    item = {"id": eid, "text": shown.text(data), "answer": shown.answer(data), "fate": fate,
            "kind": reason_kind(reason) if rejection else "", "reason": reason,
            "order": [meta.get("attempt", 0), meta.get("sample", 0)]}
    if (detail := shown.detail(data)) is not None:
        item["detail"] = detail
    return item


def _note_near(item: dict[str, Any], rejection: dict[str, Any], lookup: Lookup, shown: Shown,
               refs: dict[str, dict[str, str]]) -> None:
    """A dedup refusal names the example it is a near-copy of ("duplicate: of X"): point at X, with its text."""
    reason = str(rejection.get("reason", ""))
    _, _, rest = reason.partition(": of ")
    if not rest:
        return
    near = rest.strip()
    item["near"] = near
    if rejection.get("similarity") is not None:
        item["sim"] = rejection["similarity"]
    if near in lookup.roles and near not in refs:
        role, ex = lookup.roles[near]
        refs[near] = {"role": role, "text": shown.text(ex.data), "answer": shown.answer(ex.data)}


def _test_view(shown: Shown, lookup: Lookup, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The student on the test set: per-label accuracy and the confusion matrix (a classifier), or the rows it
    got wrong with its number beside the right one (maths and the rest)."""
    if not rows:
        return None
    correct = sum(bool(r.get("correct")) for r in rows)
    view: dict[str, Any] = {"total": len(rows), "correct": correct}
    labels = shown.labels
    if labels:
        gold = [shown.said(r.get("gold")) for r in rows]
        pred = [shown.said(r.get("prediction")) for r in rows]
        cols = labels + ([NO_ANSWER] if NO_ANSWER in pred else [])
        cols += sorted({p for p in pred if p not in cols})  # an answer outside the card's labels
        pairs = Counter(zip(gold, pred, strict=True))
        view["labels"] = cols
        view["matrix"] = [[pairs[(g, p)] for p in cols] for g in labels]
        return view
    wrong = []
    for r in rows:
        if not r.get("correct"):
            found = lookup.roles.get(str(r.get("id")))
            text = shown.text(found[1].data) if found else ""
            if len(text) > TEST_TEXT_CHARS:  # a long test set (CaseHOLD's 3,600 rows) would swell the page
                text = text[:TEST_TEXT_CHARS] + "…"
            wrong.append({"id": str(r.get("id")), "text": text,
                          "pred": shown.said(r.get("prediction")), "gold": str(r.get("gold", ""))})
    view["wrong"] = wrong
    return view
