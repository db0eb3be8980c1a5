"""What the `localaug` recipe adds to the paper's loop (measured in docs/RESULTS.md). Each hook is a
no-op under `--recipe paper`, so `loop.py` alone reads as the paper's algorithm.

- **Held-out seeds** (`holdout`): part of the seed set never enters the loop; each student is scored on
  it, and `finish` keeps the teacher's data of the iteration that beat plain fine-tuning there (or none),
  then trains the final student on every seed example plus that data.
- **Teacher verification** (`verify: teacher`): a candidate is kept only if the teacher gives its label.
- **Targets beyond the wrong ones**: `low_margin` tops the wrong seed examples up with the right ones
  the student was least sure of; `target: random` is the untargeted control.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, Protocol

from .augment import Target
from .data import sample_seed
from .errors import UserError
from .failpoints import halfway
from .store import iter_dir
from .task import Example, Judged
from .verify import teacher_accuracy, verify_with_teacher

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import Settings
    from .observer import Observer
    from .protocols import Teacher
    from .store import RunStore
    from .task import Task


class Stages(Protocol):
    """What the recipe uses of the loop (loop.Loop): its run, and its resumable stages."""

    task: Task
    settings: Settings
    store: RunStore
    obs: Observer

    @property
    def teacher(self) -> Teacher: ...

    def stage(self, i: int, name: str, total: int, work: Callable[[], dict[str, Any]],
              folder: str | None = None) -> dict[str, Any]: ...

    def train(self, i: int, data: list[Example], folder: str | None = None) -> None: ...

    def evaluate(self, i: int, split: str, examples: list[Example], folder: str | None = None) -> Judged: ...

FINAL, PREFLIGHT = -1, -2  # the iteration numbers the final model's and the preflight's stages report

FINAL_DIR = "final"
PREFLIGHT_DIR = "preflight"


def select_iteration(holdout_correct: list[int]) -> int:
    """The iteration whose student was best on the held-out seeds; plain fine-tuning (0) unless beaten.

    Ties go to the earlier iteration: with a few dozen held-out examples, a tie is no evidence that the
    teacher's data helped, and plain fine-tuning is the safer model."""
    best = 0
    for i, c in enumerate(holdout_correct):
        if c > holdout_correct[best]:
            best = i
    return best


def seeded_share(items: list[Any], k: int, salt: str) -> list[Any]:
    """k of the items, drawn by a generator seeded with `salt`, in their original order."""
    rng = random.Random(salt)
    return [items[j] for j in sorted(rng.sample(range(len(items)), k))]


def holdout_size(seed_size: int, fraction: float) -> int:
    """How many seed examples `fraction` holds out; an error when either side would be under 2."""
    if fraction <= 0:
        return 0
    n = round(fraction * seed_size)
    if n < 2 or seed_size - n < 2:
        raise UserError(f"holdout {fraction} of a {seed_size}-example seed set leaves too little on one side "
                        f"({n} held out, {seed_size - n} for the loop; each needs 2); use a larger seed set or "
                        "holdout: 0", field="holdout")
    return n


def source_of(example: Example) -> str:
    """The seed example an example was made from (itself, for a seed example)."""
    return str(example.meta.get("seed_id") or example.id)


class Recipe:
    def __init__(self, loop: Stages) -> None:
        self.loop = loop
        self.settings = loop.settings

    # ------------------------------------------------------------------ held-out seeds

    def draw_holdout(self, seed: list[Example]) -> list[Example]:
        n = holdout_size(len(seed), self.settings.holdout)
        if not n:
            return []
        return sample_seed(seed, size=n, seed=self.settings.seed + 7919, stratify_by=self.loop.task.stratify())

    def held_out(self) -> list[Example]:
        return self.loop.store.read_examples("holdout.jsonl")

    def score_iteration(self, i: int) -> dict[str, Any]:
        """The student of iteration i on the held-out seeds (nothing when none are held out)."""
        held = self.held_out()
        if not held:
            return {}
        judged = self.loop.evaluate(i, "holdout", held)
        return {"holdout_accuracy": judged.accuracy, "holdout_correct": judged.correct}

    def finish(self, rows: list[dict[str, Any]], test: list[Example]) -> dict[str, Any] | None:
        """Keep the teacher data of the iteration that won on the held-out seeds (or none), and train the
        final student on every seed example plus that data."""
        if not self.held_out():
            return None
        loop, store = self.loop, self.loop.store
        kept = select_iteration([int(r["holdout_correct"]) for r in rows])
        added = [e for k in range(kept) for e in store.read_examples(f"{iter_dir(k)}/augment.jsonl")]
        data = store.read_examples("seed.jsonl") + added
        loop.train(FINAL, data, folder=FINAL_DIR)
        on_test = loop.evaluate(FINAL, "test", test, folder=FINAL_DIR)
        return {"kept_iteration": kept, "train_size": len(data), "added": len(added),
                "test_accuracy": on_test.accuracy, "holdout_accuracy": [r["holdout_accuracy"] for r in rows]}

    # ------------------------------------------------------------------ teacher preflight

    def preflight(self, seed: list[Example]) -> None:
        """Before any training: how often the teacher, as the verifier asks it, gets the loop's seed
        examples right (each labelled with shots from other seed examples only). A teacher that is no
        better than the student cannot tell good new examples from bad ones: users should know at once."""
        n = self.settings.preflight
        if n <= 0 or not seed:
            return
        loop = self.loop
        if not loop.task.kind.scored:  # maths: the teacher writes a whole solution per example
            n = min(n, 16)
        picked = seed if len(seed) <= n else sample_seed(seed, size=n, seed=self.settings.seed + 31,
                                                         stratify_by=loop.task.stratify())

        def work() -> dict[str, Any]:
            acc, rows = teacher_accuracy(loop.task, loop.teacher, picked, seed=self.settings.seed,
                                         progress=loop.obs.progress)
            loop.store.write_jsonl(f"{PREFLIGHT_DIR}/teacher.jsonl", rows)
            return {"teacher_accuracy": acc, "correct": sum(r["correct"] for r in rows), "total": len(rows),
                    "teacher": loop.teacher.identity}

        info = loop.stage(PREFLIGHT, "teacher", len(picked), work, folder=PREFLIGHT_DIR)
        loop.store.manifest["preflight"] = {k: info[k] for k in ("teacher_accuracy", "correct", "total", "teacher")}
        loop.store.save_manifest()

    def compare_teacher_and_student(self, row: dict[str, Any]) -> None:
        """Put the preflight beside the first student and warn when the teacher is no better."""
        pre = self.loop.store.manifest.get("preflight")
        if not pre:
            return
        teacher = pre["teacher_accuracy"]
        # The fair comparison is with what the student does on examples it never trained on.
        if row.get("holdout_accuracy") is not None:
            student, measured_on = row["holdout_accuracy"], "held-out seed examples it never trained on"
        elif row.get("oof_accuracy") is not None:
            student, measured_on = row["oof_accuracy"], "seed examples it never trained on (out of fold)"
        else:  # one iteration, nothing held out: its own training examples are all there is
            student, measured_on = row["seed_accuracy"], "its own training examples"
        pre.update(student_seed_accuracy=row["seed_accuracy"], student_holdout_accuracy=row.get("holdout_accuracy"),
                   student_oof_accuracy=row.get("oof_accuracy"), warning=None)
        if teacher <= student:
            pre["warning"] = (
                f"the teacher labels {teacher:.0%} of seed examples right, the plain fine-tuned student {student:.0%} "
                f"of {measured_on}: the teacher is no better a judge of labels than the student, so its "
                "verification can let wrong examples through. Read what it added (iter_XX/augment.jsonl) and "
                "compare the result with plain fine-tuning (iteration 0) before trusting it; a stronger teacher "
                "(a larger --teacher card, or --teacher-url) is the lasting fix.")
            self.loop.obs.note("warning: " + pre["warning"])
        self.loop.store.save_manifest()

    # ------------------------------------------------------------------ out-of-fold error finding

    def fold_of(self, seed: list[Example]) -> dict[str, int]:
        """Each loop seed example's fold: stratified by label, fixed by the run seed (the same every iteration)."""
        strat = self.loop.task.stratify()
        groups: dict[str, list[Example]] = {}
        for e in seed:
            groups.setdefault(str(strat(e)) if strat else "", []).append(e)
        rng = random.Random(f"{self.settings.seed}/folds")
        folds, n = {}, 0
        for label in sorted(groups):  # dealt round-robin, so every fold gets its share of every label
            members = sorted(groups[label], key=lambda e: e.id)
            rng.shuffle(members)
            for e in members:
                folds[e.id], n = n % self.settings.folds, n + 1
        return folds

    def find_errors(self, i: int, data: list[Example], seed: list[Example], on_seed: Judged) -> Judged:
        """The seed examples the student gets wrong. The paper asks M_i, which was trained on them and
        gets (almost) all of them right once training converges; `find_errors: oof` asks, for each seed
        example, a student trained on D_i without the example's fold (nor the teacher examples made from
        it), so 'wrong' means what the student cannot yet generalise to (eval_oof.jsonl)."""
        if self.settings.find_errors != "oof":
            return on_seed
        loop, d = self.loop, iter_dir(i)
        folds = self.fold_of(seed)
        rows: dict[str, dict[str, Any]] = {}
        for f in range(self.settings.folds):
            held = [e for e in seed if folds[e.id] == f]
            train = [e for e in data if folds.get(source_of(e), -1) != f]
            loop.train(i, train, folder=f"{d}/fold{f}")
            for r in loop.evaluate(i, "fold", held, folder=f"{d}/fold{f}").rows:
                rows[r["id"]] = dict(r, fold=f)
        ordered = [rows[e.id] for e in seed]
        loop.store.write_jsonl(f"{d}/eval_oof.jsonl", ordered)
        return Judged(ordered, sum(r["correct"] for r in ordered))

    # ------------------------------------------------------------------ targets

    def targets(self, i: int, on_seed: Judged, seed: list[Example]) -> list[Target]:
        """The seed examples the teacher is asked about: the wrong ones (the paper), topped up with the
        right ones the student was least sure of until `low_margin` of the seed set is reached; or, for
        the untargeted control, as many seed examples drawn at random.

        Why low margin: a student that fits its seed set gets (almost) nothing wrong, and the paper's loop
        then has nothing to do; the examples it barely gets right are where it is closest to being wrong."""
        by_id = {e.id: e for e in seed}
        rows = on_seed.rows
        wrong = [r for r in rows if not r["correct"]]
        want = math.ceil(self.settings.low_margin * len(rows))
        if len(wrong) < want:
            close = sorted((r for r in rows if r["correct"] and r.get("margin") is not None),
                           key=lambda r: (r["margin"], r["id"]))
            wrong += [dict(r, prediction=r.get("runner_up")) for r in close[: want - len(wrong)]]
        if self.settings.target == "random":
            wrong = seeded_share(rows, len(wrong), f"{self.settings.seed}/{i}/random-target")
        cap = self.settings.max_targets
        if cap is not None and len(wrong) > cap:  # a teacher budget: a seeded random share of the targets
            wrong = seeded_share(wrong, cap, f"{self.settings.seed}/{i}/max-targets")
        return [Target(by_id[r["id"]], r["prediction"]) for r in wrong]

    # ------------------------------------------------------------------ verification

    def verify(self, i: int, candidates: list[Example], seed: list[Example]) -> list[Example]:
        """Candidates the teacher labels as intended (verified.jsonl; refusals rejected_verify.jsonl)."""
        loop, store = self.loop, self.loop.store
        d = iter_dir(i)

        def work() -> dict[str, Any]:
            if self.settings.verify == "none":
                store.write_examples(f"{d}/verified.jsonl", candidates)
                store.write_jsonl(f"{d}/rejected_verify.jsonl", [])
                return {"candidates": len(candidates), "verified": len(candidates), "verifier": "none"}
            res = verify_with_teacher(
                loop.task, loop.teacher, candidates, seed, run_seed=self.settings.seed, iteration=i,
                refuse=self.settings.refuse_non_examples,
                progress=lambda done, n, info: (loop.obs.progress(done, n, info),
                                                halfway(f"verify:{i}", done, n)))
            store.write_examples(f"{d}/verified.jsonl", res.accepted)
            store.write_jsonl(f"{d}/rejected_verify.jsonl", res.rejected)
            return {"candidates": len(candidates), "verified": len(res.accepted),
                    "verifier": ("teacher (solves it again)" if not loop.task.kind.scored else
                                 "teacher (label or not an example)" if self.settings.refuse_non_examples
                                 else "teacher (label)")}

        loop.stage(i, "verify", len(candidates), work)
        kept = store.read_examples(f"{d}/verified.jsonl")
        return self.students_agree(i, kept, seed) if self.settings.filter == "students" else kept

    def students_agree(self, i: int, candidates: list[Example], seed: list[Example]) -> list[Example]:
        """Consistency filtering (LAMBADA, Anaby-Tavor et al. 2020): keep a candidate only if the
        out-of-fold student that never saw its source seed example gives it the intended label, so no
        student judges data made from its own training examples (consistent.jsonl)."""
        loop, store, d = self.loop, self.loop.store, iter_dir(i)
        if not loop.task.kind.scored:  # maths: the teacher solving it again is the check
            return candidates
        folds = self.fold_of(seed)
        verdict: dict[str, dict[str, Any]] = {}
        for f in range(self.settings.folds):
            mine = [c for c in candidates if folds.get(source_of(c)) == f]
            if mine:
                for r in loop.evaluate(i, "candidates", mine, folder=f"{d}/fold{f}").rows:
                    verdict[r["id"]] = r
        kept = [c for c in candidates if verdict[c.id]["correct"]]
        store.write_examples(f"{d}/consistent.jsonl", kept)
        store.write_jsonl(f"{d}/rejected_consistency.jsonl", [
            {"seed_id": c.meta.get("seed_id"), "iteration": i, "id": c.id, "example": c.to_json(),
             "reason": "students: the out-of-fold student answered "
                       f"{loop.task.readable(verdict[c.id]['prediction'])!r}"}
            for c in candidates if not verdict[c.id]["correct"]])
        return kept
