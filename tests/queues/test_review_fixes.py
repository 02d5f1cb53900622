"""Review fixes of the RQ backend: the retry delays RQ really uses, the archive queue's
own job timeout, a late reply from Redis while enqueueing, a Cluster node behind a
plain URL, ``schedule --once`` before its time of day."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.queues.conftest import SmtpSink, settings_from
from tests.redis.conftest import RedisProcess, private_redis, unavailable
from usermgmt.backends.queue import AUDIT_ARCHIVE_QUEUE, EMAIL_QUEUE
from usermgmt.backends.queue import rq as rq_backend
from usermgmt.backends.queue.rq import RQQueue

PASSWORD = "correct horse battery staple"


def _delays_rq_applies(queue: RQQueue, job_id: str) -> list[int]:
    """The delay RQ's own ``Job.get_retry_interval`` picks before each retry."""
    job = queue.queue(EMAIL_QUEUE).fetch_job(job_id)
    assert job is not None
    delays = []
    for left in range(queue.max_attempts - 1, 0, -1):  # RQ counts retries_left down
        job.retries_left = left
        delays.append(job.get_retry_interval())
    return delays


def test_the_backoff_list_is_followed_then_its_last_value_repeats(
    make_um: Callable[..., Any],
) -> None:
    um = make_um(  # the defaults (the tests' environment shortens them)
        queue_retry_max_attempts=8, queue_retry_backoff_seconds="10,60,300,1800"
    )
    queue = um.backends.queue
    assert isinstance(queue, RQQueue)
    assert queue.retry_intervals() == [10, 60, 300, 1800, 1800, 1800, 1800]
    job_id = queue.enqueue("email.send", {"to": "e@example.com", "subject": "s", "text": "t"})
    assert _delays_rq_applies(queue, job_id) == [10, 60, 300, 1800, 1800, 1800, 1800]

    fewer = make_um(queue_retry_max_attempts=3, queue_retry_backoff_seconds="2,7,9")
    assert fewer.backends.queue.retry_intervals() == [2, 7]
    assert make_um(queue_retry_max_attempts=1).backends.queue._retry() is None


def test_the_archive_queue_has_its_own_job_timeout(make_um: Callable[..., Any]) -> None:
    um = make_um(queue_job_timeout_seconds=120)
    queue = um.backends.queue
    assert isinstance(queue, RQQueue)
    assert um.settings.queue_audit_archive_job_timeout_seconds == 6 * 3600

    mail = queue.enqueue("email.send", {"to": "e@example.com", "subject": "s", "text": "t"})
    assert queue.enqueue_once("audit.archive", {}, queue=AUDIT_ARCHIVE_QUEUE, job_id="arch-t")
    mail_job = queue.queue(EMAIL_QUEUE).fetch_job(mail)
    archive_job = queue.queue(AUDIT_ARCHIVE_QUEUE).fetch_job("arch-t")
    assert mail_job is not None
    assert archive_job is not None
    assert mail_job.timeout == 120
    assert archive_job.timeout == 6 * 3600


# --- a late reply from Redis ---------------------------------------------------------------------


class _MuteProxy:
    """A TCP proxy to a real Redis. After ``mute()``, a connection that sends a request
    writing a job (``HSET``) keeps passing requests to Redis but its replies are dropped
    (the reply "times out"); other connections work normally, unless
    ``mute(new_too=True)``: then new connections get no reply at all."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.muted: set[int] = set()
        self.mute_new = False
        self.armed = False
        self.connections: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def mute(self, *, new_too: bool = False) -> None:
        with self._lock:
            self.armed = True
            self.mute_new = new_too

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self.connections.append(downstream)
                if self.mute_new:
                    self.muted.add(id(downstream))
            threading.Thread(
                target=self._pipe, args=(downstream, upstream, None), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(upstream, downstream, downstream), daemon=True
            ).start()

    def _pipe(
        self, source: socket.socket, sink: socket.socket, reply_to: socket.socket | None
    ) -> None:
        try:
            while data := source.recv(65536):
                if reply_to is None and self.armed and b"HSET" in data.upper():
                    self.muted.add(id(source))
                if reply_to is not None and id(reply_to) in self.muted:
                    continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.close()


@pytest.fixture
def mute_proxy(queue_redis: RedisProcess) -> Iterator[_MuteProxy]:
    proxy = _MuteProxy(int(queue_redis.url.rsplit(":", 1)[1].split("/")[0]))
    yield proxy
    proxy.close()


def _queue_through(env: dict[str, str], url: str, sent: list[str]) -> RQQueue:
    queue = rq_backend.build(
        settings_from(env, queue_redis_url=url),
        runner=lambda task, payload: sent.append(task),
        socket_timeout=0.5,
    )
    queue.client.ping()  # one connection, checked Redis (INFO cluster) on first use below
    return queue


def test_a_job_redis_stored_but_did_not_confirm_is_not_run_again_in_process(
    env: dict[str, str], mute_proxy: _MuteProxy, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sent: list[str] = []
    queue = _queue_through(env, mute_proxy.url, sent)
    try:
        queue._checked = True
        mute_proxy.mute()  # the open connection's replies vanish; a new one works
        with caplog.at_level(logging.WARNING, logger="usermgmt.queue"):
            job_id = queue.enqueue("email.send", {"to": "t@example.com"})
        assert client.exists(f"rq:job:{job_id}")  # the worker will send it
        assert queue._fallback is None  # this process does not send it
        assert sent == []
        assert any("timed out, but the job is there" in r.getMessage() for r in caplog.records)
    finally:
        queue.close()


def test_when_redis_cannot_say_the_job_also_runs_in_process(
    env: dict[str, str], mute_proxy: _MuteProxy
) -> None:
    sent: list[str] = []
    queue = _queue_through(env, mute_proxy.url, sent)
    try:
        queue._checked = True
        mute_proxy.mute(new_too=True)  # the EXISTS check times out too
        queue.enqueue("email.send", {"to": "t@example.com"})
        assert queue._fallback is not None
        queue._fallback.join(5.0)
        assert sent == ["email.send"]  # at least once
        assert queue._fallback.max_attempts == queue.max_attempts  # the configured retries
    finally:
        queue.close()


# --- a Cluster node behind a redis:// URL --------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_node() -> Iterator[RedisProcess]:
    try:
        with private_redis("--cluster-enabled", "yes") as server:
            yield server
    except RuntimeError as exc:
        unavailable(f"could not start redis-server: {exc}")


def test_a_cluster_node_at_enqueue_is_an_error_naming_the_cause_and_mail_still_leaves(
    cluster_node: RedisProcess,
    make_um: Callable[..., Any],
    smtp_sink: SmtpSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    um = make_um(queue_redis_url=cluster_node.url)
    with caplog.at_level(logging.ERROR, logger="usermgmt.queue"):
        um.users.register("cleo@example.com", PASSWORD)
    (message,) = smtp_sink.wait(1)
    assert message["To"] == "cleo@example.com"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("is a Redis Cluster node" in r.getMessage() for r in errors)


# --- schedule --once and the time of day ---------------------------------------------------------


def test_schedule_once_before_the_time_of_day_queues_nothing(
    env: dict[str, str], run_cli: Callable[..., tuple[int, str]], client: Any
) -> None:
    now = datetime.now(UTC)
    if now.strftime("%H:%M") < "23:59":
        code, output = run_cli(env, "schedule", "--once", "--at", "23:59")
        assert code == 0, output
        assert "not due before 23:59 UTC" in output
        assert client.keys("rq:job:audit-archive-*") == []
    code, output = run_cli(env, "schedule", "--once", "--at", "00:00")
    assert code == 0, output
    assert f"queued the audit archive of {datetime.now(UTC).date()}" in output
