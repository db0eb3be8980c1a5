"""The LLM2LLM loop (Lee et al., 2024) as explicit, resumable stages. Knows nothing of torch or llama.cpp.

    D_0 = seed
    for i in 0..N-1:
        M_i   = finetune(BASE, D_i)                 stage train      (from the base weights each time)
        wrong = seed examples M_i gets wrong        stage eval_seed  (seed set only, never augmented data)
        acc_i = accuracy(M_i, test)                 stage eval_test
        A_i   = teacher(wrong)                      stage augment    (only seed examples reach the teacher)
        A_i   = dedup(A_i vs seed, D_i, test)       stage dedup      (duplicates and test contamination out)
        D_{i+1} = D_i + A_i

Each stage returns its result; its artefacts and its marker in manifest.json are written first, and a
resumed run replays a finished stage from its artefacts instead of running it again. The last iteration
trains and evaluates only: data generated after the final student would never be used. The loop stops
early when no seed example is wrong or nothing new was accepted.

What the `localaug` recipe adds (held-out seeds and the final model choice, teacher verification,
low-margin and untargeted controls) lives in `recipe.py`; with `--recipe paper` every hook is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .augment import Candidates, Target, augment
from .config import Settings
from .data import sample_seed
from .dedup import DedupConfig, DedupIndex
from .errors import UserError
from .failpoints import failpoint, halfway
from .observer import NullObserver, Observer
from .protocols import Student, Teacher
from .recipe import Recipe
from .store import RunStore, iter_dir
from .style import TextStyle
from .task import Example, Judged, Task


@dataclass
class LoopResult:
    iterations: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str | None = None
    final: dict[str, Any] | None = None  # the kept model, when the run holds seeds out


class Loop:
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
        self.recipe = Recipe(self)
        self._index: DedupIndex | None = None

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
        if self._teacher is None:
            return
        self._released_identity = self._teacher.identity
        close = getattr(self._teacher, "close", None)  # optional: not every backend holds a model
        self._teacher = None
        if close is not None:
            close()

    # ------------------------------------------------------------------ the loop

    def run(self) -> LoopResult:
        try:
            return self._run()
        finally:
            self.release_teacher()

    def _run(self) -> LoopResult:
        seed, held, test = self.prepare()
        n = self.settings.iterations
        result = LoopResult()
        self.recipe.preflight(seed)                                 # can this teacher label the task at all?
        data = list(seed)  # D_0 = the seed set (without the held-out seeds)
        for i in range(n):
            row, data, stop = self.iteration(i, data, seed, test, last=i == n - 1)
            row["seconds"] = self.store.stage_seconds(iter_dir(i))
            self.store.set_iteration(i, **row)
            if i == 0:
                self.recipe.compare_teacher_and_student(row)
            self.obs.iteration_end(i, row)
            result.iterations.append(row)
            if stop:
                result.stopped_early = stop
                break
        result.final = self.recipe.finish(result.iterations, test)
        self.store.manifest.update(final=result.final, finished=True, stopped_early=result.stopped_early)
        self.store.save_manifest()
        return result

    def iteration(self, i: int, data: list[Example], seed: list[Example], test: list[Example], last: bool
                  ) -> tuple[dict[str, Any], list[Example], str | None]:
        """One round: train M_i on D_i, find what it gets wrong, return (its row, D_{i+1}, why it stopped)."""
        self.train(i, data)                                         # M_i = finetune(BASE, D_i)
        on_seed = self.evaluate(i, "seed", seed)                    # the seed set only
        on_test = self.evaluate(i, "test", test)
        row: dict[str, Any] = {"iteration": i, "train_size": len(data), "seed_accuracy": on_seed.accuracy,
                               "wrong": len(on_seed.rows) - on_seed.correct, "test_accuracy": on_test.accuracy,
                               "new_examples": 0}
        row.update(self.recipe.score_iteration(i))                  # recipe: held-out seed accuracy
        if last:
            return row, data, None
        on_seed = self.recipe.find_errors(i, data, seed, on_seed)  # recipe: out-of-fold students
        row["wrong"] = len(on_seed.rows) - on_seed.correct
        if self.settings.find_errors == "oof":
            row["oof_accuracy"] = on_seed.accuracy
        targets = self.recipe.targets(i, on_seed, seed)             # wrong = seed examples M_i gets wrong
        if not targets:
            return row, data, f"iteration {i}: the student gets every seed example right"
        candidates = self.generate(i, targets, seed)                # A_i = teacher(wrong)
        kept = self.recipe.verify(i, candidates, seed)              # recipe: teacher verification
        accepted = self.dedup(i, kept, data, test)                  # A_i = dedup(A_i vs seed, D_i, test)
        dd = self.store.stage_info(f"{iter_dir(i)}/dedup")
        row.update(new_examples=len(accepted), parsed=len(candidates), verified=len(kept),
                   duplicate=dd["duplicate"], contaminated=dd["contaminated"])
        if not accepted:
            return row, data, f"iteration {i}: the teacher produced nothing new that passed the filters"
        return row, data + accepted, None                           # D_{i+1} = D_i + A_i

    # ------------------------------------------------------------------ stages

    def stage(self, i: int, name: str, total: int, work: Callable[[], dict[str, Any]],
              folder: str | None = None) -> dict[str, Any]:
        """Run `work` (which writes the stage's artefacts) unless its marker says it is done; its summary."""
        key = f"{folder or iter_dir(i)}/{name}"
        # A stage in a sub-folder of an iteration (an out-of-fold student) says which, for the progress.
        label = f"{name}@{folder.rsplit('/', 1)[-1]}" if folder and folder.startswith("iter_") else name
        if not self.store.stage_done(key):
            self.obs.stage_start(i, label, total)
            t0 = time.perf_counter()
            info = work()
            info["seconds"] = round(time.perf_counter() - t0, 3)
            self.store.mark_done(key, **info)
            self.obs.stage_end(i, label, info)
        return self.store.stage_info(key)

    def prepare(self) -> tuple[list[Example], list[Example], list[Example]]:
        """Draw the seed set from the train split, hold part of it out (recipe), fix the test set."""
        if not self.store.stage_done("prepare"):
            s = self.settings
            pool = self.task.load_split("train")
            seed = sample_seed(pool, size=s.seed_size, fraction=s.seed_fraction, seed=s.seed,
                               stratify_by=self.task.stratify())
            test = self.task.load_split("test")[s.test_offset:][: s.test_size]
            for ex in seed:
                ex.meta.setdefault("origin", "seed")
            held = self.recipe.draw_holdout(seed)
            self.store.write_examples("seed.jsonl", seed)
            self.store.write_examples("holdout.jsonl", held)
            self.store.write_examples("test.jsonl", test)
            self.store.mark_done("prepare", seed_size=len(seed), holdout_size=len(held), test_size=len(test),
                                 pool_size=len(pool))
        held_ids = {e.id for e in self.store.read_examples("holdout.jsonl")}
        seed = [e for e in self.store.read_examples("seed.jsonl") if e.id not in held_ids]
        return seed, self.store.read_examples("holdout.jsonl"), self.store.read_examples("test.jsonl")

    def train(self, i: int, data: list[Example], folder: str | None = None) -> None:
        """Fine-tune from the base weights on `data`; the adapter goes to `<folder>/adapter`."""
        d = folder or iter_dir(i)

        def work() -> dict[str, Any]:
            failpoint(f"train:{'final' if folder else i}")
            self.store.write_examples(f"{d}/train.jsonl", data)
            stats = self.student.train([self.task.train_item(e) for e in data], self.store.path(f"{d}/adapter"),
                                       seed=self.settings.training_seed, progress=self.obs.progress)
            return {"train_size": len(data), "steps": stats.steps, "train_tokens": stats.train_tokens,
                    "final_loss": stats.final_loss, "peak_rss_mb": stats.peak_rss_mb}

        self.stage(i, "train", len(data), work, folder)

    def evaluate(self, i: int, split: str, examples: list[Example], folder: str | None = None) -> Judged:
        """The student of iteration i (or of `folder`) on `examples`, judged; rows in eval_<split>.jsonl."""
        d = folder or iter_dir(i)
        rel = f"{d}/eval_{split}.jsonl"

        def work() -> dict[str, Any]:
            items = [self.task.eval_item(e, self.mode) for e in examples]
            results = self.student.evaluate(self.store.path(f"{d}/adapter"), items, progress=self.obs.progress)
            judged = self.task.judge_all(examples, results)
            self.store.write_jsonl(rel, judged.rows)
            return {"accuracy": judged.accuracy, "correct": judged.correct, "total": len(examples),
                    "wrong": len(examples) - judged.correct, "eval_mode": self.mode}

        info = self.stage(i, f"eval_{split}", len(examples), work, folder)
        rows = self.store.read_jsonl(rel)
        return Judged(rows, int(info["correct"]))

    def generate(self, i: int, targets: list[Target], pool: list[Example]) -> list[Example]:
        """The teacher's new examples for the targets, parsed (candidates.jsonl; failures rejected_parse.jsonl)."""
        d = iter_dir(i)
        s = self.settings

        style = (TextStyle.learn(self.task.dedup_text(e) for e in pool)
                 if s.match_style and self.task.kind.name == "classification" else None)

        def work() -> dict[str, Any]:
            res: Candidates = augment(
                self.task, self.teacher, targets, iteration=i, per_wrong=s.per_wrong, run_seed=s.seed,
                max_retries=s.max_retries, shots=s.shots, pool=pool, style=style,
                progress=lambda done, n, info: (self.obs.progress(done, n, info),
                                                halfway(f"augment:{i}", done, n)))
            self.store.write_examples(f"{d}/candidates.jsonl", res.accepted)
            self.store.write_jsonl(f"{d}/rejected_parse.jsonl", res.rejected)
            return {"wrong": len(targets), "requested": len(targets) * s.per_wrong, "completions": res.completions,
                    "parsed": len(res.accepted), "parse_rejected": len(res.rejected),
                    "parse_failure_rate": round(res.parse_failure_rate, 4), "repeats": res.repeats,
                    "repeat_rate": round(res.repeat_rate, 4), "cached": res.cached,
                    "completion_tokens": res.completion_tokens, "teacher": self.teacher.identity,
                    **({"style": str(style)} if style is not None else {})}

        self.stage(i, "augment", len(targets) * s.per_wrong, work)
        return self.store.read_examples(f"{d}/candidates.jsonl")

    def dedup(self, i: int, candidates: list[Example], data: list[Example], test: list[Example]) -> list[Example]:
        """Candidates that are neither near-copies of seed / D_i / earlier candidates nor of test data."""
        d = iter_dir(i)

        def work() -> dict[str, Any]:
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
            earlier = [r for name in ("parse", "verify", "consistency")
                       if self.store.path(f"{d}/rejected_{name}.jsonl").exists()
                       for r in self.store.read_jsonl(f"{d}/rejected_{name}.jsonl")]
            self.store.write_examples(f"{d}/augment.jsonl", accepted)
            self.store.write_jsonl(f"{d}/rejected.jsonl", earlier + rejected)
            index.save(self.store.path(f"{d}/dedup_index.npz"))
            return {"candidates": len(candidates), "accepted": len(accepted), **counts,
                    "next_train_size": len(data) + len(accepted)}

        self.stage(i, "dedup", len(candidates), work)
        return self.store.read_examples(f"{d}/augment.jsonl")

    def _dedup_index(self, i: int, test: list[Example], data: list[Example]) -> DedupIndex:
        """The index of seed ∪ D_i ∪ test: kept in memory across iterations, persisted per iteration."""
        if self._index is not None:
            return self._index
        prev = self.store.path(f"{iter_dir(i - 1)}/dedup_index.npz")
        if i > 0 and prev.exists():
            self._index = DedupIndex.load(prev)
        else:
            index = DedupIndex(DedupConfig.from_dict(self.settings.dedup))
            # Held-out seeds count as test data: a near-copy of one would make the model choice unfair.
            held = self.store.read_examples("holdout.jsonl")
            index.add_many(((e.id, self.task.dedup_text(e)) for e in [*test, *held]), role="test")
            index.add_many((e.id, self.task.dedup_text(e)) for e in data)
            self._index = index
        return self._index


def check_task_has_test(task: Task) -> None:
    if "test" not in task.splits():
        raise UserError(f"task '{task.name}' has no 'test' split", file=task.path, field="data.splits")
