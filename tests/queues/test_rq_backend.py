"""The RQ backend's wiring and failure modes: Cluster refused, Redis down while
enqueueing (F8), the command line's errors, the inline queue unchanged."""

from __future__ import annotations

import importlib.util
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.queues.conftest import Child, SmtpSink, settings_from
from tests.redis.conftest import RedisProcess, private_redis, unavailable
from usermgmt import UserManagement
from usermgmt.backends.memory import InlineQueue
from usermgmt.backends.queue import EMAIL_QUEUE
from usermgmt.backends.queue import rq as rq_backend
from usermgmt.backends.queue.rq import RQQueue
from usermgmt.config import Settings
from usermgmt.errors import BackendUnavailable, ConfigurationError, MissingDependency
from usermgmt.observability import hooks

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def cluster_node() -> Iterator[RedisProcess]:
    """One redis-server with cluster mode on (enough for INFO cluster to say so)."""
    try:
        with private_redis("--cluster-enabled", "yes") as server:
            yield server
    except RuntimeError as exc:
        unavailable(f"could not start redis-server: {exc}")


# --- Redis Cluster is refused ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"queue_redis_url": "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"}, "Cluster URL"),
        (
            {"redis_url": "redis+cluster://127.0.0.1:7000", "queue_backend": "inline"},
            "QUEUE_REDIS_URL is required",
        ),
        ({"queue_redis_url": "http://127.0.0.1:6379"}, "must start with redis://"),
    ],
)
def test_cluster_and_foreign_urls_are_refused(values: dict[str, Any], message: str) -> None:
    settings = Settings.for_tests(**values)
    with pytest.raises(ConfigurationError, match=message):
        rq_backend.build(settings)


def test_a_cluster_node_behind_a_plain_url_is_refused(
    cluster_node: RedisProcess, env: dict[str, str], run_cli: Callable[..., tuple[int, str]]
) -> None:
    settings = settings_from(env, queue_redis_url=cluster_node.url)
    queue = rq_backend.build(settings, socket_timeout=5)
    try:
        with pytest.raises(ConfigurationError, match="is a Redis Cluster node"):
            queue.enqueue_once("audit.archive", {}, queue="audit-archive", job_id="x")
        assert queue.health() == {"email": False, "audit-archive": False}
    finally:
        queue.close()

    env["QUEUE_REDIS_URL"] = cluster_node.url
    code, output = run_cli(env, "worker", "email")
    assert code == 2
    assert "is a Redis Cluster node" in output


def test_worker_with_redis_down_exits_2(
    env: dict[str, str], run_cli: Callable[..., tuple[int, str]]
) -> None:
    env["QUEUE_REDIS_URL"] = "redis://:hunter2@127.0.0.1:1/0"
    code, output = run_cli(env, "worker", "email")
    assert code == 2
    assert output.startswith(
        "usermgmt: error: cannot reach the queue Redis at redis://127.0.0.1:1/0"
    )
    assert "hunter2" not in output


# --- Redis down while enqueueing (F8) -------------------------------------------------------------


class _Degradations:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def observe_http(self, *args: Any) -> None: ...
    def observe_db(self, *args: Any) -> None: ...
    def observe_redis(self, *args: Any) -> None: ...
    def observe_job(self, *args: Any) -> None: ...
    def count_login(self, *args: Any) -> None: ...

    def count_degradation(self, backend: str, kind: str) -> None:
        self.seen.append((backend, kind))


@pytest.fixture
def degradations() -> Iterator[_Degradations]:
    previous = hooks._observer  # restored after: other tests may rely on the metrics one
    observer = _Degradations()
    hooks.install(observer)
    yield observer
    if previous is not None:
        hooks.install(previous)
    else:
        hooks.uninstall()


def test_redis_down_at_enqueue_runs_the_mail_in_process(
    make_um: Callable[..., Any],
    smtp_sink: SmtpSink,
    degradations: _Degradations,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with private_redis() as doomed:
        down_url = doomed.url
    um = make_um(queue_redis_url=down_url)  # nothing listens there any more
    assert isinstance(um.backends.queue, RQQueue)

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="usermgmt.queue"):
        result = um.users.register("dora@example.com", PASSWORD)
    elapsed = time.monotonic() - started

    assert result.user is not None
    assert elapsed < 5  # one refused connection, not a hang
    (message,) = smtp_sink.wait(1)
    assert message["To"] == "dora@example.com"
    assert ("redis", "queue") in degradations.seen
    assert any("running it in this process" in r.getMessage() for r in caplog.records)
    assert all("token=" not in r.getMessage() for r in caplog.records)
    # health says so: every queue unhealthy while its Redis is away
    code, body = um.health.queues()
    assert code == 503
    assert body["queues"] == {"email": "unhealthy", "auditArchive": "unhealthy"}


def test_enqueue_once_does_not_fall_back(env: dict[str, str]) -> None:
    queue = rq_backend.build(
        settings_from(env, queue_redis_url="redis://127.0.0.1:1/0"), runner=lambda t, p: None
    )
    try:
        with pytest.raises(BackendUnavailable):
            queue.enqueue_once("audit.archive", {}, queue="audit-archive", job_id="x")
    finally:
        queue.close()


def test_jobs_are_json_and_carry_the_retry_policy(make_um: Callable[..., Any], client: Any) -> None:
    um = make_um(queue_retry_max_attempts=3, queue_retry_backoff_seconds="2,7")
    queue = um.backends.queue
    assert isinstance(queue, RQQueue)

    job_id = queue.enqueue("email.send", {"to": "e@example.com", "subject": "s", "text": "t"})

    job = queue.queue(EMAIL_QUEUE).fetch_job(job_id)
    assert job is not None
    assert job.func_name == rq_backend.JOB_FUNCTION
    assert job.description == "email.send"  # never the payload
    assert job.retries_left == 2
    assert job.retry_intervals == [2, 7]
    assert job.timeout == um.settings.queue_job_timeout_seconds
    data = json.loads(zlib.decompress(client.hget(f"rq:job:{job_id}", "data")))  # not pickle
    assert data[2] == ["email.send", {"to": "e@example.com", "subject": "s", "text": "t"}]


# --- the command line ------------------------------------------------------------------------------


def test_worker_status_and_bad_app(
    env: dict[str, str], run_cli: Callable[..., tuple[int, str]], make_um: Callable[..., Any]
) -> None:
    um = make_um()
    um.backends.queue.enqueue("email.send", {"to": "f@example.com", "subject": "s", "text": "t"})

    code, output = run_cli(env, "worker", "all", "--status")
    assert code == 0
    assert output.splitlines() == [
        "email: 1 waiting, 0 scheduled, 0 running, 0 failed, 0 worker(s) alive",
        "audit-archive: 0 waiting, 0 scheduled, 0 running, 0 failed, 0 worker(s) alive",
    ]
    code, output = run_cli(env, "worker", "email", "--app", "tests.queues._app:nothing")
    assert code == 2
    assert output.strip() == (
        "usermgmt: error: --app 'tests.queues._app:nothing': tests.queues._app has no nothing"
    )


def test_worker_burst_drains_the_queue_and_exits(
    env: dict[str, str],
    spawn: Callable[..., Child],
    make_um: Callable[..., Any],
    smtp_sink: SmtpSink,
) -> None:
    um = make_um()
    for n in range(3):
        um.backends.queue.enqueue(
            "email.send", {"to": f"g{n}@example.com", "subject": "s", "text": "t"}
        )

    child = spawn(env, "worker", "email", "--burst")

    assert child.process.wait(60) == 0, child.output
    assert sorted(m["To"] for m in smtp_sink.wait(3)) == [
        "g0@example.com",
        "g1@example.com",
        "g2@example.com",
    ]


# --- the inline queue is unchanged ------------------------------------------------------------------


def test_inline_is_the_default_without_redis_and_still_sends() -> None:
    um = UserManagement.in_memory()
    try:
        assert isinstance(um.backends.queue, InlineQueue)
        um.users.register("hana@example.com", PASSWORD)
        assert um.outbox.last(to="hana@example.com") is not None
    finally:
        um.close()


@pytest.fixture
def without_rq(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``rq`` look uninstalled (whether it is or not)."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "rq" or name.startswith("rq.") else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.usefixtures("without_rq")
def test_rq_without_the_package_names_the_extra(
    env: dict[str, str], run_cli: Callable[..., tuple[int, str]]
) -> None:
    with pytest.raises(MissingDependency) as info:
        UserManagement(settings_from(env))
    assert info.value.extra_name == "rq"
    code, output = run_cli(env, "worker", "email")
    assert code == 2
    assert output.strip() == (
        'usermgmt: error: rq is not installed: install it with pip install "usermgmt[rq]"'
    )
