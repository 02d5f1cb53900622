"""The per-request shortcuts of the FastAPI middleware and the observability code keep
the documented behaviour: what the middleware remembers between requests follows the
application's state, the logging context has one variable per request but the same
readings, the memory limiter's tuple is its result, and HTTP durations queued without a
lock all reach the metrics, from several threads."""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import os
import threading
from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.backends.memory import MemoryRateLimiter
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.observability.context import (
    bind_request,
    current_request_id,
    current_user_id,
    request_id_var,
    set_user_id,
    unbind_request,
    user_id_var,
)
from usermgmt.ports import RateLimitResult

needs_prometheus = pytest.mark.skipif(
    importlib.util.find_spec("prometheus_client") is None and os.environ.get("CI") != "true",
    reason='needs prometheus-client: pip install "usermgmt[metrics]"',
)


# --- the logging context ------------------------------------------------------------------------


def test_values_set_outside_a_request_are_hidden_inside_one_and_back_after() -> None:
    def scenario() -> None:
        request_id_var.set("outer-rid")
        set_user_id("outer-user")  # no request bound: the context's own value
        assert (current_request_id(), current_user_id()) == ("outer-rid", "outer-user")

        token = bind_request("rid-1")
        assert (current_request_id(), current_user_id()) == ("rid-1", None)
        set_user_id("inner-user")
        assert current_user_id() == "inner-user"
        inner = bind_request(None)  # nested: the innermost request wins
        assert (current_request_id(), current_user_id()) == (None, None)
        unbind_request(inner)
        assert (current_request_id(), current_user_id()) == ("rid-1", "inner-user")
        unbind_request(token)

        assert (current_request_id(), current_user_id()) == ("outer-rid", "outer-user")
        assert user_id_var.get() == "outer-user"  # the request's caller did not leak

    contextvars.copy_context().run(scenario)
    assert (current_request_id(), current_user_id()) == (None, None)


def test_unbinding_in_another_context_is_refused() -> None:
    """What the Flask adapter relies on (it then binds None): a token of another context."""
    token = contextvars.copy_context().run(bind_request, "elsewhere")
    with pytest.raises(ValueError):
        unbind_request(token)
    assert current_request_id() is None


# --- the memory limiter's tuple -------------------------------------------------------------------


def test_hit_values_are_the_fields_of_hit() -> None:
    clock = FakeClock()
    by_hit, by_values = MemoryRateLimiter(clock), MemoryRateLimiter(clock)
    for step in range(4):
        result = by_hit.hit("k", limit=3, window_seconds=10)
        values = by_values.hit_values("k", 3, 10)
        assert type(result) is RateLimitResult
        assert (result.allowed, result.limit, result.remaining, result.reset_after) == values
        assert values[0] is (step < 3)
        clock.advance(seconds=1)
    clock.advance(seconds=10)
    assert by_values.hit_values("k", 3, 10)[:3] == (True, 3, 2)


# --- what the middleware remembers between requests -----------------------------------------------


def _um(**settings: Any) -> UserManagement:
    return UserManagement.in_memory(Settings.for_tests(**settings), clock=FakeClock())


def _app(um: UserManagement) -> Any:
    from fastapi import FastAPI

    import usermgmt_fastapi

    app = FastAPI()
    usermgmt_fastapi.install(app, um, metrics=False)

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"ping": "pong"}

    return app


def _get(app: Any, path: str = "/ping", client: str = "10.0.0.1") -> tuple[int, dict[bytes, bytes]]:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "scheme": "http", "headers": [], "client": (client, 1234), "query_string": b"",
             "http_version": "1.1", "root_path": "", "app": None}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return start["status"], {bytes(k).lower(): bytes(v) for k, v in start["headers"]}


def test_a_new_usermgmt_in_the_app_state_is_served_from_the_next_request() -> None:
    app = _app(_um(rate_limit_max_requests=100))
    assert _get(app)[1][b"ratelimit-limit"] == b"100"

    app.state.usermgmt = _um(rate_limit_max_requests=1)
    assert _get(app)[1][b"ratelimit-limit"] == b"1"
    assert _get(app)[0] == 429


def test_a_new_state_object_is_followed() -> None:
    from starlette.datastructures import State

    app = _app(_um(rate_limit_max_requests=100))
    assert _get(app)[1][b"ratelimit-limit"] == b"100"

    app.state = State({"usermgmt": _um(rate_limit_max_requests=1)})
    assert _get(app)[1][b"ratelimit-limit"] == b"1"


def test_a_new_rate_limiter_or_new_settings_apply_from_the_next_request() -> None:
    um = _um(rate_limit_max_requests=2)
    app = _app(um)
    assert [_get(app)[0] for _ in range(3)] == [200, 200, 429]

    um.backends.rate_limiter = MemoryRateLimiter(um.clock)  # a fresh budget
    assert _get(app)[1][b"ratelimit-remaining"] == b"1"

    um.settings = um.settings.model_copy(update={"rate_limit_enabled": False})
    status, headers = _get(app)
    assert status == 200
    assert b"ratelimit-limit" not in headers


def test_an_overridden_check_request_rate_is_called() -> None:
    """A UserManagement subclass changing the global check is not bypassed by the inline
    check of the in-process limiter."""

    class Strict(UserManagement):
        def check_request_rate(self, client: str | None) -> RateLimitResult | None:
            return RateLimitResult(allowed=False, limit=1, remaining=0, reset_after=5.0)

    um = Strict.in_memory(Settings.for_tests(), clock=FakeClock())
    status, headers = _get(_app(um))
    assert status == 429
    assert headers[b"retry-after"] == b"5"


def test_a_check_request_rate_set_on_the_instance_is_called_from_the_next_request() -> None:
    """As before the inline check: the middleware calls ``um.check_request_rate``, so a
    method set on the instance (a test's monkeypatch) applies from the next request,
    even after requests served by the inline check, and its removal too."""
    um = _um(rate_limit_max_requests=100)
    app = _app(um)
    assert _get(app)[0] == 200

    def refuse(client: str | None) -> RateLimitResult | None:
        return RateLimitResult(allowed=False, limit=1, remaining=0, reset_after=7.0)

    um.check_request_rate = refuse  # type: ignore[method-assign]
    status, headers = _get(app)
    assert (status, headers[b"retry-after"]) == (429, b"7")

    del um.check_request_rate
    assert _get(app)[1][b"ratelimit-remaining"] == b"98"  # the store's count again

    um.client_ip = lambda peer, forwarded_for: "203.0.113.9"  # type: ignore[method-assign]
    assert _get(app)[1][b"ratelimit-remaining"] == b"99"  # another client's budget


# --- HTTP durations queued without a lock -----------------------------------------------------------


def _http_samples(observer: Any) -> dict[tuple[str, str], float]:
    found = {}
    for metric in (observer.http_duration, observer.http_requests):
        for family in metric.collect():  # the metric's own collect: a scrape path too
            for sample in family.samples:
                if sample.labels.get("route") == "/t" and not sample.name.endswith("_created"):
                    found[(sample.name, sample.labels.get("le", ""))] = sample.value
    return found


@needs_prometheus
def test_durations_from_several_threads_all_reach_the_metrics() -> None:
    from usermgmt.observability.metrics import PrometheusObserver

    observer = PrometheusObserver()
    threads, each = 8, 1500  # more than the queue holds: batches added while others append
    barrier = threading.Barrier(threads)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(each):
            observer.observe_http("GET", "/t", 200, 0.001 if (i + n) % 2 else 0.3)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    samples = _http_samples(observer)
    total = threads * each
    assert samples[("http_requests_total", "")] == total
    assert samples[("http_request_duration_seconds_count", "")] == total
    assert samples[("http_request_duration_seconds_bucket", "0.005")] == total / 2
    assert samples[("http_request_duration_seconds_bucket", "0.5")] == total
    assert samples[("http_request_duration_seconds_sum", "")] == pytest.approx(total / 2 * 0.301)
    # a second reading adds nothing: the queue was emptied
    assert _http_samples(observer) == samples


@needs_prometheus
def test_a_full_queue_is_added_without_a_scrape() -> None:
    from usermgmt.observability.metrics import PrometheusObserver

    observer = PrometheusObserver()
    for _ in range(1024):
        observer.observe_http("GET", "/t", 200, 0.01)
    child = observer.http_requests.labels("GET", "/t", "200")
    # read the value itself (no collect, so nothing is drained by the reading)
    assert child._value.get() == 1024
