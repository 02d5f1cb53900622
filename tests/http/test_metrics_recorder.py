"""The HTTP metrics are recorded straight into the children's values (no public
``observe``/``inc`` per request): the samples must be exactly those the public API gives,
in one process and in prometheus-client's multiprocess mode."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from usermgmt.observability.metrics import HTTP_BUCKETS, PrometheusObserver

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("prometheus_client") is None and os.environ.get("CI") != "true",
    reason='needs prometheus-client: pip install "usermgmt[metrics]"',
)

#: Bucket edges exactly, just above them, below the first, above the last (+Inf).
DURATIONS = (0.0, 0.0049, 0.005, 0.0051, 0.1, 0.25, 0.2500001, 9.99, 10.0, 10.5, 42.0)


def _samples(registry: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in registry.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_recorded_samples_equal_the_public_apis() -> None:
    import prometheus_client

    observer = PrometheusObserver()  # its own registry (not multiprocess here)
    for seconds in DURATIONS:
        observer.observe_http("get", "/users/{user_id}", 200, seconds)
    observer.observe_http("POST", "/auth/login", 401, 0.02)
    assert isinstance(observer._http_children[("get", "/users/{user_id}", 200)], tuple)

    reference = prometheus_client.CollectorRegistry()
    labels = ("method", "route", "status")
    duration = prometheus_client.Histogram(
        "http_request_duration_seconds", "d", labels, buckets=HTTP_BUCKETS, registry=reference
    )
    requests = prometheus_client.Counter("http_requests_total", "r", labels, registry=reference)
    for seconds in DURATIONS:
        duration.labels("GET", "/users/{user_id}", "200").observe(seconds)
        requests.labels("GET", "/users/{user_id}", "200").inc()
    duration.labels("POST", "/auth/login", "401").observe(0.02)
    requests.labels("POST", "/auth/login", "401").inc()

    ours = {key: value for key, value in _samples(observer.registry).items() if "http_" in key[0]}
    assert ours == _samples(reference)
    count = (
        "http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/users/{user_id}"), ("status", "200")),
    )
    assert ours[count] == len(DURATIONS)


def test_a_nan_duration_is_recorded_as_the_public_api_does() -> None:
    """Histogram.observe(nan) adds to the sum but to no bucket (nan <= bound is false)."""
    import math

    import prometheus_client

    observer = PrometheusObserver()
    observer.observe_http("GET", "/x", 200, 0.02)
    observer.observe_http("GET", "/x", 200, math.nan)
    assert isinstance(observer._http_children[("GET", "/x", 200)], tuple)
    reference = prometheus_client.Histogram(
        "http_request_duration_seconds", "d", buckets=HTTP_BUCKETS,
        registry=prometheus_client.CollectorRegistry(),
    )  # fmt: skip
    reference.observe(0.02)
    reference.observe(math.nan)
    expected = {s.labels.get("le"): s.value for s in reference.collect()[0].samples
                if s.name.endswith(("_bucket", "_count"))}  # fmt: skip
    ours = {
        s.labels.get("le"): s.value
        for family in observer.registry.collect()
        if family.name == "http_request_duration_seconds"
        for s in family.samples
        if s.name.endswith(("_bucket", "_count")) and s.labels.get("route") == "/x"
    }
    assert ours == expected
    assert expected[None] == 1  # the count: the nan is in no bucket


def test_without_the_expected_internals_the_public_methods_are_called() -> None:
    """A prometheus-client keeping a histogram child's bucket values under another name
    (as a later version might): the recorder falls back to observe() and inc()."""
    import prometheus_client

    class Renamed(prometheus_client.Histogram):
        def _metric_init(self) -> None:
            super()._metric_init()
            self._values = self.__dict__.pop("_buckets")

        def _with_buckets(self, call: Any) -> Any:
            self._buckets = self._values
            try:
                return call()
            finally:
                del self._buckets

        def observe(self, amount: float, exemplar: Any = None) -> None:
            self._with_buckets(lambda: super(Renamed, self).observe(amount))

        def _child_samples(self) -> Any:
            return self._with_buckets(lambda: super(Renamed, self)._child_samples())

    observer = PrometheusObserver()
    labels = ("method", "route", "status")
    observer.registry.unregister(observer.http_duration)
    observer.http_duration = Renamed(
        "http_request_duration_seconds", "d", labels, buckets=HTTP_BUCKETS,
        registry=observer.registry,
    )  # fmt: skip
    for seconds in DURATIONS:
        observer.observe_http("GET", "/r", 200, seconds)
    assert not isinstance(observer._http_children[("GET", "/r", 200)], tuple)

    reference = prometheus_client.CollectorRegistry()
    duration = prometheus_client.Histogram(
        "http_request_duration_seconds", "d", labels, buckets=HTTP_BUCKETS, registry=reference
    )
    requests = prometheus_client.Counter("http_requests_total", "r", labels, registry=reference)
    for seconds in DURATIONS:
        duration.labels("GET", "/r", "200").observe(seconds)
        requests.labels("GET", "/r", "200").inc()
    ours = {key: value for key, value in _samples(observer.registry).items() if "http_" in key[0]}
    assert ours == _samples(reference)


_MULTIPROCESS = """
import json, sys
from prometheus_client import CollectorRegistry, multiprocess
from usermgmt.observability.metrics import PrometheusObserver
observer = PrometheusObserver()
assert observer.multiprocess
for seconds in json.loads(sys.argv[1]):
    observer.observe_http("GET", "/hello", 200, seconds)
assert isinstance(observer._http_children[("GET", "/hello", 200)], tuple)  # values, in place
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
out = {}
for family in registry.collect():
    for s in family.samples:
        if s.name.startswith("http_"):
            out[s.name + json.dumps(sorted(s.labels.items()))] = s.value
print(json.dumps(out))
"""


def test_recorded_samples_are_merged_in_multiprocess_mode(tmp_path: Path) -> None:
    """Two worker processes record into the directory; the scrape merges them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first, second = [0.001, 0.005, 0.3], [0.0051, 11.0]
    for durations in (first, second):
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-c", _MULTIPROCESS, json.dumps(durations)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    merged = json.loads(done.stdout)
    labels = json.dumps(sorted({"method": "GET", "route": "/hello", "status": "200"}.items()))
    assert merged["http_requests_total" + labels] == 5
    assert merged["http_request_duration_seconds_count" + labels] == 5
    assert merged["http_request_duration_seconds_sum" + labels] == pytest.approx(
        sum(first) + sum(second)
    )

    def bucket(le: str) -> float:
        key = {"le": le, "method": "GET", "route": "/hello", "status": "200"}
        return float(
            merged["http_request_duration_seconds_bucket" + json.dumps(sorted(key.items()))]
        )

    assert bucket("0.005") == 2  # 0.001 and 0.005 (edges are inclusive)
    assert bucket("0.01") == 3
    assert bucket("0.5") == 4
    assert bucket("10.0") == 4
    assert bucket("+Inf") == 5
