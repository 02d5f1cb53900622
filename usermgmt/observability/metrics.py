"""Prometheus metrics, served at ``/metrics`` by both web adapters.

Needs ``prometheus-client`` (the ``metrics`` extra, which the ``fastapi`` and ``flask``
extras include); it is imported the first time metrics are used, never by
``import usermgmt``. Without it ``um.metrics`` raises
:class:`~usermgmt.errors.MissingDependency` and ``/metrics`` answers **503** with a
``missing_dependency`` problem document: a scrape that fails is noticed (the target is
down in Prometheus), an empty page would not be.

Metrics (no prefix, the deployment guide's list):

========================================  =========  ==================================
name                                      type       labels
========================================  =========  ==================================
``http_request_duration_seconds``         histogram  ``method``, ``route``, ``status``
``http_requests_total``                   counter    ``method``, ``route``, ``status``
``db_query_duration_seconds``             histogram  ``operation`` (SELECT, INSERT,
                                                     UPDATE, DELETE, OTHER)
``redis_operation_duration_seconds``      histogram  ``command``
``queue_job_duration_seconds``            histogram  ``queue``, ``task``, ``outcome``
                                                     (success, retry, failure)
``active_sessions``                       gauge      (none)
``user_logins_total``                     counter    ``result`` (success, failure,
                                                     locked, reset_required, unverified)
``backend_degradations_total``            counter    ``backend``, ``kind``
========================================  =========  ==================================

``route`` is the route *template* (``/users/{user_id}``, on Flask too), or
``<unmatched>`` for a path no route serves, so that the number of series stays bounded
whatever clients send. Every label value comes from a closed set or from code.

Where the numbers come from: the adapters' middleware (HTTP), SQLAlchemy engine events
(every statement of the SQL backend), the Redis backends and the in-process queue
(through :mod:`usermgmt.observability.hooks`), the login service (``on_login``).
``active_sessions`` is not kept in memory: it is counted in the database
(``sessions.count_active(now)``) when Prometheus scrapes, so it is right whatever
process created or revoked the sessions.

HTTP requests are counted without a lock per request: each duration waits in a queue
of its label set, added to the histogram and the counter in one batch when they are
collected (a scrape, any way of collecting them) or every 1024 requests of one label
set, so every reading shows every request finished before it. In multiprocess mode
they are written at once (other workers' scrapes read the files).

The instruments exist once per process (the first :class:`Metrics` creates them and
installs them as the hooks' observer); ``um.metrics`` binds them to one
UserManagement for the scrape-time gauge and the exposition.

**Several worker processes** (gunicorn, ``uvicorn --workers``): each process counts
for itself, so a scrape answered by one worker would show its share only. Set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory, writable by every worker, before
the server starts (prometheus-client's multiprocess mode): every worker then writes
its samples there and ``/metrics`` merges them (``MultiProcessCollector``), whichever
worker answers. Empty the directory at each deployment, and let gunicorn tell
prometheus-client when a worker exits, in ``gunicorn.conf.py``::

    from usermgmt.observability.metrics import child_exit   # noqa: F401 (gunicorn hook)

(see ``examples/gunicorn_conf.py``). ``active_sessions`` needs no merging: the worker
that answers the scrape counts the database's sessions. The ``process_*`` and
``python_*`` metrics are only exported in single-process mode (prometheus-client's
rule).

``/metrics`` is not rate-limited and needs no token, like ``/health``: keep it off the
public internet (serve it on an internal port or deny it at the reverse proxy).
"""

from __future__ import annotations

import bisect
import importlib
import importlib.util
import logging
import math
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from usermgmt.errors import MissingDependency
from usermgmt.observability import hooks

if TYPE_CHECKING:
    from usermgmt.app import UserManagement
    from usermgmt.http import ProblemReply

__all__ = [
    "DB_OPERATIONS",
    "LOGIN_RESULTS",
    "MULTIPROC_ENV",
    "UNMATCHED_ROUTE",
    "Metrics",
    "PrometheusObserver",
    "available",
    "child_exit",
    "enable",
    "multiprocess_dir",
    "registry",
    "scrape",
]

logger = logging.getLogger("usermgmt.metrics")

#: The environment variable of prometheus-client's multiprocess mode.
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: The ``route`` label of requests no route matched.
UNMATCHED_ROUTE: Final = "<unmatched>"

HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DB_OPERATIONS: Final = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"})
LOGIN_RESULTS: Final = frozenset({"success", "failure", "locked", "reset_required", "unverified"})
JOB_OUTCOMES: Final = frozenset({"success", "retry", "failure"})

HTTP_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DB_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
REDIS_BUCKETS: Final = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
JOB_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

#: At most this many (method, route, status) children are remembered by observe_http.
_MAX_CACHED_CHILDREN: Final = 4096

_LABEL_VALUE: Final = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")


def available() -> bool:
    """Whether prometheus-client is installed."""
    return importlib.util.find_spec("prometheus_client") is not None


def multiprocess_dir() -> str | None:
    """The multiprocess directory prometheus-client uses, if any (its own variable)."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


def _client() -> Any:
    if not available():
        raise MissingDependency("prometheus-client", "metrics")
    return importlib.import_module("prometheus_client")


def _bounded(value: str, allowed: frozenset[str], other: str) -> str:
    return value if value in allowed else other


def _safe(value: str) -> str:
    """A label value from code (queue, task, command, backend): kept short and plain."""
    return value if _LABEL_VALUE.fullmatch(value) else "other"


#: What records one HTTP request of given labels (see PrometheusObserver._http_recorder):
#: the children's values (sum, buckets, bucket bounds, counter) and the durations not yet
#: added to them (None in multiprocess mode), or a function calling the public methods.
_HttpValues = tuple[Any, list[Any], tuple[float, ...], Any, "deque[float] | None"]
_HttpRecorder = _HttpValues | Callable[[float], None]
#: Durations waiting for one child before they are added to its values (a scrape adds
#: them all first).
_PENDING_LIMIT: Final = 1024


class PrometheusObserver:
    """The instruments of one process; the :mod:`~usermgmt.observability.hooks` observer."""

    def __init__(self) -> None:
        prometheus = _client()
        self.multiprocess = multiprocess_dir() is not None
        # In multiprocess mode the samples go to files and the scrape reads them all:
        # registering the instruments anywhere would export this process's twice.
        self.registry: Any = None if self.multiprocess else prometheus.CollectorRegistry()
        reg = self.registry
        labels = ("method", "route", "status")
        self.http_duration = prometheus.Histogram(
            "http_request_duration_seconds",
            "HTTP request duration, by route template and status.",
            labels,
            buckets=HTTP_BUCKETS,
            registry=reg,
        )
        self.http_requests = prometheus.Counter(
            "http_requests_total",
            "HTTP requests served, by route template and status.",
            labels,
            registry=reg,
        )
        self.db_duration = prometheus.Histogram(
            "db_query_duration_seconds",
            "SQL statement duration, by operation.",
            ("operation",),
            buckets=DB_BUCKETS,
            registry=reg,
        )
        self.redis_duration = prometheus.Histogram(
            "redis_operation_duration_seconds",
            "Redis command duration (failed ones included), by command.",
            ("command",),
            buckets=REDIS_BUCKETS,
            registry=reg,
        )
        self.job_duration = prometheus.Histogram(
            "queue_job_duration_seconds",
            "Queued job attempt duration, by queue, task and outcome.",
            ("queue", "task", "outcome"),
            buckets=JOB_BUCKETS,
            registry=reg,
        )
        self.logins = prometheus.Counter(
            "user_logins_total",
            "Password logins, by result.",
            ("result",),
            registry=reg,
        )
        self.degradations = prometheus.Counter(
            "backend_degradations_total",
            "Fallbacks taken because a backend failed, by backend and kind.",
            ("backend", "kind"),
            registry=reg,
        )
        if reg is not None:
            prometheus.ProcessCollector(registry=reg)
            prometheus.PlatformCollector(registry=reg)
            prometheus.GCCollector(registry=reg)
        self._http_children: dict[tuple[str, str, int], _HttpRecorder] = {}
        #: One recorder per label set, never forgotten (its pending durations with it).
        self._http_recorders: dict[tuple[str, str, str], _HttpRecorder] = {}
        self._drain_lock = threading.Lock()
        if not self.multiprocess:
            # A scrape (any path: registry, restricted registry, the metric's own
            # collect) first adds the durations still pending.
            for metric in (self.http_duration, self.http_requests):
                metric.collect = self._draining(metric.collect)
        self._db_children: dict[str, Any] = {}
        for result in LOGIN_RESULTS:  # every result shows from the start, at 0
            self.logins.labels(result)

    # --- the Observer protocol -------------------------------------------------------------

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        # labels() is a lock, a validation and a dict look-up per call: the children of
        # each (method, route, status) are kept here (a bounded set: routes are templates).
        recorder = self._http_children.get((method, route, status))
        if recorder is None:
            recorder = self._http_child(method, route, status)
        if type(recorder) is tuple:
            pending = recorder[4]
            if pending is not None:
                # One process: the duration waits in the child's queue (an append is
                # atomic: no lock per request) until a scrape or a full queue adds the
                # batch to the values, with their locks, as observe() and inc() would.
                pending.append(seconds)
                if len(pending) >= _PENDING_LIMIT:
                    self._drain(recorder)
                return
            # Multiprocess mode: straight into the values (the files other workers'
            # scrapes read), what Histogram.observe and Counter.inc do minus their checks.
            total, buckets, bounds, count, _ = recorder
            total.inc(seconds)
            if seconds == seconds:  # a nan is in no bucket (observe: nan <= bound is false)
                buckets[bisect.bisect_left(bounds, seconds)].inc(1)
            count.inc(1)
        else:
            recorder(seconds)  # type: ignore[operator]

    def _http_child(self, method: str, route: str, status: int) -> _HttpRecorder:
        labels = (_bounded(method.upper(), HTTP_METHODS, "OTHER"), route, str(status))
        recorder = self._http_recorders.get(labels)
        if recorder is None:
            recorder = self._http_recorders.setdefault(labels, self._http_recorder(*labels))
        if len(self._http_children) >= _MAX_CACHED_CHILDREN:
            self._http_children.clear()
        self._http_children[(method, route, status)] = recorder
        return recorder

    def _draining(self, collect: Callable[[], Any]) -> Callable[[], Any]:
        def draining_collect() -> Any:
            self.drain_http()
            return collect()

        return draining_collect

    def drain_http(self) -> None:
        """Add the HTTP durations still pending to the metrics' values (a scrape does)."""
        for recorder in list(self._http_recorders.values()):
            if type(recorder) is tuple and recorder[4]:
                self._drain(recorder)

    def _drain(self, recorder: _HttpValues) -> None:
        total, buckets, bounds, count, pending = recorder
        if pending is None:
            return
        with self._drain_lock:  # one batch at a time: the values' order is the queue's
            batch = [pending.popleft() for _ in range(len(pending))]
            if not batch:
                return
            counts = [0] * len(buckets)
            bisect_left = bisect.bisect_left
            for seconds in batch:
                if seconds == seconds:  # a nan is in no bucket (nan <= bound is false)
                    counts[bisect_left(bounds, seconds)] += 1
            total.inc(sum(batch))
            for bucket, hits in zip(buckets, counts, strict=True):
                if hits:
                    bucket.inc(hits)
            count.inc(len(batch))

    def _http_recorder(self, method: str, route: str, status: str) -> _HttpRecorder:
        """How to record one request of these labels: the children's values (sum,
        buckets, bucket bounds, counter) and a queue of pending durations (none in
        multiprocess mode) when prometheus-client has them as expected, else a function
        calling the children's public methods."""
        duration = self.http_duration.labels(method, route, status)
        requests = self.http_requests.labels(method, route, status)
        total = getattr(duration, "_sum", None)
        buckets: list[Any] = list(getattr(duration, "_buckets", ()))
        bounds: tuple[float, ...] = tuple(getattr(duration, "_upper_bounds", ()))
        count = getattr(requests, "_value", None)
        values = [total, count, *buckets]
        if (
            buckets
            and bounds
            and len(buckets) == len(bounds)
            and bounds[-1] == math.inf
            and list(bounds) == sorted(bounds)
            and all(callable(getattr(value, "inc", None)) for value in values)
        ):
            return total, buckets, bounds, count, None if self.multiprocess else deque()

        def record(seconds: float) -> None:
            duration.observe(seconds)
            requests.inc()

        return record

    def observe_db(self, operation: str, seconds: float) -> None:
        child = self._db_children.get(operation)
        if child is None:
            child = self.db_duration.labels(_bounded(operation, DB_OPERATIONS, "OTHER"))
            if len(self._db_children) < _MAX_CACHED_CHILDREN:
                self._db_children[operation] = child
        child.observe(seconds)

    def observe_redis(self, command: str, seconds: float) -> None:
        self.redis_duration.labels(_safe(command.upper())).observe(seconds)

    def observe_job(self, queue: str, task: str, outcome: str, seconds: float) -> None:
        self.job_duration.labels(
            _safe(queue), _safe(task), _bounded(outcome, JOB_OUTCOMES, "failure")
        ).observe(seconds)

    def count_login(self, result: str) -> None:
        self.logins.labels(_bounded(result, LOGIN_RESULTS, "other")).inc()

    def count_degradation(self, backend: str, kind: str) -> None:
        self.degradations.labels(_safe(backend), _safe(kind)).inc()


_observer: PrometheusObserver | None = None
_lock = threading.Lock()


def enable() -> PrometheusObserver:
    """Create this process's instruments (once) and install them as the hooks'
    observer. Raises MissingDependency without prometheus-client."""
    global _observer
    with _lock:
        if _observer is None:
            _observer = PrometheusObserver()
        hooks.install(_observer)
        return _observer


def registry() -> Any:
    """The ``CollectorRegistry`` of usermgmt's metrics, for an application that wants
    its own metrics on the same ``/metrics`` page (None in multiprocess mode, where
    every metric of every worker is collected from the directory anyway)."""
    return enable().registry


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook: tell prometheus-client a worker is gone."""
    if multiprocess_dir() is not None and available():
        multiprocess = importlib.import_module("prometheus_client.multiprocess")
        multiprocess.mark_process_dead(worker.pid)


class _Forward:
    """A collector yielding another registry's metrics (the process's instruments)."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        yield from self._source.collect()


class _ActiveSessions:
    """``active_sessions``, counted in the database at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        count = self._metrics.active_sessions()
        if count is None:
            return
        core = importlib.import_module("prometheus_client.core")
        family = core.GaugeMetricFamily(
            "active_sessions", "Sessions neither revoked nor expired.", value=count
        )
        yield family


class Metrics:
    """The metrics of one :class:`~usermgmt.UserManagement` (``um.metrics``).

    Creating it enables the process's instruments (:func:`enable`); :meth:`render` is
    what ``/metrics`` serves. Raises MissingDependency without prometheus-client.
    """

    def __init__(self, um: UserManagement) -> None:
        self._um = um
        self.observer = enable()

    @property
    def multiprocess(self) -> bool:
        """Whether samples are merged from ``PROMETHEUS_MULTIPROC_DIR``."""
        return self.observer.multiprocess

    def active_sessions(self) -> int | None:
        """Sessions neither revoked nor expired, now; None if the database fails
        (logged: the scrape then goes on without the gauge)."""
        um = self._um
        try:
            return um.kernel.read(
                lambda uow: uow.sessions.count_active(um.clock.now()), replica=True
            )
        except Exception as exc:  # a scrape must answer whatever the database does
            logger.warning("active_sessions not collected: %s", type(exc).__name__)
            return None

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for a scrape with this ``Accept`` header: (body, content type).

        Prometheus text format, or OpenMetrics when the scraper asks for it.
        """
        prometheus = _client()
        exposition = importlib.import_module("prometheus_client.exposition")
        scrape = prometheus.CollectorRegistry(auto_describe=False)
        if self.multiprocess:
            multiprocess = importlib.import_module("prometheus_client.multiprocess")
            multiprocess.MultiProcessCollector(scrape)
        else:
            scrape.register(_Forward(self.observer.registry))
        scrape.register(_ActiveSessions(self))
        encoder, content_type = exposition.choose_encoder(accept or "")
        body: bytes = encoder(scrape)
        return body, str(content_type)


def scrape(
    um: UserManagement, accept: str | None, *, instance: str, request_id: str | None
) -> tuple[bytes, str] | ProblemReply:
    """What ``GET /metrics`` answers, for both adapters: ``(body, content type)``, or a
    :class:`~usermgmt.http.ProblemReply` (503 ``missing_dependency``) without
    prometheus-client."""
    from usermgmt import http

    try:
        body, content_type = um.metrics.render(accept)
    except MissingDependency as exc:
        return http.problem(
            503,
            exc.code,
            title=exc.title,
            detail=exc.detail,
            instance=instance,
            request_id=request_id,
        )
    return body, content_type
