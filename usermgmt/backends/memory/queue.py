"""An in-process :class:`~usermgmt.ports.TaskQueue`: worker threads, or inline for tests."""

from __future__ import annotations

import copy
import heapq
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from usermgmt.errors import BackendUnavailable, EmailDeliveryError
from usermgmt.observability import hooks

__all__ = ["FailedJob", "InlineQueue", "TaskRunner", "is_retryable"]

TaskRunner = Callable[[str, Mapping[str, Any]], None]
"""Runs the registered task ``name`` with ``payload``; raises on failure."""

_log = logging.getLogger("usermgmt.queue")


@dataclass(frozen=True, slots=True)
class FailedJob:
    """A job that failed for good (dead letter). ``error`` is the last exception's repr."""

    id: str
    task: str
    payload: Mapping[str, Any]
    queue: str
    error: str
    attempts: int


@dataclass(slots=True)
class _Job:
    id: str
    task: str
    payload: Mapping[str, Any]
    queue: str
    attempts: int = 0


def is_retryable(exc: BaseException) -> bool:
    """True for errors a later attempt may fix: a transient EmailDeliveryError or
    BackendUnavailable."""
    if isinstance(exc, EmailDeliveryError):
        return exc.transient
    return isinstance(exc, BackendUnavailable)


class InlineQueue:
    """Runs jobs in this process.

    ``mode="thread"`` (default) runs them on ``workers`` daemon threads, started at
    the first :meth:`enqueue`; a job failing with a retryable error (see
    :func:`is_retryable`) is tried again after ``backoff[attempt - 1]`` seconds
    (the last value repeating), up to ``max_attempts`` attempts in all. Use
    :meth:`join` to wait until idle and :meth:`close` to stop the threads.

    ``mode="sync"`` runs each job in the caller's thread before :meth:`enqueue`
    returns, retrying at once without sleeping: handy in tests.

    In both modes a job's exception never escapes :meth:`enqueue`; a job that
    fails for good is appended to :attr:`failed` and logged (task, job id,
    attempts and error, never the payload, which may hold tokens). The payload is
    deep-copied at enqueue, as a real queue would serialise it.

    Each attempt's duration goes to :func:`usermgmt.observability.hooks.observe_job`
    with its outcome: ``success``, ``retry`` (it will be tried again) or ``failure``.
    """

    def __init__(
        self,
        runner: TaskRunner,
        *,
        mode: Literal["thread", "sync"] = "thread",
        max_attempts: int = 5,
        backoff: Sequence[float] = (0.5, 2, 10, 30),
        logger: logging.Logger | None = None,
        workers: int = 1,
    ) -> None:
        if mode not in ("thread", "sync"):
            raise ValueError(f"mode must be 'thread' or 'sync', not {mode!r}")
        if max_attempts < 1 or workers < 1 or not backoff or min(backoff) < 0:
            raise ValueError("need max_attempts >= 1, workers >= 1 and non-negative backoff")
        self.runner = runner
        self.mode = mode
        self.max_attempts = max_attempts
        self.backoff = tuple(float(b) for b in backoff)
        self.logger = logger if logger is not None else _log
        self.failed: list[FailedJob] = []
        self.completed_count = 0
        self._workers = workers
        self._cond = threading.Condition()
        self._ready: deque[_Job] = deque()
        self._scheduled: list[tuple[float, int, _Job]] = []  # heap of (due, seq, job)
        self._seq = itertools.count()
        self._running = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    def enqueue(self, task: str, payload: Mapping[str, Any], *, queue: str = "email") -> str:
        """Schedule ``task``; returns the job id (uuid4 hex). Raises RuntimeError once closed."""
        job = _Job(uuid.uuid4().hex, task, copy.deepcopy(dict(payload)), queue)
        with self._cond:
            if self._closed:
                raise RuntimeError("this queue is closed")
            if self.mode == "sync":
                self._running += 1
            else:
                self._ready.append(job)
                self._start_workers()
                self._cond.notify()
        if self.mode == "sync":
            self._run_sync(job)
        return job.id

    def pending_count(self) -> int:
        """Jobs enqueued and not yet completed or failed (waiting, retrying or running)."""
        with self._cond:
            return len(self._ready) + len(self._scheduled) + self._running

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no job is pending; False if ``timeout`` seconds passed first."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._ready and not self._scheduled and self._running == 0, timeout
            )

    def close(self, timeout: float | None = 5.0) -> None:
        """Refuse new jobs and stop the workers after their current job. Jobs still
        waiting are dropped (call :meth:`join` first to finish them)."""
        with self._cond:
            self._closed = True
            dropped = len(self._ready) + len(self._scheduled)
            self._ready.clear()
            self._scheduled.clear()
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)
        if dropped:
            self.logger.warning("queue closed with %d pending job(s) dropped", dropped)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _attempt(self, job: _Job) -> Exception | None:
        job.attempts += 1
        started = time.perf_counter()
        try:
            self.runner(job.task, job.payload)
        except Exception as exc:
            outcome = "retry" if self._retryable(job, exc) else "failure"
            hooks.observe_job(job.queue, job.task, outcome, time.perf_counter() - started)
            return exc
        hooks.observe_job(job.queue, job.task, "success", time.perf_counter() - started)
        return None

    def _retryable(self, job: _Job, exc: Exception) -> bool:
        return is_retryable(exc) and job.attempts < self.max_attempts

    def _give_up_or_retry(self, job: _Job, exc: Exception) -> bool:
        """Log the failure; True if the job should be tried again."""
        retry = self._retryable(job, exc)
        self.logger.warning(
            "task %s (job %s, queue %s) failed on attempt %d/%d%s: %s",
            job.task,
            job.id,
            job.queue,
            job.attempts,
            self.max_attempts,
            ", will retry" if retry else "",
            repr(exc)[:500],
        )
        return retry

    def _fail(self, job: _Job, exc: Exception) -> None:
        # Called with the condition held.
        self.failed.append(
            FailedJob(job.id, job.task, job.payload, job.queue, repr(exc), job.attempts)
        )

    def _run_sync(self, job: _Job) -> None:
        try:
            while True:
                exc = self._attempt(job)
                if exc is None:
                    with self._cond:
                        self.completed_count += 1
                    return
                if not self._give_up_or_retry(job, exc):
                    with self._cond:
                        self._fail(job, exc)
                    return
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def _start_workers(self) -> None:
        # Called with the condition held.
        while len(self._threads) < self._workers:
            thread = threading.Thread(
                target=self._work, name=f"usermgmt-queue-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _next_job(self) -> _Job | None:
        # Called with the condition held; None once closed.
        while not self._closed:
            now = time.monotonic()
            while self._scheduled and self._scheduled[0][0] <= now:
                self._ready.append(heapq.heappop(self._scheduled)[2])
            if self._ready:
                self._running += 1
                return self._ready.popleft()
            self._cond.wait(self._scheduled[0][0] - now if self._scheduled else None)
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._next_job()
            if job is None:
                return
            exc = self._attempt(job)
            retry = exc is not None and self._give_up_or_retry(job, exc)
            with self._cond:
                self._running -= 1
                if exc is None:
                    self.completed_count += 1
                elif retry and self._closed:  # close() drops waiting jobs, retries included
                    self.logger.warning("queue closed: retry of job %s dropped", job.id)
                elif retry:
                    delay = self.backoff[min(job.attempts, len(self.backoff)) - 1]
                    due = time.monotonic() + delay
                    heapq.heappush(self._scheduled, (due, next(self._seq), job))
                else:
                    self._fail(job, exc)
                self._cond.notify_all()
