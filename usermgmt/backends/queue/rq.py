"""The task queue on Redis with RQ 3 (``QUEUE_BACKEND=rq``).

:class:`RQQueue` is what the application enqueues on: each job names the registered
task and its payload, and ``usermgmt worker`` (:mod:`usermgmt.backends.queue.worker`)
runs it through :func:`usermgmt.backends.queue.jobs.run`.

* **Redis.** ``QUEUE_REDIS_URL`` (default ``REDIS_URL``) must be a standalone Redis,
  or a Sentinel-managed one (``redis+sentinel://[:password@]h1:p1,h2:p2/SERVICE[/DB]``):
  RQ's multi-key commands do not work on Redis Cluster, so a ``redis+cluster://`` URL,
  or a ``redis://`` URL whose server turns out to be a Cluster node, is refused with a
  :class:`~usermgmt.errors.ConfigurationError`. Jobs are stored with RQ's JSON
  serializer (never pickle).
* **Retries.** A job failing with a transient error (a transient
  :class:`~usermgmt.errors.EmailDeliveryError`, :class:`~usermgmt.errors.BackendUnavailable`)
  is retried ``QUEUE_RETRY_MAX_ATTEMPTS - 1`` times, after the delays of
  ``QUEUE_RETRY_BACKOFF_SECONDS`` (the last one repeating); any other failure is final
  at once. A job that failed for good stays in RQ's ``FailedJobRegistry`` (the
  dead-letter queue) for ``QUEUE_FAILED_TTL_SECONDS``, with its traceback.
* **Redis down while enqueueing.** :meth:`RQQueue.enqueue` never raises and never waits
  longer than one socket timeout (``REDIS_SOCKET_TIMEOUT_SECONDS``): the failure is
  logged and counted (``backend_degradations_total{backend="redis",kind="queue"}``) and
  the job runs in this process instead, on the in-process queue's background thread
  (with the same retry settings), so the HTTP response is the same and the mail still
  leaves (SECURITY.md F8). A job run that way is lost if the process stops first. When
  only Redis's reply timed out, the job runs in-process only if Redis does not confirm
  it holds the job (at least once: it may then run twice). A Cluster node behind a
  ``redis://`` URL is logged as the configuration error it is, at every enqueue.
* **Health.** :meth:`RQQueue.health` reports a queue unhealthy when its backlog or its
  failed jobs reach their thresholds, or when no worker serving it is alive.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from usermgmt.backends.memory.queue import InlineQueue, TaskRunner
from usermgmt.backends.queue import AUDIT_ARCHIVE_QUEUE, EMAIL_QUEUE, QUEUES
from usermgmt.errors import BackendUnavailable, ConfigurationError
from usermgmt.observability import hooks

if TYPE_CHECKING:
    from redis import Redis
    from rq import Queue

    from usermgmt.config import Settings

__all__ = [
    "JOB_FUNCTION",
    "QueueStats",
    "QueueThresholds",
    "RQQueue",
    "build",
    "check_standalone",
    "close_client",
    "make_client",
    "queue_url",
]

logger = logging.getLogger("usermgmt.queue")

#: The function RQ workers import and call with ``(task, payload)``.
JOB_FUNCTION = "usermgmt.backends.queue.jobs.run"

#: How long a finished job is kept, by queue: mail holds single-use links, so it goes
#: at once; an archive run is kept a week (its id, the day, then stays taken).
RESULT_TTL = {EMAIL_QUEUE: 0, AUDIT_ARCHIVE_QUEUE: 7 * 86400}


@dataclass(frozen=True, slots=True)
class QueueThresholds:
    """When a queue counts as unhealthy: ``backlog`` waiting jobs or ``failed`` dead ones."""

    backlog: int
    failed: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue, now: jobs waiting, scheduled (retries waiting for their delay), running,
    failed for good, and the workers alive that serve it."""

    name: str
    backlog: int
    scheduled: int
    started: int
    failed: int
    workers: int

    def problems(self, thresholds: QueueThresholds) -> list[str]:
        """Why the queue is unhealthy (empty when healthy)."""
        found = []
        if self.backlog >= thresholds.backlog:
            found.append(f"{self.backlog} jobs waiting (threshold {thresholds.backlog})")
        if self.failed >= thresholds.failed:
            found.append(f"{self.failed} failed jobs (threshold {thresholds.failed})")
        if self.workers == 0:
            found.append("no worker alive")
        return found


def queue_url(settings: Settings) -> str:
    """The queue Redis URL: ``QUEUE_REDIS_URL``, else ``REDIS_URL`` when it is not a
    Cluster. Raises ConfigurationError for a Cluster URL or none at all."""
    url = settings.queue_redis_url
    name = "QUEUE_REDIS_URL"
    if not url:
        if settings.redis_url and settings.redis_cluster:
            raise ConfigurationError(
                "QUEUE_REDIS_URL is required: REDIS_URL is a Redis Cluster and RQ queues "
                "need a standalone Redis"
            )
        url, name = settings.redis_url, "REDIS_URL"
    if not url:
        raise ConfigurationError("QUEUE_BACKEND=rq needs QUEUE_REDIS_URL or REDIS_URL")
    scheme = urlsplit(url).scheme
    if scheme.endswith("+cluster"):
        raise ConfigurationError(
            f"{name} is a Redis Cluster URL: RQ queues need a standalone Redis "
            "(no Python queue runs on Redis Cluster)"
        )
    if scheme not in ("redis", "rediss", *_SENTINEL_SCHEMES):
        raise ConfigurationError(
            f"{name} must start with redis://, rediss:// or redis+sentinel:// (rediss+sentinel://)"
        )
    if scheme in _SENTINEL_SCHEMES:
        sentinel_parts(url)  # raises ConfigurationError when malformed
    return url


_SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def sentinel_parts(
    url: str,
) -> tuple[list[tuple[str, int]], str, int, str | None, str | None, bool]:
    """``redis+sentinel://[user:password@]h1:p1,h2:p2/service[/db]`` → (sentinels,
    service, db, username, password, tls). The credentials are the primary's; the
    sentinels themselves are asked without. Raises ConfigurationError."""
    from urllib.parse import unquote

    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, sep, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ConfigurationError(
                "QUEUE_REDIS_URL: a redis+sentinel:// URL lists host:port of each sentinel"
            )
        sentinels.append((host.strip("[]"), int(port)))
    path = [segment for segment in parts.path.split("/") if segment]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigurationError(
            "QUEUE_REDIS_URL: a redis+sentinel:// URL ends with /SERVICE_NAME[/DB]"
        )
    db = int(path[1]) if len(path) == 2 else 0
    return sentinels, path[0], db, username, password, parts.scheme.startswith("rediss")


def make_client(url: str, *, socket_timeout: float) -> Redis:
    """A redis-py client for RQ: bytes (RQ's choice), short timeouts, no client retries.
    A ``redis+sentinel://`` URL gives a client of the primary the sentinels name (found
    again after a failover)."""
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from usermgmt.backends.redis.client import clean_url

    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if urlsplit(url).scheme in _SENTINEL_SCHEMES:
        from redis.sentinel import Sentinel

        sentinels, service, db, username, password, tls = sentinel_parts(url)
        timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout}
        sentinel = Sentinel(sentinels, sentinel_kwargs=dict(timeouts), **timeouts)  # type: ignore[no-untyped-call]
        primary: Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            service, db=db, username=username, password=password, ssl=tls, **options
        )
        return primary
    cleaned, _ = clean_url(url)
    return Redis.from_url(cleaned, **options)


def close_client(client: Redis) -> None:
    """Close ``client``'s connections, and the sentinels' when it came from Sentinel."""
    client.close()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        sentinel.close()


def check_standalone(client: Redis, description: str) -> None:
    """ConfigurationError if the server is a Redis Cluster node (RQ cannot use it)."""
    info: Mapping[str, Any] = client.info("cluster")
    if int(info.get("cluster_enabled", 0) or 0):
        raise ConfigurationError(
            f"{description} is a Redis Cluster node: RQ queues need a standalone Redis "
            "(set QUEUE_REDIS_URL to one)"
        )


def redact(url: str) -> str:
    """``scheme://host:port/db`` without the credentials (or the query)."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2] or "?"
    return f"{parts.scheme}://{hosts}{parts.path}"


class RQQueue:
    """A :class:`~usermgmt.ports.TaskQueue` on RQ (see the module docstring).

    ``fallback`` runs jobs in this process when Redis cannot take them (None: the
    enqueue error propagates as BackendUnavailable, as the scheduler wants).
    """

    def __init__(
        self,
        client: Redis,
        *,
        fallback: TaskRunner | None = None,
        max_attempts: int = 8,
        backoff: Sequence[int] = (10, 60, 300, 1800),
        job_timeout: int = 300,
        job_timeouts: Mapping[str, int] | None = None,
        failed_ttl: int = 7 * 86400,
        thresholds: Mapping[str, QueueThresholds] | None = None,
        description: str = "the queue Redis",
    ) -> None:
        if max_attempts < 1 or not backoff or min(backoff) < 0:
            raise ValueError("need max_attempts >= 1 and non-negative backoff")
        self.client = client
        self.max_attempts = max_attempts
        self.backoff = [int(b) for b in backoff]
        self.job_timeout = job_timeout
        self.job_timeouts = dict(job_timeouts or {})
        self.failed_ttl = failed_ttl
        self.thresholds = dict(thresholds or {})
        self.description = description
        self._runner = fallback
        self._fallback: InlineQueue | None = None
        self._lock = threading.Lock()
        self._checked = False

    # --- enqueueing ----------------------------------------------------------------------

    def queue(self, name: str) -> Queue:
        """The RQ queue ``name`` on this connection (JSON serializer)."""
        from rq import Queue
        from rq.serializers import JSONSerializer

        return Queue(name, connection=self.client, serializer=JSONSerializer)

    def retry_intervals(self) -> list[int]:
        """The delay before each retry, one per retry: ``backoff`` with its last value
        repeated. (Given a shorter list, RQ would repeat its *first* value for the extra
        retries, so the list is always spelled out in full.)"""
        n = self.max_attempts - 1
        return (self.backoff + [self.backoff[-1]] * n)[:n]

    def _retry(self) -> Any:
        from rq import Retry

        if self.max_attempts < 2:
            return None
        return Retry(max=self.max_attempts - 1, interval=self.retry_intervals())

    def _submit(
        self, task: str, payload: Mapping[str, Any], queue: str, job_id: str, unique: bool
    ) -> None:
        if not self._checked:
            check_standalone(self.client, self.description)
            self._checked = True
        self.queue(queue).enqueue(
            JOB_FUNCTION,
            task,
            dict(payload),
            job_id=job_id,
            description=task,  # the payload (links with tokens) stays out of logs
            job_timeout=self.job_timeouts.get(queue, self.job_timeout),
            result_ttl=RESULT_TTL.get(queue, 86400),
            failure_ttl=self.failed_ttl,
            retry=self._retry(),
            unique=unique,
        )

    def enqueue(self, task: str, payload: Mapping[str, Any], *, queue: str = EMAIL_QUEUE) -> str:
        """Queue ``task`` on Redis; returns the job id. Never raises for Redis: see the
        module docstring (the job then runs in this process)."""
        from redis.exceptions import TimeoutError as RedisTimeout

        job_id = uuid.uuid4().hex
        try:
            self._submit(task, payload, queue, job_id, unique=False)
        except ConfigurationError as exc:
            # A Cluster node behind a redis:// URL: a deployment error, not an outage.
            # Said loudly every time (never a silent permanent in-process queue); the
            # mail still leaves from this process.
            if self._runner is None:
                raise
            return self._run_here(task, payload, queue, f"job {job_id}: {exc.detail}")
        except Exception as exc:
            if self._runner is None:
                raise BackendUnavailable(f"cannot queue {task!r} on {self.description}") from exc
            if isinstance(exc, RedisTimeout) and self._stored(job_id):
                # The request reached Redis, only the reply was late: the job is queued.
                logger.warning(
                    "queueing task %s (job %s) on %s timed out, but the job is there",
                    task,
                    job_id,
                    self.description,
                )
                return job_id
            return self._run_here(
                task, payload, queue, f"job {job_id} on {self.description}: {_reason(exc)}"
            )
        return job_id

    def _run_here(self, task: str, payload: Mapping[str, Any], queue: str, why: str) -> str:
        """The fallback when Redis refused a job: logged, counted, run in this process."""
        logger.error("could not queue task %s (%s); running it in this process", task, why)
        hooks.count_degradation("redis", "queue")
        return self._local().enqueue(task, payload, queue=queue)

    def enqueue_once(
        self, task: str, payload: Mapping[str, Any], *, queue: str, job_id: str
    ) -> bool:
        """Queue ``task`` under ``job_id`` unless a job with that id exists (finished
        archive runs are kept a week, failed jobs ``QUEUE_FAILED_TTL_SECONDS``). True if
        queued now. Raises BackendUnavailable when Redis fails (no fallback here)."""
        from rq.exceptions import DuplicateJobError

        try:
            self._submit(task, payload, queue, job_id, unique=True)
        except DuplicateJobError:
            return False
        except ConfigurationError:
            raise
        except Exception as exc:
            raise BackendUnavailable(f"cannot queue {task!r} on {self.description}") from exc
        return True

    def _stored(self, job_id: str) -> bool:
        """Whether job ``job_id`` exists on Redis. False when Redis does not answer
        either: the job then also runs in this process (at least once, maybe twice)."""
        try:
            return bool(self.client.exists(f"rq:job:{job_id}"))
        except Exception as exc:
            logger.warning("cannot tell whether job %s was queued: %s", job_id, _reason(exc))
            return False

    def _local(self) -> InlineQueue:
        runner = self._runner
        if runner is None:  # pragma: no cover - enqueue() checked it
            raise RuntimeError("no in-process fallback")
        with self._lock:
            if self._fallback is None:
                self._fallback = InlineQueue(
                    runner, mode="thread", max_attempts=self.max_attempts, backoff=self.backoff
                )
            return self._fallback

    # --- observing ---------------------------------------------------------------------

    def stats(self, name: str) -> QueueStats:
        """The numbers of queue ``name``. Raises redis errors as BackendUnavailable, and
        ConfigurationError when the server is a Cluster node."""
        from rq import worker_registration
        from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

        try:
            if not self._checked:
                check_standalone(self.client, self.description)
                self._checked = True
            queue = self.queue(name)
            keys = sorted(worker_registration.get_keys(queue=queue))
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.exists(key)
                alive = sum(1 for found in pipe.execute() if found)
            return QueueStats(
                name=name,
                backlog=queue.count,
                scheduled=ScheduledJobRegistry(queue=queue).count,  # type: ignore[no-untyped-call]
                started=StartedJobRegistry(queue=queue).count,
                failed=FailedJobRegistry(queue=queue).count,
                workers=alive,
            )
        except ConfigurationError:
            raise
        except Exception as exc:
            raise BackendUnavailable(f"{self.description} is unavailable") from exc

    def health(self) -> dict[str, bool]:
        """``{queue name: healthy?}`` for the email and audit-archive queues; every
        queue is unhealthy when Redis does not answer. Problems are logged."""
        report: dict[str, bool] = {}
        for name in QUEUES:
            try:
                stats = self.stats(name)
            except BackendUnavailable as exc:
                logger.warning("queue %s: %s (%s)", name, exc.detail, _reason(exc.__cause__))
                report[name] = False
                continue
            except ConfigurationError as exc:  # a Cluster node behind a redis:// URL
                logger.warning("queue %s: %s", name, exc.detail)
                report[name] = False
                continue
            problems = stats.problems(self.thresholds.get(name, QueueThresholds(1000, 10)))
            if problems:
                logger.warning("queue %s unhealthy: %s", name, "; ".join(problems))
            report[name] = not problems
        return report

    def close(self) -> None:
        """Stop the in-process fallback's thread (after its current job) and close the
        connections."""
        with self._lock:
            fallback, self._fallback = self._fallback, None
        if fallback is not None:
            fallback.join(5.0)
            fallback.close()
        close_client(self.client)


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def thresholds(settings: Settings) -> dict[str, QueueThresholds]:
    """The health thresholds of each queue, from the settings."""
    return {
        EMAIL_QUEUE: QueueThresholds(
            settings.queue_email_backlog_threshold, settings.queue_email_failed_threshold
        ),
        AUDIT_ARCHIVE_QUEUE: QueueThresholds(
            settings.queue_audit_archive_backlog_threshold,
            settings.queue_audit_archive_failed_threshold,
        ),
    }


def build(
    settings: Settings,
    runner: TaskRunner | None = None,
    *,
    socket_timeout: float | None = None,
) -> RQQueue:
    """The RQ queue the settings describe (no network access here). ``runner`` runs jobs
    in-process when Redis cannot take them. Raises ConfigurationError for a Cluster URL."""
    url = queue_url(settings)
    timeout = socket_timeout or settings.redis_socket_timeout_seconds
    return RQQueue(
        make_client(url, socket_timeout=timeout),
        fallback=runner,
        max_attempts=settings.queue_retry_max_attempts,
        backoff=settings.queue_retry_backoff_seconds,
        job_timeout=settings.queue_job_timeout_seconds,
        job_timeouts={AUDIT_ARCHIVE_QUEUE: settings.queue_audit_archive_job_timeout_seconds},
        failed_ttl=settings.queue_failed_ttl_seconds,
        thresholds=thresholds(settings),
        description=f"the queue Redis at {redact(url)}",
    )
