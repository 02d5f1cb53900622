"""InlineQueue: sync and thread modes, retries, dead letters, logging."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from usermgmt.backends.memory import InlineQueue, MemoryUnitOfWorkFactory, is_retryable
from usermgmt.errors import BackendUnavailable, EmailDeliveryError, TransactionConflict
from usermgmt.testing.contracts import make_user


class Recorder:
    """A runner that records calls and raises the queued errors first."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[str, dict[str, Any], str]] = []
        self.lock = threading.Lock()

    def __call__(self, task: str, payload: Mapping[str, Any]) -> None:
        with self.lock:
            self.calls.append((task, dict(payload), threading.current_thread().name))
            if self.errors:
                raise self.errors.pop(0)


@pytest.fixture
def threaded() -> Iterator[list[InlineQueue]]:
    """Closes every thread-mode queue a test appends."""
    queues: list[InlineQueue] = []
    yield queues
    for q in queues:
        q.close()


def test_is_retryable() -> None:
    assert is_retryable(EmailDeliveryError("x", transient=True))
    assert not is_retryable(EmailDeliveryError("x", transient=False))
    assert is_retryable(BackendUnavailable())
    assert not is_retryable(TransactionConflict())
    assert not is_retryable(ValueError())


def test_sync_runs_in_caller_thread_before_enqueue_returns() -> None:
    runner = Recorder()
    queue = InlineQueue(runner, mode="sync")
    job_id = queue.enqueue("send_email", {"to": "a@example.com"})
    assert runner.calls == [
        ("send_email", {"to": "a@example.com"}, threading.current_thread().name)
    ]
    assert uuid.UUID(hex=job_id).version == 4
    assert len(job_id) == 32
    assert queue.completed_count == 1
    assert queue.pending_count() == 0
    assert queue.failed == []
    assert queue.enqueue("t", {}) != job_id


def test_payload_is_copied_at_enqueue() -> None:
    seen: list[Mapping[str, Any]] = []
    queue = InlineQueue(lambda task, payload: seen.append(payload), mode="sync")
    payload: dict[str, Any] = {"to": ["a@example.com"]}
    queue.enqueue("t", payload)
    payload["to"].append("b@example.com")
    assert seen == [{"to": ["a@example.com"]}]


def test_sync_failure_never_escapes_and_is_not_retried_when_permanent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Recorder(ValueError("bad template"))
    queue = InlineQueue(runner, mode="sync")
    with caplog.at_level(logging.WARNING, logger="usermgmt.queue"):
        job_id = queue.enqueue("send_email", {"token": "s3cr3t-token-value"}, queue="email")
    assert len(runner.calls) == 1
    assert queue.completed_count == 0
    (failed,) = queue.failed
    assert failed.id == job_id
    assert (failed.task, failed.queue, failed.attempts) == ("send_email", "email", 1)
    assert failed.payload == {"token": "s3cr3t-token-value"}
    assert failed.error == repr(ValueError("bad template"))
    assert "send_email" in caplog.text
    assert job_id in caplog.text
    assert "s3cr3t-token-value" not in caplog.text  # payloads may hold tokens


@pytest.mark.parametrize(
    "error", [EmailDeliveryError("try later", transient=True), BackendUnavailable("down")]
)
def test_sync_retries_transient_errors_up_to_max_attempts(error: Exception) -> None:
    runner = Recorder(*[error] * 10)
    queue = InlineQueue(runner, mode="sync", max_attempts=4)
    queue.enqueue("t", {})
    assert len(runner.calls) == 4
    assert queue.failed[0].attempts == 4
    assert queue.completed_count == 0


def test_sync_retry_then_success() -> None:
    runner = Recorder(BackendUnavailable(), EmailDeliveryError("busy"))
    queue = InlineQueue(runner, mode="sync")
    queue.enqueue("t", {})
    assert len(runner.calls) == 3
    assert queue.completed_count == 1
    assert queue.failed == []


def test_sync_permanent_email_error_is_not_retried() -> None:
    runner = Recorder(EmailDeliveryError("rejected", transient=False))
    queue = InlineQueue(runner, mode="sync")
    queue.enqueue("t", {})
    assert len(runner.calls) == 1
    assert queue.failed[0].attempts == 1


def test_sync_job_may_open_a_unit_of_work_while_the_caller_holds_one() -> None:
    factory = MemoryUnitOfWorkFactory(lock_timeout=2)
    user = make_user()

    def runner(task: str, payload: Mapping[str, Any]) -> None:
        with factory() as uow:
            uow.users.add(user)
            uow.commit()

    queue = InlineQueue(runner, mode="sync")
    with factory() as uow:
        uow.commit()
        queue.enqueue("t", {})  # same thread: the re-entrant lock must not deadlock
    assert queue.failed == []
    with factory() as uow:
        assert uow.users.get(user.id) == user


def test_sync_job_may_enqueue_another() -> None:
    names: list[str] = []
    queue: InlineQueue

    def runner(task: str, payload: Mapping[str, Any]) -> None:
        names.append(task)
        if task == "first":
            queue.enqueue("second", {})

    queue = InlineQueue(runner, mode="sync")
    queue.enqueue("first", {})
    assert names == ["first", "second"]
    assert queue.completed_count == 2


def test_thread_mode_runs_on_a_worker_and_join_waits(threaded: list[InlineQueue]) -> None:
    runner = Recorder()
    queue = InlineQueue(runner, mode="thread")
    threaded.append(queue)
    ids = [queue.enqueue("t", {"n": n}) for n in range(10)]
    assert queue.join(timeout=5)
    assert len(set(ids)) == 10
    assert [c[1]["n"] for c in runner.calls] == list(range(10))  # one worker: FIFO
    assert {c[2] for c in runner.calls} != {threading.current_thread().name}
    assert queue.completed_count == 10
    assert queue.pending_count() == 0


def test_thread_mode_pending_and_join_timeout(threaded: list[InlineQueue]) -> None:
    release = threading.Event()
    started = threading.Event()

    def runner(task: str, payload: Mapping[str, Any]) -> None:
        started.set()
        assert release.wait(5)

    queue = InlineQueue(runner, mode="thread")
    threaded.append(queue)
    queue.enqueue("slow", {})
    queue.enqueue("slow", {})
    assert started.wait(5)
    assert queue.pending_count() == 2  # one running, one waiting
    assert not queue.join(timeout=0.05)
    release.set()
    assert queue.join(timeout=5)
    assert queue.completed_count == 2


def test_thread_mode_retries_with_backoff_then_dead_letters(
    threaded: list[InlineQueue], caplog: pytest.LogCaptureFixture
) -> None:
    runner = Recorder(*[EmailDeliveryError("busy")] * 3)
    queue = InlineQueue(runner, mode="thread", max_attempts=3, backoff=(0.01, 0.02))
    threaded.append(queue)
    with caplog.at_level(logging.WARNING, logger="usermgmt.queue"):
        job_id = queue.enqueue("send_email", {"token": "tok-123"})
        assert queue.join(timeout=5)
    assert len(runner.calls) == 3
    (failed,) = queue.failed
    assert (failed.id, failed.attempts) == (job_id, 3)
    assert "tok-123" not in caplog.text
    assert caplog.text.count("send_email") == 3  # one line per failed attempt


def test_thread_mode_retry_succeeds(threaded: list[InlineQueue]) -> None:
    runner = Recorder(BackendUnavailable())
    queue = InlineQueue(runner, mode="thread", backoff=(0.01,), workers=2)
    threaded.append(queue)
    queue.enqueue("t", {})
    assert queue.join(timeout=5)
    assert len(runner.calls) == 2
    assert queue.completed_count == 1
    assert queue.failed == []


def test_close_stops_workers_and_refuses_jobs() -> None:
    workers: set[threading.Thread] = set()
    queue = InlineQueue(lambda task, payload: workers.add(threading.current_thread()), workers=2)
    for _ in range(20):
        queue.enqueue("t", {})
    assert queue.join(timeout=5)
    assert workers
    assert all(t.daemon and t.is_alive() for t in workers)
    queue.close()
    assert not any(t.is_alive() for t in workers)
    with pytest.raises(RuntimeError):
        queue.enqueue("t", {})
    queue.close()  # closing again is harmless


def test_close_drops_waiting_retries(caplog: pytest.LogCaptureFixture) -> None:
    runner = Recorder(BackendUnavailable())
    caplog.set_level(logging.WARNING, logger="usermgmt.queue")
    with InlineQueue(runner, mode="thread", backoff=(60,)) as queue:
        queue.enqueue("t", {})
        for _ in range(500):
            if "will retry" in caplog.text:
                break
            threading.Event().wait(0.01)
        queue.close(timeout=5)
    assert queue.pending_count() == 0
    assert len(runner.calls) == 1
    # dropped while waiting for its retry, or (if close came first) when it failed
    assert "dropped" in caplog.text
    assert queue.failed == []
    assert queue.completed_count == 0


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        InlineQueue(Recorder(), mode="eager")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        InlineQueue(Recorder(), max_attempts=0)
    with pytest.raises(ValueError):
        InlineQueue(Recorder(), backoff=())
