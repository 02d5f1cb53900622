"""The daily audit archive: ``usermgmt schedule`` subprocesses racing for the day's lock,
and a worker running the queued job once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

import pytest

from tests.queues._app import ARCHIVE_RUNS
from tests.queues.conftest import Child, settings_from, wait_for
from usermgmt.backends.queue import AUDIT_ARCHIVE_QUEUE, AUDIT_ARCHIVE_TASK
from usermgmt.backends.queue import rq as rq_backend
from usermgmt.backends.queue.schedule import LOCK_KEY, Scheduler, archive_job_id
from usermgmt.errors import BackendUnavailable


def test_two_schedulers_queue_the_day_once_and_the_worker_runs_it_once(
    spawn: Callable[..., Child],
    start_worker: Callable[..., Child],
    env: dict[str, str],
    client: Any,
) -> None:
    worker = start_worker("audit-archive")
    # the slot (00:00 UTC) has passed today: each scheduler tries at once
    first = spawn(env, "schedule", "--at", "00:00")
    second = spawn(env, "schedule", "--at", "00:00")

    today = datetime.now(UTC).date()
    wait_for(lambda: client.get(ARCHIVE_RUNS) == b"1", 30, "the archive run")
    for scheduler in (first, second):  # both are running (their signal handlers too)
        wait_for(lambda s=scheduler: "runs daily at" in s.output, 30, "the scheduler's start")

    assert client.get(LOCK_KEY.format(today.isoformat())) is not None
    assert 0 < client.ttl(LOCK_KEY.format(today.isoformat())) <= 2 * 86400
    assert first.terminate() == 0
    assert second.terminate() == 0
    assert (first.output + second.output).count(f"queued the audit archive of {today}") == 1
    assert client.get(ARCHIVE_RUNS) == b"1"
    assert worker.terminate() == 0
    assert client.get(ARCHIVE_RUNS) == b"1"


def test_schedule_once_for_cron(spawn: Callable[..., Child], env: dict[str, str]) -> None:
    runs = [spawn(env, "schedule", "--once") for _ in range(2)]  # two hosts, same minute
    codes = [run.process.wait(60) for run in runs]
    outputs = [run.output for run in runs]

    assert codes == [0, 0], outputs
    assert sum("queued the audit archive" in out for out in outputs) == 1
    assert sum("already queued: nothing to do" in out for out in outputs) == 1


def test_run_day_is_idempotent(env: dict[str, str], client: Any) -> None:
    queue = rq_backend.build(settings_from(env), socket_timeout=5)
    day = date(2026, 1, 16)
    try:
        scheduler = Scheduler(queue, time(3, 0, tzinfo=UTC))
        assert scheduler.run_day(day) is True
        assert scheduler.run_day(day) is False
        other = Scheduler(queue, time(3, 0, tzinfo=UTC))
        assert other.run_day(day) is False
        # a lost lock (expired early, deleted by hand) is still caught by the unique job id
        client.delete(LOCK_KEY.format(day.isoformat()))
        assert other.run_day(day) is False
        job = queue.queue(AUDIT_ARCHIVE_QUEUE).fetch_job(archive_job_id(day))
        assert job is not None
        assert job.args == [AUDIT_ARCHIVE_TASK, {}]
        assert queue.queue(AUDIT_ARCHIVE_QUEUE).count == 1
    finally:
        queue.close()


@pytest.mark.parametrize(
    ("now", "due", "wait"),
    [
        (datetime(2026, 1, 16, 2, 59, 30, tzinfo=UTC), None, 30.0),
        (datetime(2026, 1, 16, 3, 0, tzinfo=UTC), date(2026, 1, 16), 60.0),
        (datetime(2026, 1, 16, 23, 59, 59, tzinfo=UTC), date(2026, 1, 16), 3 * 3600 + 1.0),
    ],
)
def test_due_day_and_next_check(
    env: dict[str, str], now: datetime, due: date | None, wait: float
) -> None:
    queue = rq_backend.build(settings_from(env))
    try:
        scheduler = Scheduler(queue, time(3, 0, tzinfo=UTC), now=lambda: now)
        assert scheduler.due_day() == due
        assert scheduler.seconds_to_next_check() == min(wait, 60.0)
    finally:
        queue.close()


def test_run_day_with_redis_down_raises(env: dict[str, str]) -> None:
    queue = rq_backend.build(settings_from(env, queue_redis_url="redis://127.0.0.1:1/0"))
    try:
        with pytest.raises(BackendUnavailable):
            Scheduler(queue, time(3, 0, tzinfo=UTC)).run_day(date(2026, 1, 16))
    finally:
        queue.close()


def test_schedule_refuses_a_bad_time(
    env: dict[str, str], run_cli: Callable[..., tuple[int, str]]
) -> None:
    code, output = run_cli(env, "schedule", "--at", "25:00")
    assert code == 2
    assert "is not a time HH:MM" in output


def test_schedule_command_with_redis_down_exits_2(
    env: dict[str, str], run_cli: Callable[..., tuple[int, str]]
) -> None:
    env["QUEUE_REDIS_URL"] = "redis://127.0.0.1:1/0"
    code, output = run_cli(env, "schedule", "--once")
    assert code == 2
    assert output.startswith("usermgmt: error: cannot take the schedule lock on the queue Redis")
    assert "Traceback" not in output


def test_a_finished_job_that_comes_back_is_not_run_twice(
    env: dict[str, str], start_worker: Callable[..., Child], client: Any
) -> None:
    start_worker("audit-archive")
    queue = rq_backend.build(settings_from(env), socket_timeout=5)
    try:
        day = date(2026, 1, 16)
        assert Scheduler(queue, time(3, 0, tzinfo=UTC)).run_day(day)
        wait_for(lambda: client.get(ARCHIVE_RUNS) == b"1", 20, "the archive run")
        rq_queue = queue.queue(AUDIT_ARCHIVE_QUEUE)
        job = rq_queue.fetch_job(archive_job_id(day))
        assert job is not None
        wait_for(lambda: job.get_status(refresh=True) == "finished", 10, "the job to finish")

        # the same job id on the queue again (a worker crashed before RQ's bookkeeping,
        # or an operator requeued it by mistake)
        rq_queue.push_job_id(job.id)
        wait_for(lambda: rq_queue.count == 0, 20, "the worker to take it")
        wait_for(lambda: job.get_status(refresh=True) == "finished", 10, "the second pass")

        assert client.get(ARCHIVE_RUNS) == b"1"
        assert client.exists(f"um:queue:done:{job.id}") == 1
    finally:
        queue.close()
