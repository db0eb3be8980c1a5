"""The LLM2LLM loop (Lee et al., 2024): the paper's steps in order, each a resumable stage (stages.py).

    D_0 = seed
    for i in 0..N-1:
        M_i   = finetune(BASE, D_i)                 from the base weights each time
        wrong = seed examples M_i gets wrong        on the seed set only, never on augmented data
        acc_i = accuracy(M_i, test)
        A_i   = teacher(wrong)                      only seed examples reach the teacher
        A_i   = dedup(A_i vs seed, D_i, test)       duplicates and test contamination out
        D_{i+1} = D_i + A_i

The last iteration trains and evaluates only: data made after the final student would never be used. The
loop stops early when no seed example is wrong or nothing new was accepted. A recipe changes a step only
through the hooks declared in hooks.py (`# hook:` below); `--recipe paper` leaves every step as published.
Knows nothing of torch or llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .augment import Target
from .config import Settings
from .hooks import Hooks
from .layout import round_folder
from .observer import Observer
from .protocols import Student, Teacher
from .recipe import Recipe
from .records import FinalModel, IterationRow
from .stages import Stages
from .store import RunStore
from .task import Example, Task


@dataclass
class LoopResult:
    iterations: list[IterationRow] = field(default_factory=list)
    stopped_early: str | None = None
    final: FinalModel | None = None  # the kept model, when the recipe chose one


class Loop:
    def __init__(self, task: Task, settings: Settings, store: RunStore, student: Student,
                 make_teacher: Callable[[], Teacher], observer: Observer | None = None,
                 hooks: Hooks | None = None) -> None:
        self.settings, self.store = settings, store
        self.stages = Stages(task, settings, store, student, make_teacher, observer)
        self.hooks = hooks if hooks is not None else Recipe(self.stages)  # the recipe the settings describe

    @property
    def teacher_identity(self) -> str | None:
        return self.stages.teacher_identity

    def prepare(self) -> tuple[list[Example], list[Example]]:
        """(the seed examples in the loop, the test examples), drawn once and then read back."""
        return self.stages.prepare(self.hooks.hold_out_seeds)

    def run(self) -> LoopResult:
        try:
            return self._run()
        finally:
            self.stages.release_teacher()

    def _run(self) -> LoopResult:
        seed, test = self.prepare()
        self.hooks.before_loop(seed)                                    # hook: the teacher preflight
        data, result, n = list(seed), LoopResult(), self.settings.iterations  # D_0 = seed
        for i in range(n):
            row, data, stop = self.iteration(i, data, seed, test, last=i == n - 1)
            row = self.store.record_iteration(row)
            self.hooks.review_iteration(row)                            # hook: the preflight beside M_0
            self.stages.obs.iteration_end(i, row)
            result.iterations.append(row)
            if stop:
                result.stopped_early = stop
                break
        result.final = self.hooks.choose_final_model(result.iterations, test)  # hook: by held-out seeds
        self.store.finish(result.final, result.stopped_early)
        return result

    def iteration(self, i: int, data: list[Example], seed: list[Example], test: list[Example], last: bool
                  ) -> tuple[IterationRow, list[Example], str | None]:
        """One round: train M_i on D_i, find what it gets wrong, return (its row, D_{i+1}, why it stopped)."""
        stages, hooks, here = self.stages, self.hooks, round_folder(i)
        stages.train(here, data)                                        # M_i = finetune(BASE, D_i)
        on_seed = stages.evaluate(here, "seed", seed)                   # the seed set only
        on_test = stages.evaluate(here, "test", test)
        held = hooks.score_student(i)                                   # hook: held-out seeds
        row = IterationRow(iteration=i, train_size=len(data), seed_accuracy=on_seed.accuracy, wrong=on_seed.wrong,
                           test_accuracy=on_test.accuracy, holdout_accuracy=held.accuracy if held else None,
                           holdout_correct=held.correct if held else None)
        if last:
            return row, data, None
        found = hooks.find_errors(i, data, seed, on_seed)               # hook: out-of-fold students
        errors = found or on_seed
        row.wrong, row.oof_accuracy = errors.wrong, found.accuracy if found else None
        by_id = {e.id: e for e in seed}
        wrong = [Target(by_id[r["id"]], r["prediction"]) for r in errors.rows if not r["correct"]]  # wrong
        targets = wrong + hooks.add_targets(i, errors, wrong, seed)     # hook: low-margin targets
        targets = hooks.redraw_targets(i, errors, targets, seed)        # hook: random control, teacher budget
        if not targets:
            return row, data, f"iteration {i}: the student gets every seed example right"
        candidates = stages.generate(i, targets, seed)                  # A_i = teacher(wrong)
        kept = hooks.filter_candidates(i, candidates, seed)             # hook: teacher verification
        accepted, dd = stages.dedup(i, kept, data, test)                # A_i = dedup(A_i vs seed, D_i, test)
        row.new_examples, row.parsed, row.verified = len(accepted), len(candidates), len(kept)
        row.duplicate, row.contaminated = dd.duplicate, dd.contaminated
        if not accepted:
            return row, data, f"iteration {i}: the teacher produced nothing new that passed the filters"
        return row, data + accepted, None                               # D_{i+1} = D_i + A_i
