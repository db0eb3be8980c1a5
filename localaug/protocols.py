"""The small interfaces between the loop and its backends.

`loop.py` sees only these types, so it can run against fakes in unit tests while the real
student (transformers + peft) and teacher (llama.cpp, HTTP) are tested for real in their own tests.
Nothing here imports torch or llama_cpp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# progress(done, total, info) -- info is a small dict (e.g. {"tokens_per_s": 80.0, "accepted": 3}).
ProgressFn = Callable[[int, int, dict[str, Any]], None]


# --------------------------------------------------------------------------- student


@dataclass(frozen=True)
class TrainItem:
    """One supervised example: the loss is taken on `completion` only (the prompt is masked)."""

    prompt: str
    completion: str


@dataclass(frozen=True)
class EvalItem:
    """One evaluation query.

    With `choices`, the student scores each choice as a continuation of `prompt` and picks the most
    likely one (likelihood scoring). Without, it generates greedily up to `max_new_tokens`, stopping
    at any of `stop`.
    """

    prompt: str
    choices: tuple[str, ...] | None = None
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ()


@dataclass
class EvalResult:
    output: str  # the chosen choice text, or the generated text
    choice_index: int | None = None
    scores: list[float] | None = None  # per-choice log-likelihoods when scored


def best_choice(scores: Sequence[float]) -> int:
    """The index of the highest score; ties go to the first choice."""
    return max(range(len(scores)), key=lambda k: (scores[k], -k))


@dataclass
class TrainStats:
    steps: int = 0
    train_tokens: int = 0
    seconds: float = 0.0
    final_loss: float | None = None
    peak_rss_mb: float | None = None
    processes: int = 1  # training processes that trained it (torchrun workers, see student/distributed.py)
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Student(Protocol):
    """A base model that can be fine-tuned (from the base weights every call) and evaluated."""

    identity: str  # human-readable model identity recorded in the manifest

    def train(
        self, items: Sequence[TrainItem], out_dir: Path, seed: int, progress: ProgressFn | None = None
    ) -> TrainStats:
        """Fine-tune from the base weights on `items`; write the adapter into `out_dir`."""
        ...

    def evaluate(
        self, adapter_dir: Path | None, items: Sequence[EvalItem], progress: ProgressFn | None = None
    ) -> list[EvalResult]:
        """Evaluate the base model plus the adapter in `adapter_dir` (None: the base model alone)."""
        ...


# --------------------------------------------------------------------------- teacher


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0
    stop: tuple[str, ...] = ()

    def key(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": list(self.stop),
        }


@dataclass(frozen=True)
class GenerationRequest:
    """Either a raw completion `prompt` (base models) or chat `messages` (instruction models).

    `n` samples are drawn; sample i uses seed `sampling.seed + i` so that each sample is reproducible
    and cacheable on its own. `choices`, when given, asks for a completion that is exactly one of these
    strings (the verifier's label words): backends constrain decoding where they can; callers still
    check the text, since a server may ignore the constraint.
    """

    sampling: Sampling
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) pairs
    n: int = 1
    choices: tuple[str, ...] | None = None


@dataclass
class Completion:
    text: str
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False


@runtime_checkable
class Teacher(Protocol):
    """A text generator. A backend that only answers whole batches subclasses `TeacherBase`, which gives it
    `generate_stream` and `close`."""

    identity: str  # stable identity used in cache keys (file hash for GGUF, the served model for HTTP)
    prefers_completion: bool  # True for base models without a chat template

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
    ) -> list[list[Completion]]:
        """One list of `request.n` completions per request, in request order."""
        ...

    def generate_stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, int, Completion]]:
        """(request index, sample index, completion) for each sample, as soon as it is done, in any order:
        the cache stores each one at once, so a killed run loses none."""
        ...

    def close(self) -> None:
        """Free the model now (a later call may load it again)."""
        ...


class TeacherBase:
    """`generate_stream` and `close` for a teacher that generates whole batches and holds nothing to free."""

    stream_chunk = 8  # requests per `generate` call when streaming: what a killed run can lose at most

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
    ) -> list[list[Completion]]:
        raise NotImplementedError

    def generate_stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, int, Completion]]:
        for lo in range(0, len(requests), self.stream_chunk):
            for dr, comps in enumerate(self.generate(requests[lo : lo + self.stream_chunk])):
                for si, comp in enumerate(comps):
                    yield lo + dr, si, comp

    def close(self) -> None:
        pass
