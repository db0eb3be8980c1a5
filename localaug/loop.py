"""The LLM2LLM loop (Lee et al., 2024) as explicit, resumable stages. Knows nothing of torch or llama.cpp.

    D_0 = seed
    for i in 0..N-1:
        M_i   = finetune(BASE, D_i)                 stage train      (from the base weights each time)
        wrong = seed examples M_i gets wrong        stage eval_seed  (seed set only, never augmented data)
        acc_i = accuracy(M_i, test)                 stage eval_test
        A_i   = teacher(wrong)                      stage augment    (only seed examples reach the teacher)
        A_i   = dedup(A_i vs seed, D_i, test)       stage dedup      (duplicates and test contamination out)
        D_{i+1} = D_i + A_i

The last iteration trains and evaluates only: data generated after the final student would never be
used. The loop stops early when no seed example is wrong or nothing new was accepted.

The `localaug` recipe adds three things the paper does not have (measured in docs/RESULTS.md):
  - a stage `verify` between augment and dedup: the teacher, asked few-shot, must give the label the
    new example was written for;
  - `holdout`: part of the seed set never enters the loop; each student is scored on it (stage
    eval_holdout), and
  - a final stage that keeps the augmented data only if a student trained with it beat plain
    fine-tuning on the held-out seeds, then trains the final student on all seeds (+ the kept data).
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .augment import WrongExample, augment, verify_with_teacher
from .config import RunConfig
from .data import sample_seed
from .dedup import DedupConfig, DedupIndex
from .errors import UserError
from .protocols import ProgressFn, Student, Teacher
from .store import RunStore, iter_dir
from .tasks import Example, Task

FAILPOINT_ENV = "LOCALAUG_FAILPOINT"


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL at a named point when $LOCALAUG_FAILPOINT says so.

    The kill-and-resume tests use it to die at an exact spot (mid-training, mid-generation, mid-dedup)
    instead of racing a timer."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class Observer(Protocol):
    def stage_start(self, iteration: int, stage: str, total: int) -> None: ...
    def progress(self, done: int, total: int, info: dict[str, Any]) -> None: ...
    def stage_end(self, iteration: int, stage: str, summary: dict[str, Any]) -> None: ...
    def iteration_end(self, iteration: int, row: dict[str, Any]) -> None: ...


class NullObserver:
    def stage_start(self, iteration: int, stage: str, total: int) -> None:
        pass

    def progress(self, done: int, total: int, info: dict[str, Any]) -> None:
        pass

    def stage_end(self, iteration: int, stage: str, summary: dict[str, Any]) -> None:
        pass

    def iteration_end(self, iteration: int, row: dict[str, Any]) -> None:
        pass


@dataclass
class LoopResult:
    iterations: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str | None = None
    final: dict[str, Any] | None = None  # the kept model, when the run holds seeds out


FINAL_DIR = "final"


def select_iteration(holdout_correct: list[int]) -> int:
    """The iteration whose student was best on the held-out seeds; plain fine-tuning (0) unless beaten.

    Ties go to the earlier iteration: with a few dozen held-out examples, a tie is no evidence that the
    teacher's data helped, and plain fine-tuning is the safer model."""
    best = 0
    for i, c in enumerate(holdout_correct):
        if c > holdout_correct[best]:
            best = i
    return best


class Loop:
    def __init__(
        self,
        task: Task,
        config: RunConfig,
        store: RunStore,
        student: Student,
        make_teacher: Callable[[], Teacher],
        observer: Observer | None = None,
    ) -> None:
        self.task = task
        self.config = config
        self.store = store
        self.student = student
        self._make_teacher = make_teacher
        self._teacher: Teacher | None = None
        self.obs: Observer = observer or NullObserver()
        self.mode = task.eval_mode(config.eval_mode)
        self._index: DedupIndex | None = None

    # ------------------------------------------------------------------ helpers

    @property
    def teacher(self) -> Teacher:
        if self._teacher is None:  # built lazily: a resumed run past augmentation never loads it
            self._teacher = self._make_teacher()
        return self._teacher

    def _examples(self, rel: str) -> list[Example]:
        return [Example.from_json(r) for r in self.store.read_jsonl(rel)]

    def _progress(self) -> ProgressFn:
        return self.obs.progress

    def _stage(self, i: int, stage: str, total: int, work: Callable[[], dict[str, Any]],
               folder: str | None = None) -> dict[str, Any]:
        name = f"{folder or iter_dir(i)}/{stage}"
        if self.store.stage_done(name):
            return self.store.stage_info(name)
        self.obs.stage_start(i, stage, total)
        t0 = time.perf_counter()
        info = work()
        info["seconds"] = round(time.perf_counter() - t0, 3)
        self.store.mark_done(name, **info)
        self.obs.stage_end(i, stage, info)
        return self.store.stage_info(name)

    # ------------------------------------------------------------------ stages

    def prepare(self) -> None:
        """Draw the seed set from the train split, fix the test set, write D_0."""
        if self.store.stage_done("prepare"):
            return
        pool = self.task.load_split("train")
        stratify = self.task.label_of if self.task.kind.name == "classification" else None
        seed = sample_seed(pool, size=self.config.seed_size, fraction=self.config.seed_fraction,
                           seed=self.config.seed, stratify_by=stratify)
        test = self.task.load_split("test")
        if self.config.test_size is not None:
            test = test[: self.config.test_size]
        for ex in seed:
            ex.meta.setdefault("origin", "seed")
        held = self._draw_holdout(seed, stratify)
        held_ids = {e.id for e in held}
        self.store.write_jsonl("seed.jsonl", [e.to_json() for e in seed])
        self.store.write_jsonl("holdout.jsonl", [e.to_json() for e in held])
        self.store.write_jsonl("test.jsonl", [e.to_json() for e in test])
        self.store.write_jsonl(f"{iter_dir(0)}/train.jsonl", [e.to_json() for e in seed if e.id not in held_ids])
        self.store.mark_done("prepare", seed_size=len(seed), holdout_size=len(held), test_size=len(test),
                             pool_size=len(pool))

    def _draw_holdout(self, seed: list[Example], stratify: Callable[[Example], str | None] | None
                      ) -> list[Example]:
        frac = float(self.config.holdout or 0.0)
        if frac <= 0:
            return []
        n = round(frac * len(seed))
        if n < 2 or len(seed) - n < 2:
            raise UserError(f"holdout {frac} of a {len(seed)}-example seed set leaves too little on one side; "
                            "use a larger seed set or holdout: 0", field="holdout")
        return sample_seed(seed, size=n, seed=self.config.seed + 7919, stratify_by=stratify)

    def _train(self, i: int, data: list[Example]) -> dict[str, Any]:
        failpoint(f"train:{i}")
        train_seed = self.config.seed if self.config.train_seed is None else self.config.train_seed
        stats = self.student.train([self.task.train_item(e) for e in data],
                                   self.store.path(f"{iter_dir(i)}/adapter"), seed=train_seed,
                                   progress=self._progress())
        return {"train_size": len(data), "steps": stats.steps, "train_tokens": stats.train_tokens,
                "final_loss": stats.final_loss, "peak_rss_mb": stats.peak_rss_mb}

    def _evaluate(self, i: int, examples: list[Example], rel: str) -> dict[str, Any]:
        return self._evaluate_at(iter_dir(i), examples, rel)

    def _evaluate_at(self, folder: str, examples: list[Example], rel: str) -> dict[str, Any]:
        items = [self.task.eval_item(e, self.mode) for e in examples]
        results = self.student.evaluate(self.store.path(f"{folder}/adapter"), items, progress=self._progress())
        rows, correct = [], 0
        for ex, res in zip(examples, results, strict=True):
            pred, ok = self.task.judge(ex, res)
            correct += ok
            row = {"id": ex.id, "prediction": pred, "gold": self.task.kind.gold(ex.data), "correct": ok,
                   "output": res.output}
            row.update(self.task.margin(ex, res))
            rows.append(row)
        self.store.write_jsonl(rel, rows)
        return {"accuracy": correct / len(examples) if examples else 0.0, "correct": correct,
                "total": len(examples), "wrong": len(examples) - correct, "eval_mode": self.mode}

    def _targets(self, evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The seed examples the teacher is asked about: the wrong ones (the paper), topped up with the
        right ones the student was least sure of until `low_margin` of the seed set is reached.

        Why: a student that fits its seed set gets (almost) nothing wrong, and the paper's loop then has
        nothing to do; the examples it barely gets right are where it is closest to being wrong."""
        wrong = [r for r in evals if not r["correct"]]
        want = math.ceil(float(self.config.low_margin or 0.0) * len(evals))
        if len(wrong) >= want:
            return wrong
        close = sorted((r for r in evals if r["correct"] and r.get("margin") is not None),
                       key=lambda r: (r["margin"], r["id"]))
        return wrong + [dict(r, prediction=r.get("runner_up")) for r in close[: want - len(wrong)]]

    def _augment(self, i: int, seed: list[Example]) -> dict[str, Any]:
        by_id = {e.id: e for e in seed}
        evals = self.store.read_jsonl(f"{iter_dir(i)}/eval_seed.jsonl")
        wrong = [WrongExample(by_id[r["id"]], r["prediction"]) for r in self._targets(evals)]
        if self.config.target == "random":
            # Untargeted control: as many seed examples as were wrong, drawn at random (right or wrong).
            rng = random.Random(f"{self.config.seed}/{i}/random-target")
            picks = sorted(rng.sample(range(len(evals)), len(wrong)))
            wrong = [WrongExample(by_id[evals[k]["id"]], evals[k]["prediction"]) for k in picks]
        total = len(wrong) * int(self.config.per_wrong or 1)

        def progress(done: int, tot: int, info: dict[str, Any]) -> None:
            self.obs.progress(done, tot, info)
            if done * 2 >= tot > 1:
                failpoint(f"augment:{i}")

        res = augment(self.task, self.teacher, wrong, iteration=i, per_wrong=int(self.config.per_wrong or 1),
                      run_seed=self.config.seed, max_retries=self.config.max_retries,
                      shots=int(self.config.shots or 0), pool=seed, progress=progress)
        d = iter_dir(i)
        self.store.write_jsonl(f"{d}/candidates.jsonl", [e.to_json() for e in res.accepted])
        self.store.write_jsonl(f"{d}/rejected_parse.jsonl", res.rejected)
        return {"wrong": len(wrong), "requested": total, "completions": res.completions,
                "parsed": len(res.accepted), "parse_rejected": len(res.rejected),
                "parse_failure_rate": round(res.parse_failure_rate, 4), "cached": res.cached,
                "completion_tokens": res.completion_tokens, "teacher": self.teacher.identity}

    def _verify(self, i: int, seed: list[Example]) -> dict[str, Any]:
        d = iter_dir(i)
        candidates = self._examples(f"{d}/candidates.jsonl")
        if (self.config.verify or "none") == "none":
            self.store.write_jsonl(f"{d}/verified.jsonl", [e.to_json() for e in candidates])
            self.store.write_jsonl(f"{d}/rejected_verify.jsonl", [])
            return {"candidates": len(candidates), "verified": len(candidates), "verifier": "none"}
        def progress(done: int, tot: int, info: dict[str, Any]) -> None:
            self.obs.progress(done, tot, info)
            if done * 2 >= tot > 1:
                failpoint(f"verify:{i}")

        res = verify_with_teacher(self.task, self.teacher, candidates, seed, run_seed=self.config.seed,
                                  iteration=i, progress=progress)
        self.store.write_jsonl(f"{d}/verified.jsonl", [e.to_json() for e in res.accepted])
        self.store.write_jsonl(f"{d}/rejected_verify.jsonl", res.rejected)
        return {"candidates": len(candidates), "verified": len(res.accepted),
                "verifier": "skipped (no discrete answer)" if res.skipped else "teacher"}

    def _dedup_index(self, i: int, test: list[Example], data: list[Example]) -> DedupIndex:
        """The index of seed ∪ D_i ∪ test: kept in memory across iterations, persisted per iteration."""
        if self._index is not None:
            return self._index
        prev = self.store.path(f"{iter_dir(i - 1)}/dedup_index.npz")
        if i > 0 and prev.exists():
            self._index = DedupIndex.load(prev)
        else:
            index = DedupIndex(DedupConfig.from_dict(self.config.dedup))
            # Held-out seeds count as test data: a near-copy of one would make the model choice unfair.
            held = self._examples("holdout.jsonl")
            index.add_many(((e.id, self.task.dedup_text(e)) for e in [*test, *held]), role="test")
            index.add_many((e.id, self.task.dedup_text(e)) for e in data)
            self._index = index
        return self._index

    def _dedup(self, i: int, test: list[Example], data: list[Example]) -> dict[str, Any]:
        d = iter_dir(i)
        candidates = self._examples(f"{d}/verified.jsonl")
        index = self._dedup_index(i, test, data)
        accepted = []
        rejected = [*self.store.read_jsonl(f"{d}/rejected_parse.jsonl"),
                    *self.store.read_jsonl(f"{d}/rejected_verify.jsonl")]
        counts = {"duplicate": 0, "contaminated": 0}
        for k, cand in enumerate(candidates):
            if k * 2 >= len(candidates) > 1:
                failpoint(f"dedup:{i}")
            verdict = index.check_and_add(cand.id, self.task.dedup_text(cand))
            if verdict.outcome == "accepted":
                accepted.append(cand)
            else:
                counts[verdict.outcome] += 1
                rejected.append({"seed_id": cand.meta.get("seed_id"), "iteration": i, "id": cand.id,
                                 "reason": f"{verdict.outcome}: of {verdict.match_id}",
                                 "similarity": round(verdict.similarity, 4), "example": cand.to_json()})
            self.obs.progress(k + 1, len(candidates), {"accepted": len(accepted), "rejected": len(rejected)})
        self.store.write_jsonl(f"{d}/augment.jsonl", [e.to_json() for e in accepted])
        self.store.write_jsonl(f"{d}/rejected.jsonl", rejected)
        self.store.write_jsonl(f"{iter_dir(i + 1)}/train.jsonl", [e.to_json() for e in data + accepted])
        index.save(self.store.path(f"{d}/dedup_index.npz"))
        return {"candidates": len(candidates), "accepted": len(accepted), **counts,
                "next_train_size": len(data) + len(accepted)}

    # ------------------------------------------------------------------ the loop

    def _iteration(self, i: int, n_iter: int, seed: list[Example], held: list[Example], test: list[Example]
                   ) -> tuple[dict[str, Any], str | None]:
        d = iter_dir(i)
        data = self._examples(f"{d}/train.jsonl")
        train = self._stage(i, "train", len(data), lambda: self._train(i, data))
        ev_seed = self._stage(i, "eval_seed", len(seed), lambda: self._evaluate(i, seed, f"{d}/eval_seed.jsonl"))
        ev_test = self._stage(i, "eval_test", len(test), lambda: self._evaluate(i, test, f"{d}/eval_test.jsonl"))
        row: dict[str, Any] = {
            "iteration": i, "train_size": len(data), "seed_accuracy": ev_seed["accuracy"],
            "wrong": ev_seed["wrong"], "test_accuracy": ev_test["accuracy"], "new_examples": 0,
            "seconds": round(train["seconds"] + ev_seed["seconds"] + ev_test["seconds"], 1),
        }
        if held:
            ev_held = self._stage(i, "eval_holdout", len(held),
                                  lambda: self._evaluate(i, held, f"{d}/eval_holdout.jsonl"))
            row.update(holdout_accuracy=ev_held["accuracy"], holdout_correct=ev_held["correct"])
            row["seconds"] = round(row["seconds"] + ev_held["seconds"], 1)
        if i == n_iter - 1:
            return row, None
        n_targets = len(self._targets(self.store.read_jsonl(f"{d}/eval_seed.jsonl")))
        if n_targets == 0:
            return row, f"iteration {i}: the student gets every seed example right"
        per_wrong = int(self.config.per_wrong or 1)
        aug = self._stage(i, "augment", n_targets * per_wrong, lambda: self._augment(i, seed))
        ver = self._stage(i, "verify", aug["parsed"], lambda: self._verify(i, seed))
        dd = self._stage(i, "dedup", ver["verified"], lambda: self._dedup(i, test, data))
        row.update(new_examples=dd["accepted"], parsed=aug["parsed"], parse_rejected=aug["parse_rejected"],
                   verified=ver["verified"], duplicate=dd["duplicate"], contaminated=dd["contaminated"])
        row["seconds"] = round(row["seconds"] + aug["seconds"] + ver["seconds"] + dd["seconds"], 1)
        if dd["accepted"] == 0:
            return row, f"iteration {i}: the teacher produced nothing new that passed the filters"
        return row, None

    def _final(self, rows: list[dict[str, Any]], all_seed: list[Example], test: list[Example]) -> dict[str, Any]:
        """Keep the augmented data of the iteration that won on the held-out seeds (or none), and train
        the final student on every seed example plus that data."""
        kept = select_iteration([int(r["holdout_correct"]) for r in rows])
        added = [e for e in self._examples(f"{iter_dir(kept)}/train.jsonl") if e.meta.get("origin") != "seed"]
        data = all_seed + added
        f = FINAL_DIR

        def train() -> dict[str, Any]:
            failpoint("train:final")
            train_seed = self.config.seed if self.config.train_seed is None else self.config.train_seed
            self.store.write_jsonl(f"{f}/train.jsonl", [e.to_json() for e in data])
            stats = self.student.train([self.task.train_item(e) for e in data], self.store.path(f"{f}/adapter"),
                                       seed=train_seed, progress=self._progress())
            return {"kept_iteration": kept, "train_size": len(data), "added": len(added), "steps": stats.steps,
                    "final_loss": stats.final_loss}

        tr = self._stage(-1, "train", len(data), train, folder=f)
        ev = self._stage(-1, "eval_test", len(test), lambda: self._evaluate_at(f, test, f"{f}/eval_test.jsonl"),
                         folder=f)
        return {"kept_iteration": kept, "train_size": tr["train_size"], "added": tr["added"],
                "test_accuracy": ev["accuracy"],
                "holdout_accuracy": [r["holdout_accuracy"] for r in rows]}

    def run(self) -> LoopResult:
        self.prepare()
        all_seed = self._examples("seed.jsonl")
        held = self._examples("holdout.jsonl")
        held_ids = {e.id for e in held}
        seed = [e for e in all_seed if e.id not in held_ids]  # the loop never sees the held-out seeds
        test = self._examples("test.jsonl")
        n_iter = int(self.config.iterations or 1)
        result = LoopResult()
        for i in range(n_iter):
            row, stop = self._iteration(i, n_iter, seed, held, test)
            self.store.set_iteration(i, **row)
            self.obs.iteration_end(i, row)
            result.iterations.append(row)
            if stop:
                result.stopped_early = stop
                break
        if held:
            result.final = self._final(result.iterations, all_seed, test)
            self.store.manifest["final"] = result.final
        self.store.manifest["finished"] = True
        self.store.manifest["stopped_early"] = result.stopped_early
        self.store.save_manifest()
        return result


def check_task_has_test(task: Task) -> None:
    if "test" not in task.splits():
        raise UserError(f"task '{task.name}' has no 'test' split", file=task.path, field="data.splits")
