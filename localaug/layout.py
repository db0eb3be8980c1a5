"""The run directory's names, each defined once: the files a run writes and the stages the manifest marks.

    runs/<name>/
      config.yaml  manifest.json  .lock  report.md  report.html  accuracy.png
      seed.jsonl  holdout.jsonl  test.jsonl            stage `prepare`
      preflight/teacher.jsonl                          stage `preflight/teacher` (the teacher labels seeds)
      iter_00/                                         one round of the loop (`round_folder(0)`)
        train.jsonl  adapter/  eval_seed.jsonl  eval_test.jsonl  eval_holdout.jsonl     the student M_0
        candidates.jsonl  verified.jsonl  consistent.jsonl  augment.jsonl               what the teacher wrote
        rejected_<step>.jsonl  rejected.jsonl  dedup_index.npz  eval_oof.jsonl
        fold1/  train.jsonl  adapter/  eval_fold.jsonl  eval_candidates.jsonl            an out-of-fold student
      final/  train.jsonl  adapter/  eval_test.jsonl                                    the final student

A stage's key in manifest.json is its folder and its name ("prepare", "iter_00/train", "iter_00/fold1/eval_fold");
docs/run-directory.md says what each file holds.
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
LOCK = ".lock"
REPORT = "report.md"
REPORT_HTML = "report.html"  # the same run for a browser: every teacher example, kept or refused, and why
PLOT = "accuracy.png"

SEED = "seed.jsonl"
HOLDOUT = "holdout.jsonl"
TEST = "test.jsonl"

# Stage names: the last part of a stage key.
PREPARE = "prepare"
TRAIN = "train"
AUGMENT = "augment"
VERIFY = "verify"
DEDUP = "dedup"
LABEL = "teacher"  # the teacher labels seed examples (the preflight)
EVAL_PREFIX = "eval_"


def eval_stage(split: str) -> str:
    """The stage that judges a student on `split` ("seed", "test", "holdout", "fold", "candidates")."""
    return EVAL_PREFIX + split


def stage_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Folder:
    """A folder of the run directory: a round of the loop, a student, the preflight. Names are relative."""

    path: str
    iteration: int  # what progress reports for its stages (rounds count from 0; see FINAL, PREFLIGHT)

    def key(self, stage: str) -> str:
        return f"{self.path}/{stage}"

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def fold(self, f: int) -> Folder:
        """The out-of-fold student of fold `f` in this round."""
        return Folder(f"{self.path}/fold{f}", self.iteration)

    @property
    def label(self) -> str:
        """How progress names a student in a sub-folder ("fold1"); empty for a round's own."""
        return self.path.rsplit("/", 1)[-1] if "/" in self.path else ""

    # A student: what it was trained on, its weights, its answers on a split.
    @property
    def train_data(self) -> str:
        return self.file("train.jsonl")

    @property
    def adapter(self) -> str:
        return self.file("adapter")

    def judged(self, split: str) -> str:
        return self.file(f"{eval_stage(split)}.jsonl")

    # A round: what the teacher wrote, what each filter kept or rejected, what was added.
    @property
    def candidates(self) -> str:
        return self.file("candidates.jsonl")

    @property
    def verified(self) -> str:
        return self.file("verified.jsonl")

    @property
    def consistent(self) -> str:
        return self.file("consistent.jsonl")

    @property
    def added(self) -> str:
        return self.file("augment.jsonl")

    def rejected_by(self, step: str) -> str:
        """One filter's rejections (FILTER_ORDER); the dedup stage gathers them all into `rejected`."""
        return self.file(f"{REJECTED_PREFIX}{step}.jsonl")

    @property
    def rejected(self) -> str:
        return self.file("rejected.jsonl")

    @property
    def dedup_index(self) -> str:
        return self.file("dedup_index.npz")

    @property
    def errors_out_of_fold(self) -> str:
        return self.file("eval_oof.jsonl")

    @property
    def teacher_labels(self) -> str:
        return self.file("teacher.jsonl")


REJECTED_PREFIX = "rejected_"
# The filters that write rejected_<step>.jsonl, in the order a candidate meets them: rejected.jsonl lists
# their rejections in this order (a filter not named here comes after them, by name).
FILTER_ORDER = ("parse", "verify", "consistency")

FINAL = Folder("final", -1)
PREFLIGHT = Folder("preflight", -2)


ROUND_PREFIX = "iter_"


def round_folder(i: int) -> Folder:
    return Folder(f"{ROUND_PREFIX}{i:02d}", i)


def folder_of(key: str) -> Folder | None:
    """The folder a stage key belongs to ("iter_01/fold0/train" -> iteration 1's fold 0); None for `prepare`."""
    if "/" not in key:
        return None
    path = key.rsplit("/", 1)[0]
    top = path.split("/", 1)[0]
    for known in (FINAL, PREFLIGHT):
        if top == known.path:
            return Folder(path, known.iteration)
    if top.startswith(ROUND_PREFIX) and top[len(ROUND_PREFIX):].isdigit():
        return Folder(path, int(top[len(ROUND_PREFIX):]))
    return None
