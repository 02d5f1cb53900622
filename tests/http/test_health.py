"""Health endpoints: exactly the deployment guide's JSON shapes; 200 healthy, 503 not."""

from __future__ import annotations

import re

import pytest

from usermgmt.backends.memory.queue import FailedJob
from usermgmt.errors import BackendUnavailable
from usermgmt.observability.health import AUDIT_ARCHIVE_QUEUE, FAILED_JOBS_THRESHOLD

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
RESPONSE_TIME = re.compile(r"^\d+ms$")


@pytest.fixture
def database_down(api, monkeypatch):
    def check():
        raise BackendUnavailable("The database is unavailable.")

    monkeypatch.setattr(api.um.backends.uow, "check", check)


def test_health(api):
    response = api.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "status": "healthy",
        "timestamp": "2026-01-01T12:00:00.000Z",  # the FakeClock's
        "services": {"database": "connected", "redis": "not_configured"},
    }
    assert response.headers["cache-control"] == "no-store"


def test_health_db(api):
    response = api.get("/health/db")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["status", "service", "responseTime", "timestamp"]
    assert body["status"] == "healthy"
    assert body["service"] == "database"
    assert RESPONSE_TIME.match(body["responseTime"])
    assert TIMESTAMP.match(body["timestamp"])


def test_health_redis_not_configured_is_healthy(api):
    response = api.get("/health/redis")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["status", "service", "responseTime", "timestamp"]
    assert body["service"] == "redis"
    assert body["status"] == "healthy"


def test_health_queues(api):
    response = api.get("/health/queues")

    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "service": "queues",
        "queues": {"email": "healthy", "auditArchive": "healthy"},
        "timestamp": "2026-01-01T12:00:00.000Z",
    }


def test_health_queues_with_too_many_failed_jobs(api):
    queue = api.um.backends.queue
    for n in range(FAILED_JOBS_THRESHOLD):
        queue.failed.append(FailedJob(str(n), "task", {}, AUDIT_ARCHIVE_QUEUE, "boom", 5))

    response = api.get("/health/queues")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["queues"] == {"email": "healthy", "auditArchive": "unhealthy"}


def test_live_and_ready(api):
    live = api.get("/health/live")
    ready = api.get("/health/ready")

    assert live.status_code == ready.status_code == 200
    assert live.json()["status"] == ready.json()["status"] == "healthy"
    assert ready.json()["services"] == {"database": "connected"}


@pytest.mark.usefixtures("database_down")
def test_database_down(api):
    overall = api.get("/health")
    db = api.get("/health/db")
    ready = api.get("/health/ready")
    live = api.get("/health/live")

    assert overall.status_code == db.status_code == ready.status_code == 503
    assert overall.json()["status"] == "unhealthy"
    assert overall.json()["services"]["database"] == "disconnected"
    assert db.json()["status"] == "unhealthy"
    assert list(db.json()) == ["status", "service", "responseTime", "timestamp"]
    assert ready.json()["services"] == {"database": "disconnected"}
    assert live.status_code == 200  # the process is up: no restart for a database outage
    for response in (overall, db, ready):
        assert response.headers["content-type"].startswith("application/json")


def test_an_unexpected_failure_is_reported_not_raised(api, monkeypatch):
    def check():
        raise RuntimeError("driver bug")

    monkeypatch.setattr(api.um.backends.uow, "check", check)

    response = api.get("/health/db")

    assert response.status_code == 503
    assert "driver bug" not in response.text


def test_redis_configured_but_unreachable(api, monkeypatch):
    """With REDIS_URL set, Redis is probed through the cache."""
    monkeypatch.setattr(api.um.settings, "redis_url", "redis://127.0.0.1:1")
    cache = api.um.backends.cache

    def unreachable(key):
        raise BackendUnavailable("Redis is unavailable.")

    monkeypatch.setattr(cache, "get", unreachable)

    overall = api.get("/health")
    redis = api.get("/health/redis")

    assert overall.status_code == redis.status_code == 503
    assert overall.json()["services"] == {"database": "connected", "redis": "disconnected"}
    assert redis.json()["status"] == "unhealthy"
    monkeypatch.undo()
    monkeypatch.setattr(api.um.settings, "redis_url", "redis://127.0.0.1:1")
    assert api.get("/health").json()["services"]["redis"] == "connected"
