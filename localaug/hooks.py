"""Where a recipe may change the paper's loop: the declared hooks, each named for what it changes.

`Hooks` itself is the paper: every hook leaves its step as published. The loop (loop.py) calls nothing else
of a recipe, and reads none of its settings or files; `recipe.Recipe` is localaug's, driven by the run's
settings, and `--recipe paper` turns every one of its hooks back into these.
"""

from __future__ import annotations

from .augment import Target
from .records import FinalModel, HeldOutScore, IterationRow
from .task import Example, Judged


class Hooks:
    def hold_out_seeds(self, seed: list[Example]) -> list[Example]:
        """Seed examples kept out of the loop (never trained on, never shown to the teacher). Paper: none."""
        return []

    def before_loop(self, seed: list[Example]) -> None:
        """Work before the first student is trained (localaug: the teacher preflight). Paper: nothing."""

    def score_student(self, i: int) -> HeldOutScore | None:
        """The round's student on the held-out seeds. Paper: none are held out."""
        return None

    def find_errors(self, i: int, data: list[Example], seed: list[Example], on_seed: Judged) -> Judged | None:
        """Replaces how the wrong seed examples are found (localaug: out-of-fold students). Paper: None, the
        round's student M_i on the seed set (`on_seed`)."""
        return None

    def add_targets(self, i: int, errors: Judged, wrong: list[Target], seed: list[Example]) -> list[Target]:
        """Targets beyond the wrong seed examples (localaug: the least sure right answers). Paper: none."""
        return []

    def redraw_targets(self, i: int, errors: Judged, targets: list[Target], seed: list[Example]) -> list[Target]:
        """Replaces the targets by a seeded draw (the untargeted control; a teacher budget). Paper: as they are."""
        return targets

    def filter_candidates(self, i: int, candidates: list[Example], seed: list[Example]) -> list[Example]:
        """The teacher's parsed examples that may go on to dedup (localaug: verification). Paper: all."""
        return candidates

    def review_iteration(self, row: IterationRow) -> None:
        """Reads a finished round (localaug: the preflight beside the first student). Changes nothing."""

    def choose_final_model(self, rows: list[IterationRow], test: list[Example]) -> FinalModel | None:
        """Trains a final student of the recipe's choosing (localaug: by held-out seeds). Paper: None, the last
        round's student is the result."""
        return None
