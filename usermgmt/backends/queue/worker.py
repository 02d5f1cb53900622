"""``usermgmt worker [email|audit-archive|all]``: an RQ worker for usermgmt's queues.

One process runs the jobs of the named queues one at a time, in the process itself
(RQ's ``SimpleWorker``: the :class:`~usermgmt.UserManagement`, its database pool and
the metrics are built once, not per job), with RQ's scheduler beside it, which moves
retries whose delay has passed back onto their queue (one scheduler per queue is
active at a time, whatever the number of workers).

* **Graceful shutdown.** SIGTERM (or SIGINT) lets the current job finish, then the
  worker deregisters and exits 0; a second signal stops it at once (cold shutdown: the
  next worker's registry cleanup retries the interrupted job if it has retries left,
  else moves it to the failed registry; a mail may then go out twice).
* **The application's tasks.** ``--app module:attribute`` names the application's
  UserManagement, or a function returning it, so the worker runs the tasks the
  application registered (``um.register_task``); without it the worker builds
  ``UserManagement.from_env()``.
* **Metrics.** Each job attempt is observed into ``queue_job_duration_seconds``. With
  ``PROMETHEUS_MULTIPROC_DIR`` (shared with the API processes on the same host) the
  API's ``/metrics`` shows them; ``--metrics-port`` serves the worker's own page.
* **Logs** go through :func:`usermgmt.configure_logging` (``LOG_LEVEL``,
  ``LOG_FORMAT``); job arguments (mail with single-use links) are never logged.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from usermgmt.backends.queue import QUEUES
from usermgmt.errors import ConfigurationError

if TYPE_CHECKING:
    from usermgmt.app import UserManagement
    from usermgmt.config import Settings

__all__ = ["load_app", "queue_names", "run_worker"]

logger = logging.getLogger("usermgmt.queue")


def queue_names(which: str) -> list[str]:
    """``email``, ``audit-archive`` or ``all`` → the RQ queue names."""
    if which == "all":
        return list(QUEUES)
    if which not in QUEUES:
        raise ConfigurationError(f"unknown queue {which!r}: choose {', '.join(QUEUES)} or all")
    return [which]


def load_app(spec: str | None, settings: Settings) -> UserManagement:
    """The UserManagement ``module:attribute`` names (an instance, or a callable taking no
    argument that returns one); ``UserManagement(settings)`` without ``spec``."""
    from usermgmt.app import UserManagement

    if not spec:
        return UserManagement(settings)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app {spec!r}: expected module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"--app {spec!r}: cannot import {module_name} ({exc})") from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(f"--app {spec!r}: {module_name} has no {attribute}") from None
    if not isinstance(target, UserManagement) and callable(target):
        target = target()
    if not isinstance(target, UserManagement):
        raise ConfigurationError(f"--app {spec!r} is not a UserManagement")
    return target


class _NoJobArguments(logging.Filter):
    """RQ attaches a failed job's arguments to its log record: drop them (they hold mail)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in ("arguments", "kwargs"):
            if hasattr(record, name):
                setattr(record, name, "[omitted]")
        return True


def _serve_metrics(port: int, address: str) -> None:
    from usermgmt.observability import metrics

    observer = metrics.enable()
    prometheus = importlib.import_module("prometheus_client")
    if observer.multiprocess:
        multiprocess = importlib.import_module("prometheus_client.multiprocess")
        registry = prometheus.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = observer.registry
    prometheus.start_http_server(port, addr=address, registry=registry)
    logger.info("worker metrics on http://%s:%d/metrics", address, port)


def run_worker(
    settings: Settings,
    which: str,
    *,
    app: str | None = None,
    burst: bool = False,
    metrics_port: int | None = None,
    metrics_address: str = "0.0.0.0",  # noqa: S104 - a scrape target in a pod or on a host
    configure_logs: bool = True,
) -> int:
    """Serve the queues until SIGTERM (or, with ``burst``, until they are empty);
    returns the exit status (0). Raises ConfigurationError (a Cluster, a bad ``--app``)
    and BackendUnavailable (Redis unreachable at start)."""
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    from usermgmt.backends.queue import jobs
    from usermgmt.backends.queue.rq import (
        check_standalone,
        close_client,
        make_client,
        queue_url,
        redact,
    )
    from usermgmt.errors import BackendUnavailable
    from usermgmt.observability import metrics
    from usermgmt.observability.logging import configure_logging

    # A SIGTERM before RQ installs its handlers (while the application is built) must
    # still stop the worker gracefully, not kill it.
    early_stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: early_stop.set())

    class Worker(SimpleWorker):
        def _install_signal_handlers(self) -> None:
            super()._install_signal_handlers()  # type: ignore[no-untyped-call]
            if early_stop.is_set():
                self._stop_requested = True  # the work loop stops before taking a job

    names = queue_names(which)
    url = queue_url(settings)
    description = f"the queue Redis at {redact(url)}"
    client = make_client(url, socket_timeout=5.0)
    try:
        check_standalone(client, description)
    except ConfigurationError:
        close_client(client)
        raise
    except Exception as exc:
        close_client(client)
        raise BackendUnavailable(f"cannot reach {description}") from exc
    try:
        um = load_app(app, settings)  # a bad --app fails before anything is configured
    except BaseException:
        close_client(client)
        raise
    try:
        if configure_logs:
            configure_logging(settings, capture=("rq.worker", "rq.job", "rq.scheduler"))
        for name in ("rq.worker", "rq.job", "rq.scheduler"):
            logging.getLogger(name).addFilter(_NoJobArguments())
        jobs.install(um)
        if metrics.available():
            metrics.enable()
            if metrics_port is not None:
                _serve_metrics(metrics_port, metrics_address)
        elif metrics_port is not None:
            raise ConfigurationError("--metrics-port needs prometheus-client (usermgmt[metrics])")

        worker = Worker(
            names,
            connection=client,
            serializer=JSONSerializer,
            worker_ttl=settings.queue_worker_ttl_seconds,
            log_job_description=False,
        )
        logger.info(
            "worker %s (pid %d) serving %s on %s", worker.name, os.getpid(), names, description
        )
        worker.work(burst=burst, with_scheduler=True, logging_level=_rq_level(settings))
    finally:
        um.close()
        close_client(client)
    logger.info("worker %s stopped", worker.name)
    return 0


def _rq_level(settings: Settings) -> str:
    return "WARNING" if settings.log_level in ("warning", "error", "critical") else "INFO"


def describe_queues(settings: Settings, names: Sequence[str]) -> list[str]:
    """One line per queue: waiting, scheduled, running and failed jobs, workers alive."""
    from usermgmt.backends.queue.rq import build

    queue = build(settings, socket_timeout=5.0)
    try:
        lines = []
        for name in names:
            s = queue.stats(name)
            lines.append(
                f"{name}: {s.backlog} waiting, {s.scheduled} scheduled, {s.started} running, "
                f"{s.failed} failed, {s.workers} worker(s) alive"
            )
        return lines
    finally:
        queue.close()
