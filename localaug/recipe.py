"""What the `localaug` recipe adds to the paper's loop (measured in docs/RESULTS.md), as the hooks that
hooks.py declares. Each follows the run's settings and is the paper's step under `--recipe paper`, so
`loop.py` alone reads as the paper's algorithm.

- **Teacher preflight** (`preflight`, `before_loop`): the teacher labels seed examples before any training.
- **Out-of-fold error finding** (`find_errors: oof`): 'wrong' is judged by students that never saw the example.
- **Targets beyond the wrong ones** (`add_targets`, `redraw_targets`): `low_margin` tops the wrong seed examples
  up with the right ones the student was least sure of; `target: random` is the untargeted control and
  `max_targets` a teacher budget.
- **Teacher verification** (`verify: teacher`, `filter: students`; `filter_candidates`): a candidate is kept
  only if the teacher gives its label (and the out-of-fold students agree).
- **Held-out seeds** (`holdout`; `hold_out_seeds`, `score_student`, `choose_final_model`): part of the seed set
  never enters the loop; each student is scored on it, and the teacher's data of the iteration that beat
  plain fine-tuning there (or none) is kept for a final student trained on every seed example plus that data.
"""

from __future__ import annotations

import math
import random
from typing import Any

from . import layout
from .augment import Target
from .data import sample_seed
from .failpoints import halfway
from .hooks import Hooks
from .layout import FINAL, PREFLIGHT, round_folder
from .records import FinalModel, HeldOutScore, IterationRow, LabelSummary, Preflight, VerifySummary
from .stages import Stages
from .task import Example, Judged
from .verify import teacher_accuracy, verify_with_teacher


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


def source_of(example: Example) -> str:
    """The seed example an example was made from (itself, for a seed example)."""
    return str(example.meta.get("seed_id") or example.id)


class Recipe(Hooks):
    """localaug's hooks, each following the run's settings (under `--recipe paper`, each is the paper's)."""

    def __init__(self, stages: Stages) -> None:
        self.stages = stages
        self.settings = stages.settings

    # ------------------------------------------------------------------ held-out seeds

    def hold_out_seeds(self, seed: list[Example]) -> list[Example]:
        n = self.settings.held_out_count(len(seed))
        if not n:
            return []
        return sample_seed(seed, size=n, seed=self.settings.seed + 7919, stratify_by=self.stages.task.stratify())

    def score_student(self, i: int) -> HeldOutScore | None:
        """The student of iteration i on the held-out seeds (nothing when none are held out)."""
        held = self.stages.held_out()
        if not held:
            return None
        judged = self.stages.evaluate(round_folder(i), "holdout", held)
        return HeldOutScore(accuracy=judged.accuracy, correct=judged.correct)

    def choose_final_model(self, rows: list[IterationRow], test: list[Example]) -> FinalModel | None:
        """Keep the teacher data of the iteration that won on the held-out seeds (or none), and train the
        final student on every seed example plus that data."""
        if not self.stages.held_out():
            return None
        stages, store = self.stages, self.stages.store
        kept = select_iteration([r.holdout_correct or 0 for r in rows])
        added = [e for k in range(kept) for e in store.read_examples(round_folder(k).added)]
        data = store.read_examples(layout.SEED) + added
        stages.train(FINAL, data)
        on_test = stages.evaluate(FINAL, "test", test)
        return FinalModel(kept_iteration=kept, train_size=len(data), added=len(added), test_accuracy=on_test.accuracy,
                          holdout_accuracy=[r.holdout_accuracy or 0.0 for r in rows])

    # ------------------------------------------------------------------ teacher preflight

    def before_loop(self, seed: list[Example]) -> None:
        """Before any training: how often the teacher, as the verifier asks it, gets the loop's seed
        examples right (each labelled with shots from other seed examples only). A teacher that is no
        better than the student cannot tell good new examples from bad ones: users should know at once."""
        n = self.settings.preflight
        if n <= 0 or not seed:
            return
        stages, task = self.stages, self.stages.task
        if not task.kind.has_choices:  # the teacher writes a whole answer per example, not one choice
            n = min(n, 16)
        picked = seed if len(seed) <= n else sample_seed(seed, size=n, seed=self.settings.seed + 31,
                                                         stratify_by=task.stratify())

        def work() -> LabelSummary:
            acc, rows = teacher_accuracy(task, stages.teacher, picked, seed=self.settings.seed,
                                         progress=stages.obs.progress)
            stages.store.write_jsonl(PREFLIGHT.teacher_labels, rows)
            return LabelSummary(teacher_accuracy=acc, correct=sum(r["correct"] for r in rows), total=len(rows),
                                teacher=stages.teacher.identity)

        done = stages.run(PREFLIGHT, layout.LABEL, len(picked), work)
        if stages.store.manifest.preflight is None:
            stages.store.record_preflight(Preflight(teacher_accuracy=done.teacher_accuracy, correct=done.correct,
                                                    total=done.total, teacher=done.teacher))

    def review_iteration(self, row: IterationRow) -> None:
        """Put the preflight beside the first student and warn when the teacher is no better."""
        pre = self.stages.store.manifest.preflight
        if row.iteration != 0 or pre is None:
            return
        teacher = pre.teacher_accuracy
        # The fair comparison is with what the student does on examples it never trained on.
        if row.holdout_accuracy is not None:
            student, measured_on = row.holdout_accuracy, "held-out seed examples it never trained on"
        elif row.oof_accuracy is not None:
            student, measured_on = row.oof_accuracy, "seed examples it never trained on (out of fold)"
        else:  # one iteration, nothing held out: its own training examples are all there is
            student, measured_on = row.seed_accuracy, "its own training examples"
        warning = None
        if teacher <= student:
            warning = (
                f"the teacher labels {teacher:.0%} of seed examples right, the plain fine-tuned student {student:.0%} "
                f"of {measured_on}: the teacher is no better a judge of labels than the student, so its "
                "verification can let wrong examples through. Read what it added (iter_XX/augment.jsonl) and "
                "compare the result with plain fine-tuning (iteration 0) before trusting it; a stronger teacher "
                "(a larger --teacher card, or --teacher-url) is the lasting fix.")
            self.stages.obs.note("warning: " + warning)
        self.stages.store.record_preflight(pre.model_copy(update={
            "student_seed_accuracy": row.seed_accuracy, "student_holdout_accuracy": row.holdout_accuracy,
            "student_oof_accuracy": row.oof_accuracy, "warning": warning}))

    # ------------------------------------------------------------------ out-of-fold error finding

    def fold_of(self, seed: list[Example]) -> dict[str, int]:
        """Each loop seed example's fold: stratified by label, fixed by the run seed (the same every iteration)."""
        strat = self.stages.task.stratify()
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

    def find_errors(self, i: int, data: list[Example], seed: list[Example], on_seed: Judged) -> Judged | None:
        """The seed examples the student gets wrong. The paper asks M_i, which was trained on them and
        gets (almost) all of them right once training converges; `find_errors: oof` asks, for each seed
        example, a student trained on D_i without the example's fold (nor the teacher examples made from
        it), so 'wrong' means what the student cannot yet generalise to (eval_oof.jsonl)."""
        if self.settings.find_errors != "oof":
            return None
        stages, here = self.stages, round_folder(i)
        folds = self.fold_of(seed)
        rows: dict[str, dict[str, Any]] = {}
        for f in range(self.settings.folds):
            held = [e for e in seed if folds[e.id] == f]
            train = [e for e in data if folds.get(source_of(e), -1) != f]
            stages.train(here.fold(f), train)
            for r in stages.evaluate(here.fold(f), "fold", held).rows:
                rows[r["id"]] = dict(r, fold=f)
        ordered = [rows[e.id] for e in seed]
        stages.store.write_jsonl(here.errors_out_of_fold, ordered)
        return Judged(ordered, sum(r["correct"] for r in ordered))

    # ------------------------------------------------------------------ targets

    def add_targets(self, i: int, errors: Judged, wrong: list[Target], seed: list[Example]) -> list[Target]:
        """The right answers the student was least sure of, until `low_margin` of the seed set is targeted.

        Why: a student that fits its seed set gets (almost) nothing wrong, and the paper's loop then has
        nothing to do; the examples it barely gets right are where it is closest to being wrong."""
        want = math.ceil(self.settings.low_margin * len(errors.rows))
        if len(wrong) >= want:
            return []
        by_id = {e.id: e for e in seed}
        close = sorted((r for r in errors.rows if r["correct"] and r.get("margin") is not None),
                       key=lambda r: (r["margin"], r["id"]))
        return [Target(by_id[r["id"]], r.get("runner_up")) for r in close[: want - len(wrong)]]

    def redraw_targets(self, i: int, errors: Judged, targets: list[Target], seed: list[Example]) -> list[Target]:
        """`target: random` (the untargeted control): as many seed examples drawn at random; `max_targets` (a
        teacher budget): at most that many, a seeded random share."""
        if self.settings.target == "random":
            by_id = {e.id: e for e in seed}
            drawn = seeded_share(errors.rows, len(targets), f"{self.settings.seed}/{i}/random-target")
            targets = [Target(by_id[r["id"]], r["prediction"]) for r in drawn]
        cap = self.settings.max_targets
        if cap is not None and len(targets) > cap:
            targets = seeded_share(targets, cap, f"{self.settings.seed}/{i}/max-targets")
        return targets

    # ------------------------------------------------------------------ verification

    def filter_candidates(self, i: int, candidates: list[Example], seed: list[Example]) -> list[Example]:
        """Candidates the teacher labels as intended (`verify: teacher`), then, with `filter: students`, those
        the out-of-fold students agree with."""
        kept = self.verify(i, candidates, seed)
        return self.students_agree(i, kept, seed) if self.settings.filter == "students" else kept

    def verify(self, i: int, candidates: list[Example], seed: list[Example]) -> list[Example]:
        """Candidates the teacher labels as intended (verified.jsonl; refusals rejected_verify.jsonl)."""
        stages, store, here = self.stages, self.stages.store, round_folder(i)

        def work() -> VerifySummary:
            if self.settings.verify == "none":
                store.write_examples(here.verified, candidates)
                store.write_jsonl(here.rejected_by("verify"), [])
                return VerifySummary(candidates=len(candidates), verified=len(candidates), verifier="none")
            res = verify_with_teacher(
                stages.task, stages.teacher, candidates, seed, run_seed=self.settings.seed, iteration=i,
                refuse=self.settings.refuse_non_examples,
                progress=lambda done, n, info: (stages.obs.progress(done, n, info),
                                                halfway(f"verify:{i}", done, n)))
            store.write_examples(here.verified, res.accepted)
            store.write_jsonl(here.rejected_by("verify"), res.rejected)
            refusing = self.settings.refuse_non_examples and stages.task.kind.name == "classification"
            return VerifySummary(candidates=len(candidates), verified=len(res.accepted),
                                 verifier=stages.task.kind.teacher_check + (" or not an example" if refusing else ""))

        stages.run(here, layout.VERIFY, len(candidates), work)
        return store.read_examples(here.verified)

    def students_agree(self, i: int, candidates: list[Example], seed: list[Example]) -> list[Example]:
        """Consistency filtering (LAMBADA, Anaby-Tavor et al. 2020): keep a candidate only if the
        out-of-fold student that never saw its source seed example gives it the intended label, so no
        student judges data made from its own training examples (consistent.jsonl)."""
        stages, store, here = self.stages, self.stages.store, round_folder(i)
        if not stages.task.kind.has_choices:  # a student would have to write each answer: the verifier checks
            return candidates
        folds = self.fold_of(seed)
        verdict: dict[str, dict[str, Any]] = {}
        for f in range(self.settings.folds):
            mine = [c for c in candidates if folds.get(source_of(c)) == f]
            if mine:
                for r in stages.evaluate(here.fold(f), "candidates", mine).rows:
                    verdict[r["id"]] = r
        kept = [c for c in candidates if verdict[c.id]["correct"]]
        store.write_examples(here.consistent, kept)
        store.write_jsonl(here.rejected_by("consistency"), [
            {"seed_id": c.meta.get("seed_id"), "iteration": i, "id": c.id, "example": c.to_json(),
             "reason": "students: the out-of-fold student answered "
                       f"{stages.task.readable(verdict[c.id]['prediction'])!r}"}
            for c in candidates if not verdict[c.id]["correct"]])
        return kept
