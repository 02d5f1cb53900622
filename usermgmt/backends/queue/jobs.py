"""The function RQ workers run for every usermgmt job: ``run(task, payload)``.

It hands the job to the registered task of the worker's
:class:`~usermgmt.UserManagement` (the one ``usermgmt worker`` installed with
:func:`install`, else one built from the environment, once per process), and:

* **Retries only what may heal.** A failure :func:`~usermgmt.backends.memory.queue.is_retryable`
  calls transient keeps the job's remaining RQ retries; any other failure (a refused
  recipient, a malformed payload, an unknown task) clears them, so the job goes
  straight to the ``FailedJobRegistry``.
* **Runs a job once.** After a success it marks the job id done in Redis for a day; a
  job that runs again under the same id (requeued by hand from the failed registry
  after all, or re-run after a worker died between the send and RQ's bookkeeping) is
  skipped.
* **Measures every attempt** into ``queue_job_duration_seconds`` (queue, task,
  outcome ``success``, ``retry`` or ``failure``) through the observability hooks.
* Logs task, job id, queue and attempt, never the payload (it holds single-use links).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from usermgmt.backends.memory.queue import is_retryable
from usermgmt.observability import hooks

if TYPE_CHECKING:
    from usermgmt.app import UserManagement

__all__ = ["DONE_KEY", "DONE_TTL_SECONDS", "install", "run", "user_management"]

logger = logging.getLogger("usermgmt.queue")

#: ``DONE_KEY.format(job_id)`` is set once a job succeeded.
DONE_KEY = "um:queue:done:{}"
DONE_TTL_SECONDS = 86400

_um: UserManagement | None = None
_lock = threading.Lock()


def install(um: UserManagement) -> None:
    """Run this process's jobs with ``um`` (what ``usermgmt worker`` does at start)."""
    global _um
    with _lock:
        _um = um


def user_management() -> UserManagement:
    """The installed UserManagement, or one built from the environment (once)."""
    global _um
    with _lock:
        if _um is None:
            from usermgmt.app import UserManagement

            _um = UserManagement.from_env()
        return _um


def _attempt(job: Any) -> int:
    """Which attempt of ``job`` this is: RQ counts retries down in ``retries_left``, and
    the job carries one retry interval per retry (``RQQueue.retry_intervals``)."""
    if job is None or not job.retry_intervals or job.retries_left is None:
        return 1
    return max(1, len(job.retry_intervals) - int(job.retries_left) + 1)


def run(task: str, payload: Mapping[str, Any]) -> None:
    """Run one job (RQ calls this in the worker). Raises what the task raised."""
    from rq import get_current_job

    job = get_current_job()
    queue = job.origin if job is not None else "direct"
    job_id = job.id if job is not None else "-"
    attempt = _attempt(job)
    done_key = DONE_KEY.format(job_id)
    if job is not None and job.connection.exists(done_key):
        logger.warning("task %s (job %s) already succeeded: skipped", task, job_id)
        return
    um = user_management()
    started = time.perf_counter()
    try:
        um.run_task(task, payload)
    except Exception as exc:
        elapsed = time.perf_counter() - started
        retry = is_retryable(exc) and job is not None and bool(job.retries_left)
        if job is not None and not retry:
            job.retries_left = 0  # a permanent failure: straight to the failed registry
        hooks.observe_job(queue, task, "retry" if retry else "failure", elapsed)
        logger.warning(
            "task %s (job %s, queue %s) failed on attempt %d%s: %s",
            task,
            job_id,
            queue,
            attempt,
            ", will retry" if retry else ", giving up",
            repr(exc)[:500],
        )
        raise
    hooks.observe_job(queue, task, "success", time.perf_counter() - started)
    if job is not None:
        try:
            job.connection.set(done_key, b"1", ex=DONE_TTL_SECONDS)
        except Exception as exc:  # the work is done; only the re-run guard is missing
            logger.warning("job %s done, but not marked done: %s", job_id, type(exc).__name__)
    logger.info("task %s (job %s, queue %s) done on attempt %d", task, job_id, queue, attempt)
