"""The loop's resumable stages: each writes its artefacts, then its marker; a finished one is replayed.

A stage runs its work unless the manifest holds its marker; either way it hands back what the stage
made, read from the run directory, so a resumed run continues from the same bytes. The loop (loop.py)
strings the paper's stages together; a recipe (recipe.py) runs more of them (out-of-fold students, the
verifier) through the same `run`. Knows nothing of torch or llama.cpp.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from . import layout
from .augment import Candidates, Target, augment
from .config import Settings
from .data import sample_seed
from .dedup import DedupConfig, DedupIndex
from .failpoints import failpoint, halfway
from .layout import Folder, round_folder
from .observer import NullObserver, Observer
from .protocols import Student, Teacher
from .records import AugmentSummary, DedupSummary, EvalSummary, PrepareSummary, StageSummary, TrainSummary
from .store import RunStore
from .style import TextStyle
from .task import Example, Judged, Task

S = TypeVar("S", bound=StageSummary)


class Stages:
    def __init__(self, task: Task, settings: Settings, store: RunStore, student: Student,
                 make_teacher: Callable[[], Teacher], observer: Observer | None = None) -> None:
        self.task = task
        self.settings = settings
        self.store = store
        self.student = student
        self._make_teacher = make_teacher
        self._teacher: Teacher | None = None
        self._released_identity: str | None = None
        self.obs: Observer = observer or NullObserver()
        self.mode = task.eval_mode(settings.eval_mode)
        self._index: DedupIndex | None = None

    # ------------------------------------------------------------------ the teacher

    @property
    def teacher(self) -> Teacher:
        if self._teacher is None:  # built lazily: a resumed run past augmentation never loads it
            self._teacher = self._make_teacher()
        return self._teacher

    @property
    def teacher_identity(self) -> str | None:
        return self._teacher.identity if self._teacher is not None else self._released_identity

    def release_teacher(self) -> None:
        """Free the teacher's model once the run no longer needs it (a later use builds it again)."""
        if self._teacher is not None:
            self._released_identity, teacher, self._teacher = self._teacher.identity, self._teacher, None
            teacher.close()

    # ------------------------------------------------------------------ running a stage

    def run(self, folder: Folder, name: str, total: int, work: Callable[[], S]) -> S:
        """Run `work` (which writes the stage's artefacts) unless its marker says it is done; its summary."""
        key = folder.key(name)
        label = f"{name}@{folder.label}" if folder.label else name  # which out-of-fold student, for progress
        if not self.store.stage_done(key):
            self.obs.stage_start(folder.iteration, label, total)
            self.store.mark_started(key)
            t0 = time.perf_counter()
            summary = work().model_copy(update={"seconds": round(time.perf_counter() - t0, 3)})
            self.store.mark_done(key, summary)
            self.obs.stage_end(folder.iteration, label, summary)
        return self.store.summary(key)  # type: ignore[return-value]

    # ------------------------------------------------------------------ the paper's stages

    def prepare(self, hold_out: Callable[[list[Example]], list[Example]]) -> tuple[list[Example], list[Example]]:
        """Draw the seed set from the train split, let `hold_out` keep part of it out of the loop, fix the
        test set. (seed examples in the loop, test examples)."""
        if not self.store.stage_done(layout.PREPARE):
            self.store.mark_started(layout.PREPARE)
            s = self.settings
            pool = self.task.load_split("train")
            seed = sample_seed(pool, size=s.seed_size, fraction=s.seed_fraction, seed=s.seed,
                               stratify_by=self.task.stratify())
            test = self.task.load_split("test")[s.test_offset:][: s.test_size]
            for ex in seed:
                ex.meta.setdefault("origin", "seed")
            held = hold_out(seed)
            self.store.write_examples(layout.SEED, seed)
            self.store.write_examples(layout.HOLDOUT, held)
            self.store.write_examples(layout.TEST, test)
            self.store.mark_done(layout.PREPARE, PrepareSummary(seed_size=len(seed), holdout_size=len(held),
                                                                test_size=len(test), pool_size=len(pool)))
        held_ids = {e.id for e in self.held_out()}
        seed = [e for e in self.store.read_examples(layout.SEED) if e.id not in held_ids]
        return seed, self.store.read_examples(layout.TEST)

    def held_out(self) -> list[Example]:
        """The seed examples kept out of the loop (none unless the recipe holds some out)."""
        return self.store.read_examples(layout.HOLDOUT)

    def train(self, folder: Folder, data: list[Example]) -> TrainSummary:
        """Fine-tune from the base weights on `data`; the adapter goes to `<folder>/adapter`."""

        def work() -> TrainSummary:
            # train:<i> for a round's student; train:final, train:iter_00/fold1, ... for the others
            failpoint(f"train:{folder.path if folder.label or folder == layout.FINAL else folder.iteration}")
            self.store.write_examples(folder.train_data, data)
            stats = self.student.train([self.task.train_item(e) for e in data], self.store.path(folder.adapter),
                                       seed=self.settings.training_seed, progress=self.obs.progress)
            return TrainSummary(train_size=len(data), steps=stats.steps, train_tokens=stats.train_tokens,
                                final_loss=stats.final_loss, peak_rss_mb=stats.peak_rss_mb,
                                processes=stats.processes)

        return self.run(folder, layout.TRAIN, len(data), work)

    def evaluate(self, folder: Folder, split: str, examples: list[Example]) -> Judged:
        """The student of `folder` on `examples`, judged; rows in <folder>/eval_<split>.jsonl."""

        def work() -> EvalSummary:
            items = [self.task.eval_item(e, self.mode) for e in examples]
            results = self.student.evaluate(self.store.path(folder.adapter), items, progress=self.obs.progress)
            judged = self.task.judge_all(examples, results)
            self.store.write_jsonl(folder.judged(split), judged.rows)
            return EvalSummary(accuracy=judged.accuracy, correct=judged.correct, total=len(examples),
                               wrong=len(examples) - judged.correct, eval_mode=self.mode)

        summary = self.run(folder, layout.eval_stage(split), len(examples), work)
        return Judged(self.store.read_jsonl(folder.judged(split)), summary.correct)

    def generate(self, i: int, targets: list[Target], pool: list[Example]) -> list[Example]:
        """The teacher's new examples for the targets, parsed (candidates.jsonl; failures rejected_parse.jsonl)."""
        folder, s = round_folder(i), self.settings
        style = (TextStyle.learn(self.task.dedup_text(e) for e in pool)
                 if s.match_style and self.task.kind.name == "classification" else None)

        def work() -> AugmentSummary:
            res: Candidates = augment(
                self.task, self.teacher, targets, iteration=i, per_wrong=s.per_wrong, run_seed=s.seed,
                max_retries=s.max_retries, shots=s.shots, pool=pool, style=style,
                progress=lambda done, n, info: (self.obs.progress(done, n, info),
                                                halfway(f"augment:{i}", done, n)))
            self.store.write_examples(folder.candidates, res.accepted)
            self.store.write_jsonl(folder.rejected_by("parse"), res.rejected)
            return AugmentSummary(
                wrong=len(targets), requested=len(targets) * s.per_wrong, completions=res.completions,
                parsed=len(res.accepted), parse_rejected=len(res.rejected),
                parse_failure_rate=round(res.parse_failure_rate, 4), repeats=res.repeats,
                repeat_rate=round(res.repeat_rate, 4), cached=res.cached, completion_tokens=res.completion_tokens,
                teacher=self.teacher.identity, style=str(style) if style is not None else None)

        self.run(folder, layout.AUGMENT, len(targets) * s.per_wrong, work)
        return self.store.read_examples(folder.candidates)

    def dedup(self, i: int, candidates: list[Example], data: list[Example], test: list[Example]
              ) -> tuple[list[Example], DedupSummary]:
        """Candidates that are neither near-copies of seed / D_i / earlier candidates nor of test data (nor of
        held-out seeds); every rejection of the round, with its reason, in rejected.jsonl."""
        folder = round_folder(i)

        def work() -> DedupSummary:
            index = self._dedup_index(i, test, data)
            accepted, rejected = [], []
            counts = {"duplicate": 0, "contaminated": 0}
            for k, cand in enumerate(candidates):
                halfway(f"dedup:{i}", k, len(candidates))
                verdict = index.check_and_add(cand.id, self.task.dedup_text(cand))
                if verdict.outcome == "accepted":
                    accepted.append(cand)
                else:
                    counts[verdict.outcome] += 1
                    rejected.append({"seed_id": cand.meta.get("seed_id"), "iteration": i, "id": cand.id,
                                     "reason": f"{verdict.outcome}: of {verdict.match_id}",
                                     "similarity": round(verdict.similarity, 4), "example": cand.to_json()})
                self.obs.progress(k + 1, len(candidates), {"accepted": len(accepted), "rejected": len(rejected)})
            earlier = self.store.rejections(folder)
            self.store.write_examples(folder.added, accepted)
            self.store.write_jsonl(folder.rejected, earlier + rejected)
            index.save(self.store.path(folder.dedup_index))
            return DedupSummary(candidates=len(candidates), accepted=len(accepted), **counts,
                                next_train_size=len(data) + len(accepted))

        summary = self.run(folder, layout.DEDUP, len(candidates), work)
        return self.store.read_examples(folder.added), summary

    def _dedup_index(self, i: int, test: list[Example], data: list[Example]) -> DedupIndex:
        """The index of seed ∪ D_i ∪ test: kept in memory across iterations, persisted per iteration."""
        if self._index is not None:
            return self._index
        prev = self.store.path(round_folder(i - 1).dedup_index)
        if i > 0 and prev.exists():
            self._index = DedupIndex.load(prev)
        else:
            index = DedupIndex(DedupConfig.from_dict(self.settings.dedup))
            # Held-out seeds count as test data: a near-copy of one would make the model choice unfair.
            index.add_many(((e.id, self.task.dedup_text(e)) for e in [*test, *self.held_out()]), role="test")
            index.add_many((e.id, self.task.dedup_text(e)) for e in data)
            self._index = index
        return self._index
