"""``GET /metrics`` on both adapters: route templates (never raw paths), login results,
active sessions, queue jobs, SQL statements, Redis hooks; content negotiation; what
happens without prometheus-client.

The instruments are per process (as Prometheus counts), so counters are compared
before and after the requests under test; ``active_sessions`` is counted in the
test's own UserManagement at scrape time, so it is compared exactly.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.config import Settings
from usermgmt.observability import hooks
from usermgmt.observability import metrics as metrics_module
from usermgmt.testing import create_user

# Under CI a missing prometheus-client fails these tests, never skips them.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("prometheus_client") is None and os.environ.get("CI") != "true",
    reason='needs prometheus-client: pip install "usermgmt[metrics]"',
)

PASSWORD = "correct horse battery staple"
Labels = frozenset[tuple[str, str]]


class Scrape:
    """One exposition, parsed: ``value(name, **labels)`` is a sample's value (0 if absent)."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.text = text
        self.samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(labels)[label] for (sample, labels) in self.samples if sample == name}

    def has(self, name: str) -> bool:
        return any(key[0] == name for key in self.samples)


def scrape(api: Any, **kw: Any) -> Scrape:
    response = api.get("/metrics", **kw)
    assert response.status_code == 200, response.text
    assert response.media_type == "text/plain"
    assert response.headers["cache-control"] == "no-store"
    return Scrape(response.text)


def requests_total(s: Scrape, method: str, route: str, status: int) -> float:
    return s.value("http_requests_total", method=method, route=route, status=str(status))


# --- HTTP ------------------------------------------------------------------------------------------


def test_requests_are_counted_by_route_template_not_raw_path(api):
    account = api.account()
    other = api.account()
    missing = str(uuid.uuid4())
    before = scrape(api)

    api.get(f"/users/{other.id}", token=account.token)
    api.get(f"/users/{missing}", token=account.token)
    api.get(f"/users/{missing}")
    api.get("/users/me", token=account.token)
    api.get(f"/no/such/{missing}")
    api.delete("/users/me/organizations", token=account.token)  # a wrong method
    after = scrape(api)

    template = "/users/{user_id}"
    statuses = {
        status: requests_total(after, "GET", template, status)
        - requests_total(before, "GET", template, status)
        for status in (200, 401, 403, 404)
    }
    assert sum(statuses.values()) == 3
    assert statuses[401] == 1
    assert (
        requests_total(after, "GET", "/users/me", 200)
        - requests_total(before, "GET", "/users/me", 200)
        == 1
    )
    unmatched = requests_total(after, "GET", "<unmatched>", 404) - requests_total(
        before, "GET", "<unmatched>", 404
    )
    assert unmatched == 1
    wrong_method = requests_total(after, "DELETE", "/users/me/organizations", 405)
    assert wrong_method - requests_total(before, "DELETE", "/users/me/organizations", 405) == 1
    # the histogram counts the same requests
    count = after.value(
        "http_request_duration_seconds_count", method="GET", route="/users/me", status="200"
    )
    assert count == requests_total(after, "GET", "/users/me", 200)
    # no raw path (no id) ever becomes a label value
    routes = after.label_values("http_requests_total", "route")
    assert not any(missing in route or other.id in route for route in routes)
    assert template in routes
    assert missing not in after.text
    assert other.id not in after.text


def test_refused_requests_are_counted_under_their_route(api_factory):
    api = api_factory(rate_limit_max_requests=2)
    before = scrape(api)
    statuses = [api.post("/auth/login", json={}).status_code for _ in range(3)]
    after = scrape(api)

    assert statuses == [422, 422, 429]
    for status in (422, 429):
        added = requests_total(after, "POST", "/auth/login", status) - requests_total(
            before, "POST", "/auth/login", status
        )
        assert added == statuses.count(status)


def test_metrics_are_exempt_from_the_global_rate_limit(api_factory):
    api = api_factory(rate_limit_max_requests=1)
    for _ in range(4):
        response = api.get("/metrics")
        assert response.status_code == 200
        assert "ratelimit-remaining" not in response.headers


def test_openmetrics_when_the_scraper_asks_for_it(api):
    response = api.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )

    assert response.status_code == 200
    assert response.media_type == "application/openmetrics-text"
    assert response.text.rstrip().endswith("# EOF")


def test_every_metric_of_the_deployment_guide_is_exported(api):
    api.post("/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
    hooks.observe_db("SELECT", 0.001)
    hooks.observe_redis("GET", 0.0005)
    hooks.observe_job("email", "email.send", "success", 0.01)
    hooks.count_degradation("redis", "rate_limiter")
    text = scrape(api).text

    for line in (
        "# TYPE http_request_duration_seconds histogram",
        "# TYPE http_requests_total counter",
        "# TYPE db_query_duration_seconds histogram",
        "# TYPE redis_operation_duration_seconds histogram",
        "# TYPE queue_job_duration_seconds histogram",
        "# TYPE active_sessions gauge",
        "# TYPE user_logins_total counter",
        "# TYPE backend_degradations_total counter",
    ):
        assert line in text


# --- logins and sessions ---------------------------------------------------------------------


def _logins(s: Scrape, result: str) -> float:
    return s.value("user_logins_total", result=result)


def test_login_results_are_counted(api_factory):
    api = api_factory(login_max_failures=2)
    account = api.account()
    before = scrape(api)

    assert api.post("/auth/login", json={"email": account.email, "password": PASSWORD + "x"}).status_code == 401  # fmt: skip
    assert api.post("/auth/login", json={"email": account.email, "password": account.password}).status_code == 200  # fmt: skip
    for _ in range(3):
        api.post("/auth/login", json={"email": account.email, "password": "wrong " + PASSWORD})
    after = scrape(api)

    assert _logins(after, "success") - _logins(before, "success") == 1
    assert _logins(after, "failure") - _logins(before, "failure") == 3
    assert _logins(after, "locked") - _logins(before, "locked") == 1
    for result in ("success", "failure", "locked", "reset_required", "unverified"):
        assert ("user_logins_total", frozenset({("result", result)})) in after.samples


def test_unverified_logins_are_counted(api_factory):
    api = api_factory(require_verified_email=True)
    user, password = create_user(api.um, "late@example.com", verified=False)
    before = scrape(api)

    response = api.post("/auth/login", json={"email": user.email, "password": password})
    after = scrape(api)

    assert response.status_code == 403
    assert _logins(after, "unverified") - _logins(before, "unverified") == 1


def test_active_sessions_follow_logins_and_logouts(api):
    assert scrape(api).value("active_sessions") == 0
    first = api.account()  # one session
    second = api.account()
    assert scrape(api).value("active_sessions") == 2

    login = api.post("/auth/login", json={"email": first.email, "password": first.password})
    assert login.status_code == 200
    assert scrape(api).value("active_sessions") == 3

    assert api.post("/auth/logout", token=first.token).status_code == 204
    assert scrape(api).value("active_sessions") == 2
    assert api.post("/auth/logout-all", token=second.token).status_code == 204
    assert scrape(api).value("active_sessions") == 1

    api.clock.advance(seconds=api.um.settings.refresh_token_ttl_seconds + 1)
    assert scrape(api).value("active_sessions") == 0


def test_a_failing_database_leaves_active_sessions_out(api, monkeypatch):
    def broken(**_: Any) -> Any:
        raise RuntimeError("database down")

    monkeypatch.setattr(api.um.kernel, "uow", broken)
    s = scrape(api)

    assert not s.has("active_sessions")
    assert s.has("http_requests_total")


# --- queue, SQL, Redis -----------------------------------------------------------------------


def test_queue_jobs_are_timed(api):
    before = scrape(api)
    response = api.post("/auth/register", json={"email": "new@example.com", "password": PASSWORD})
    after = scrape(api)

    assert response.status_code in (201, 202)
    labels = {"queue": "email", "task": "email.send", "outcome": "success"}
    added = after.value("queue_job_duration_seconds_count", **labels) - before.value(
        "queue_job_duration_seconds_count", **labels
    )
    assert added == 1


def test_sql_statements_are_timed_by_operation(tmp_path: Path):
    from usermgmt.backends.sqlalchemy import migrate

    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    migrate.upgrade(url)
    um = UserManagement(Settings.for_tests(database_url=url))
    try:
        before = Scrape(um.metrics.render()[0].decode())
        um.seed()
        um.users.register("sql@example.com", PASSWORD)
        um.auth.login("sql@example.com", PASSWORD)
        after = Scrape(um.metrics.render()[0].decode())
    finally:
        um.close()

    for operation in ("SELECT", "INSERT", "UPDATE"):
        added = after.value("db_query_duration_seconds_count", operation=operation) - before.value(
            "db_query_duration_seconds_count", operation=operation
        )
        assert added >= 1, operation
    assert after.label_values("db_query_duration_seconds_count", "operation") <= {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "OTHER",
    }
    assert after.value("active_sessions") == 1


def test_redis_operations_and_degradations_reach_the_metrics(api):
    before = scrape(api)
    hooks.observe_redis("evalsha", 0.002)
    hooks.count_degradation("redis", "cache")
    hooks.count_degradation("redis", "cache")
    hooks.observe_redis("not a command\n", 0.001)  # never a label as sent
    after = scrape(api)

    count = "redis_operation_duration_seconds_count"
    assert after.value(count, command="EVALSHA") - before.value(count, command="EVALSHA") == 1
    assert after.value(count, command="other") - before.value(count, command="other") == 1
    added = after.value("backend_degradations_total", backend="redis", kind="cache") - (
        before.value("backend_degradations_total", backend="redis", kind="cache")
    )
    assert added == 2


# --- without prometheus-client -------------------------------------------------------------------


@pytest.fixture
def no_prometheus(monkeypatch) -> None:
    monkeypatch.setattr(metrics_module, "available", lambda: False)


def test_without_prometheus_client_metrics_answer_503(api, no_prometheus):
    response = api.get("/metrics")

    assert response.status_code == 503
    problem = response.json()
    assert problem["code"] == "missing_dependency"
    assert "usermgmt[metrics]" in problem["detail"]
    # the rest of the API is unaffected
    assert api.get("/health").status_code == 200


def test_metrics_can_be_left_out(flask_kit):
    um = flask_kit.um()
    app = flask_kit.app()
    flask_kit.ext.UserMgmt(app, um, metrics=False)
    api = flask_kit.api(app, um)

    assert api.get("/metrics").status_code == 404
