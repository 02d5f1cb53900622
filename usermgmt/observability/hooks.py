"""Where backends report what they measure, without knowing whether anyone listens.

The SQL engine, the Redis backends, the task queue, the login service and the web
adapters call these functions; they do nothing until an :class:`Observer` is installed
(:mod:`usermgmt.observability.metrics` installs the Prometheus one the first time
metrics are used). Importing this module imports nothing but the standard library, and
a call costs one global read when nobody listens.

::

    from usermgmt.observability import hooks

    started = time.perf_counter()
    ...  # one Redis round trip
    hooks.observe_redis("EVALSHA", time.perf_counter() - started)
    hooks.count_degradation("redis", "rate_limiter")   # fell back to the local limiter

An observer must never raise: a failing metric must not fail a request. The functions
below swallow (and log once) whatever an observer raises anyway.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

__all__ = [
    "Observer",
    "active",
    "count_degradation",
    "count_login",
    "install",
    "observe_db",
    "observe_http",
    "observe_job",
    "observe_redis",
    "uninstall",
]

logger = logging.getLogger("usermgmt.observability")


class Observer(Protocol):
    """What receives the measurements (durations in seconds)."""

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None: ...

    def observe_db(self, operation: str, seconds: float) -> None: ...

    def observe_redis(self, command: str, seconds: float) -> None: ...

    def observe_job(self, queue: str, task: str, outcome: str, seconds: float) -> None: ...

    def count_login(self, result: str) -> None: ...

    def count_degradation(self, backend: str, kind: str) -> None: ...


_observer: Observer | None = None
_lock = threading.Lock()
_complained = False


def install(observer: Observer) -> None:
    """Send every later measurement to ``observer`` (replacing any previous one)."""
    global _observer
    with _lock:
        _observer = observer


def uninstall() -> None:
    """Stop sending measurements anywhere (what tests use to reset)."""
    global _observer
    with _lock:
        _observer = None


def active() -> bool:
    """Whether an observer listens: callers may skip measuring when it does not."""
    return _observer is not None


def _failed(exc: Exception) -> None:
    global _complained
    if not _complained:  # once per process: a broken metric must not flood the log
        _complained = True
        logger.warning("a metrics observer raised %s; measurements may be missing", repr(exc))


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    """One HTTP request served: ``route`` is the route *template* (never the raw path)."""
    observer = _observer
    if observer is not None:
        try:
            observer.observe_http(method, route, status, seconds)
        except Exception as exc:
            _failed(exc)


def observe_db(operation: str, seconds: float) -> None:
    """One SQL statement executed: ``operation`` is SELECT, INSERT, UPDATE, DELETE or OTHER."""
    observer = _observer
    if observer is not None:
        try:
            observer.observe_db(operation, seconds)
        except Exception as exc:
            _failed(exc)


def observe_redis(command: str, seconds: float) -> None:
    """One Redis command (or pipeline, or script) executed, successful or not."""
    observer = _observer
    if observer is not None:
        try:
            observer.observe_redis(command, seconds)
        except Exception as exc:
            _failed(exc)


def observe_job(queue: str, task: str, outcome: str, seconds: float) -> None:
    """One attempt of a queued job: ``outcome`` is success, retry or failure."""
    observer = _observer
    if observer is not None:
        try:
            observer.observe_job(queue, task, outcome, seconds)
        except Exception as exc:
            _failed(exc)


def count_login(result: str) -> None:
    """One password login: success, failure, locked, reset_required or unverified."""
    observer = _observer
    if observer is not None:
        try:
            observer.count_login(result)
        except Exception as exc:
            _failed(exc)


def count_degradation(backend: str, kind: str) -> None:
    """One fallback taken because ``backend`` failed (e.g. ``redis``, ``rate_limiter``)."""
    observer = _observer
    if observer is not None:
        try:
            observer.count_degradation(backend, kind)
        except Exception as exc:
            _failed(exc)
