"""The teacher behind one or several OpenAI-compatible servers of one model: dispatch and failover.

Each sample is its own request (seed = sampling.seed + sample index, so samples are reproducible where the
server honours seeds, and cacheable one by one). A request goes to the server with the fewest requests in
flight (each server takes at most `concurrency` at once; servers batch concurrent requests themselves), so
a faster server is handed more. A server that refuses, times out or answers 5xx is set aside for the rest
of the stage (one `generate` call) and the request goes to another; each request is answered once. At the
next stage a set-aside server is asked for /v1/models again and rejoins if it answers. Only when no server
is left does the stage fail, in one line.

One server is a pool of one, with a patient retry policy (there is nowhere else to go).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..failpoints import halfway
from ..protocols import Completion, GenerationRequest, ProgressFn, Sampling, TeacherBase
from .common import iter_jobs, run_stream
from .http import ServerClient, ServerFailure
from .servers import ServerInfo

POOL_HALFWAY = "teacher-pool-halfway"  # failpoint: half of a stage's samples answered


@dataclass
class _Member:
    client: ServerClient
    info: ServerInfo
    capacity: int
    in_flight: int = 0
    answered: int = 0  # by this process, all stages
    set_aside: int = 0  # how many stages it was set aside in
    aside: str | None = None  # why it is set aside now
    last_pick: int = 0


class TeacherPool(TeacherBase):  # its own generate_stream; close: nothing held between requests
    kind = "http"

    def __init__(self, servers: Sequence[tuple[ServerClient, ServerInfo]], *, identity: str,
                 prefers_completion: bool = False, concurrency: int = 8, failover_retries: int = 1) -> None:
        if not servers:
            raise UserError("no teacher server configured")
        self.members = [_Member(c, i, max(1, int(concurrency))) for c, i in servers]
        self.identity = f"http:{identity}"  # the model, never an address: replicas share cache entries
        self.prefers_completion = prefers_completion
        self.failover_retries = failover_retries  # a quick second try before a server is set aside
        self._cond = threading.Condition()
        self._picks = itertools.count(1)

    @property
    def model_calls(self) -> int:
        return sum(m.answered for m in self.members)

    # ------------------------------------------------------------------ Teacher protocol

    def generate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
                 ) -> list[list[Completion]]:
        return run_stream(self.generate_stream, requests, progress)

    def generate_stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, int, Completion]]:
        jobs = list(iter_jobs(requests))
        if not jobs:
            return
        self._readmit()
        workers = min(sum(m.capacity for m in self.members if m.aside is None) or 1, len(jobs))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="localaug-http")
        try:
            futs: dict[Future[Completion], tuple[int, int]] = {
                pool.submit(self._one, req, s): (ri, si) for ri, si, req, s in jobs
            }
            pending, done_count = set(futs), 0
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    ri, si = futs[f]
                    yield ri, si, f.result()
                    done_count += 1
                    halfway(POOL_HALFWAY, done_count, len(jobs))
        finally:
            # A failure (or the consumer stopping) cancels what has not started yet.
            pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ dispatch

    def _one(self, req: GenerationRequest, s: Sampling) -> Completion:
        while True:
            m, alone = self._acquire()
            try:
                comp = m.client.complete(req, s, retries=m.client.retries if alone else self.failover_retries)
            except ServerFailure as e:
                self._release(m, failure=e.reason)
                continue  # to another server, if one is left
            except BaseException:
                self._release(m)
                raise
            self._release(m, answered=True)
            return comp

    def _acquire(self) -> tuple[_Member, bool]:
        """The live server with the fewest requests in flight (ties: the one picked longest ago), and whether
        it is the only one left; waits while every live server is full."""
        with self._cond:
            while True:
                live = [m for m in self.members if m.aside is None]
                if not live:
                    raise UserError(self._none_left())
                free = [m for m in live if m.in_flight < m.capacity]
                if free:
                    m = min(free, key=lambda m: (m.in_flight, m.last_pick))
                    m.in_flight += 1
                    m.last_pick = next(self._picks)
                    return m, len(live) == 1
                self._cond.wait()

    def _release(self, m: _Member, *, answered: bool = False, failure: str | None = None) -> None:
        with self._cond:
            m.in_flight -= 1
            if answered:
                m.answered += 1
            if failure is not None and m.aside is None:
                m.aside = failure
                m.set_aside += 1
            self._cond.notify_all()

    def _readmit(self) -> None:
        """A new stage: servers set aside in the last one rejoin if their model listing answers now."""
        for m in self.members:
            if m.aside is not None:
                try:
                    m.client.models()
                except UserError:
                    continue
                m.aside = None

    def _none_left(self) -> str:
        if len(self.members) == 1:
            m = self.members[0]
            return f"teacher server at {m.info.url} is unreachable or failing ({m.aside}); is it running?"
        why = "; ".join(f"{m.info.url} ({m.aside})" for m in self.members)
        return f"every teacher server failed in this stage: {why}; are they running?"

    # ------------------------------------------------------------------ the record

    def server_records(self, previous: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Per server, for manifest.json and report.md: what it is, its constraint, how many requests it
        answered (added to `previous`, the record of the run's earlier processes)."""
        before = {str(r.get("url")): r for r in previous or []}
        out = []
        for m in self.members:
            old = before.pop(m.info.url, {})
            out.append({"url": m.info.url, "model": m.info.reported, "software": m.info.software,
                        "version": m.info.version, "constraint": m.info.dialect,
                        "answered": int(old.get("answered", 0)) + m.answered,
                        "set_aside": int(old.get("set_aside", 0)) + m.set_aside})
        return out + list(before.values())  # servers of an earlier process that this one did not use
