"""``usermgmt worker`` as a real subprocess on a real redis-server, delivering to an
aiosmtpd sink: delivery, retries through an SMTP outage, the dead-letter registry,
health, metrics and graceful shutdown."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.email import free_port
from tests.queues._app import SLOW_FINISHED, SLOW_STARTED
from tests.queues.conftest import Child, SmtpSink, wait_for, workers_alive
from usermgmt.backends.queue import AUDIT_ARCHIVE_QUEUE, EMAIL_QUEUE
from usermgmt.backends.queue.rq import RQQueue

PASSWORD = "correct horse battery staple"


def http_client(um: Any) -> Any:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    import usermgmt_fastapi

    app = FastAPI()
    usermgmt_fastapi.mount(app, um, metrics=False)
    return TestClient(app)


def queue_of(um: Any) -> RQQueue:
    queue = um.backends.queue
    assert isinstance(queue, RQQueue)
    return queue


def failed_ids(queue: RQQueue, name: str = EMAIL_QUEUE) -> list[str]:
    from rq.registry import FailedJobRegistry

    return list(FailedJobRegistry(queue=queue.queue(name)).get_job_ids())


# --- delivery ----------------------------------------------------------------------------------


def test_registration_mail_is_delivered_by_the_worker(
    make_um: Callable[..., Any],
    start_worker: Callable[..., Child],
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    worker = start_worker("email", extra={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    um = make_um()
    api = http_client(um)

    response = api.post("/auth/register", json={"email": "ada@example.com", "password": PASSWORD})

    assert response.status_code == 202
    (message,) = smtp_sink.wait(1)
    assert message["To"] == "ada@example.com"
    assert "/verify-email?token=" in message.get_body(("plain",)).get_content()
    stats = queue_of(um).stats(EMAIL_QUEUE)
    assert (stats.backlog, stats.failed, stats.workers) == (0, 0, 1)
    # the worker measured the attempt, in prometheus-client's multiprocess files
    assert _job_count(metrics_dir, "email", "email.send", "success") == 1
    assert "token=" not in worker.output  # the mail's link never reaches the log


def _job_count(directory: Path, queue: str, task: str, outcome: str) -> float:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    value = registry.get_sample_value(
        "queue_job_duration_seconds_count", {"queue": queue, "task": task, "outcome": outcome}
    )
    return value or 0.0


def test_smtp_outage_changes_no_response_and_the_mail_arrives_later(
    make_um: Callable[..., Any],
    start_worker: Callable[..., Child],
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    start_worker("email", extra={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    um = make_um()
    api = http_client(um)
    queue = queue_of(um)
    baseline = api.post("/auth/password/forgot", json={"email": "nobody@example.com"})
    smtp_sink.stop()  # the provider goes down

    registered = api.post("/auth/register", json={"email": "bob@example.com", "password": PASSWORD})
    forgot = api.post("/auth/password/forgot", json={"email": "bob@example.com"})

    owner = um.users.register("olga@example.com", PASSWORD).user
    organization = um.organizations.create(owner.id, "Acme")
    invitation = um.invitations.create(owner.id, organization.id, "ivan@example.com")

    assert registered.status_code == 202
    assert (forgot.status_code, forgot.json()) == (baseline.status_code, baseline.json())
    assert invitation.email == "ivan@example.com"
    # the jobs fail, transiently, and wait for their retry (backoff: 1 s)
    wait_for(lambda: _job_count(metrics_dir, "email", "email.send", "retry") >= 2, 15, "retries")
    assert failed_ids(queue) == []
    smtp_sink.start()  # the provider is back, on the same port
    messages = smtp_sink.wait(4, timeout=30)
    assert sorted(m["To"] for m in messages) == [
        "bob@example.com",
        "bob@example.com",
        "ivan@example.com",
        "olga@example.com",
    ]
    assert failed_ids(queue) == []
    assert _job_count(metrics_dir, "email", "email.send", "success") == 4
    # the late link still works (F8: tokens stay valid to their normal expiry)
    texts = [m.get_body(("plain",)).get_content() for m in messages if m["To"] == "bob@example.com"]
    (verification,) = [t for t in texts if "/verify-email?token=" in t]
    token = re.search(r"/verify-email\?token=([A-Za-z0-9_-]+)", verification)
    assert token is not None
    verified = api.post("/auth/verify-email", json={"token": token.group(1)})
    assert verified.status_code == 200
    assert verified.json()["email"] == "bob@example.com"


def test_retries_are_bounded_then_the_job_is_dead_lettered_and_can_be_requeued(
    make_um: Callable[..., Any],
    start_worker: Callable[..., Child],
    smtp_sink: SmtpSink,
    env: dict[str, str],
    redis_url: str,
) -> None:
    env["QUEUE_RETRY_MAX_ATTEMPTS"] = "2"
    worker = start_worker("email")
    um = make_um()
    smtp_sink.stop()

    job_id = queue_of(um).enqueue(
        "email.send", {"to": "carol@example.com", "subject": "Hi", "text": "Hello"}
    )

    queue = queue_of(um)
    wait_for(lambda: failed_ids(queue) == [job_id], 15, "the job in the failed registry")
    job = queue.queue(EMAIL_QUEUE).fetch_job(job_id)
    assert job is not None
    assert job.number_of_retries is None or job.number_of_retries <= 1
    assert job.retries_left == 0
    assert "EmailDeliveryError" in (job.latest_result().exc_string or "")
    assert smtp_sink.messages == []
    # each attempt is logged with its number (RQ counts retries down, not up)
    wait_for(lambda: "on attempt 2, giving up" in worker.output, 10, "the last attempt's log")
    assert "on attempt 1, will retry" in worker.output

    # the operator fixes the cause and requeues the dead letters with RQ's own CLI
    smtp_sink.start()
    requeue = subprocess.run(  # noqa: S603 - our own command line
        [
            str(Path(sys.executable).with_name("rq")),
            *("requeue", "--queue", "email", "--all", "--serializer", "json"),
            *("--url", redis_url),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert requeue.returncode == 0, requeue.stderr
    (message,) = smtp_sink.wait(1)
    assert message["To"] == "carol@example.com"
    assert failed_ids(queue) == []


# --- dead letters and health ---------------------------------------------------------------------


def test_poison_job_is_dead_lettered_at_once_and_health_turns_503(
    make_um: Callable[..., Any],
    start_worker: Callable[..., Child],
    smtp_sink: SmtpSink,
) -> None:
    metrics_port = free_port()
    start_worker("all", "--metrics-port", str(metrics_port))
    um = make_um()
    api = http_client(um)
    queue = queue_of(um)
    healthy = api.get("/health/queues")
    assert healthy.status_code == 200
    assert healthy.json()["queues"] == {"email": "healthy", "auditArchive": "healthy"}

    # no "to": a permanent failure, never retried
    job_id = queue.enqueue("email.send", {"subject": "?", "text": "?"})

    wait_for(lambda: failed_ids(queue) == [job_id], 10, "the poison job in the failed registry")
    job = queue.queue(EMAIL_QUEUE).fetch_job(job_id)
    assert job is not None
    assert not job.number_of_retries  # tried once only
    assert "KeyError" in (job.latest_result().exc_string or "")
    response = api.get("/health/queues")
    assert response.status_code == 503
    body = response.json()
    assert list(body) == ["status", "service", "queues", "timestamp"]
    assert body["status"] == "unhealthy"
    assert body["queues"] == {"email": "unhealthy", "auditArchive": "healthy"}
    assert smtp_sink.messages == []
    # the worker's own metrics page (no multiprocess directory here)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    assert (
        'queue_job_duration_seconds_count{outcome="failure",queue="email",task="email.send"} 1.0'
        in text
    )


def test_no_worker_alive_is_unhealthy(
    make_um: Callable[..., Any], start_worker: Callable[..., Child], redis_url: str
) -> None:
    um = make_um()
    api = http_client(um)
    assert api.get("/health/queues").json()["queues"] == {
        "email": "unhealthy",
        "auditArchive": "unhealthy",
    }
    worker = start_worker("email")
    assert api.get("/health/queues").json()["queues"] == {
        "email": "healthy",
        "auditArchive": "unhealthy",  # nobody serves it
    }

    assert worker.terminate() == 0

    assert workers_alive(redis_url, EMAIL_QUEUE) == 0
    response = api.get("/health/queues")
    assert response.status_code == 503
    assert response.json()["queues"]["email"] == "unhealthy"


def test_backlog_threshold(make_um: Callable[..., Any], start_worker: Callable[..., Child]) -> None:
    start_worker("audit-archive")  # nobody serves email: its jobs pile up
    um = make_um(queue_email_backlog_threshold=3)
    queue = queue_of(um)
    for _ in range(2):
        queue.enqueue("email.send", {"to": "x@example.com", "subject": "s", "text": "t"})
    assert queue.health() == {EMAIL_QUEUE: False, AUDIT_ARCHIVE_QUEUE: True}  # no email worker
    assert queue.stats(EMAIL_QUEUE).backlog == 2
    queue.enqueue("email.send", {"to": "x@example.com", "subject": "s", "text": "t"})
    stats = queue.stats(EMAIL_QUEUE)
    assert stats.problems(queue.thresholds[EMAIL_QUEUE]) == [
        "3 jobs waiting (threshold 3)",
        "no worker alive",
    ]


# --- shutdown --------------------------------------------------------------------------------------


def test_sigterm_lets_the_current_job_finish_then_exits_0(
    make_um: Callable[..., Any], start_worker: Callable[..., Child], client: Any, redis_url: str
) -> None:
    worker = start_worker("email")
    um = make_um()
    queue = queue_of(um)
    job_id = queue.enqueue("test.slow", {"seconds": 1.5})
    wait_for(lambda: client.get(SLOW_STARTED), 10, "the slow job to start")

    started = time.monotonic()
    code = worker.terminate(timeout=20)

    assert code == 0, worker.output[-3000:]
    assert time.monotonic() - started >= 0.5  # it waited for the job
    assert client.get(SLOW_FINISHED) == b"1"
    assert failed_ids(queue) == []
    job = queue.queue(EMAIL_QUEUE).fetch_job(job_id)
    assert job is None or job.get_status() == "finished"
    assert workers_alive(redis_url, EMAIL_QUEUE) == 0


def test_worker_refuses_inline_settings(
    run_cli: Callable[..., tuple[int, str]], env: dict[str, str]
) -> None:
    env["QUEUE_BACKEND"] = "inline"
    code, output = run_cli(env, "worker", "email")
    assert code == 2
    assert output.startswith("usermgmt: error: the queue commands need QUEUE_BACKEND=rq")
