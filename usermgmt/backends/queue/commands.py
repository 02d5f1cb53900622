"""The ``worker`` and ``schedule`` commands of the ``usermgmt`` command line.

::

    usermgmt worker [email|audit-archive|all] [--app MODULE:ATTR] [--burst]
                    [--metrics-port PORT] [--status]
    usermgmt schedule [--once] [--at HH:MM]

Both need ``QUEUE_BACKEND=rq`` settings (a standalone queue Redis) and the ``rq``
extra; a failure prints one line and exits 2, like every command.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from typing import Any

__all__ = ["add_commands"]


def _require_rq() -> None:
    from usermgmt.errors import MissingDependency

    if importlib.util.find_spec("rq") is None:
        raise MissingDependency("rq", "rq")


def _settings() -> Any:
    from usermgmt import cli

    settings = cli._settings()
    if settings.queue_backend != "rq":
        raise cli.CliError(
            "the queue commands need QUEUE_BACKEND=rq (and QUEUE_REDIS_URL or a standalone "
            "REDIS_URL); with the in-process queue each application process runs its jobs"
        )
    return settings


def _service_logging() -> None:
    """Long-running commands log through configure_logging (JSON lines), not the CLI's
    one-line warnings: drop the latter so that nothing is printed twice."""
    from usermgmt import cli

    library = logging.getLogger("usermgmt")
    for handler in list(library.handlers):
        if isinstance(handler, cli._StderrHandler):
            library.removeHandler(handler)


def _worker(args: argparse.Namespace) -> int:
    from usermgmt.backends.queue import worker

    _require_rq()
    settings = _settings()
    names = worker.queue_names(args.queue)
    if args.status:
        for line in worker.describe_queues(settings, names):
            print(line)
        return 0
    _service_logging()
    return worker.run_worker(
        settings,
        args.queue,
        app=args.app,
        burst=args.burst,
        metrics_port=args.metrics_port,
    )


def _schedule(args: argparse.Namespace) -> int:
    from usermgmt.backends.queue import rq as rq_backend
    from usermgmt.backends.queue.schedule import Scheduler, archive_job_id, parse_time
    from usermgmt.observability.logging import configure_logging

    _require_rq()
    settings = _settings()
    at = parse_time(args.at or settings.schedule_audit_archive_at)
    queue = rq_backend.build(settings, socket_timeout=5.0)
    try:
        scheduler = Scheduler(queue, at)
        if args.once:
            day = scheduler.due_day()
            if day is None:  # cron fired before the time of day: the next run queues it
                print(
                    f"the audit archive is not due before {at.strftime('%H:%M')} UTC: nothing to do"
                )
                return 0
            if scheduler.run_day(day):
                print(f"queued the audit archive of {day} (job {archive_job_id(day)})")
            else:
                print(f"the audit archive of {day} is already queued: nothing to do")
            return 0
        scheduler.install_signal_handlers()
        _service_logging()
        configure_logging(settings)
        scheduler.run_forever()
        return 0
    finally:
        queue.close()


def _at(value: str) -> str:
    from usermgmt.backends.queue.schedule import parse_time

    try:
        parse_time(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a time HH:MM") from None
    return value


def add_commands(sub: Any) -> None:
    """Add ``worker`` and ``schedule`` to the ``usermgmt`` subcommands."""
    worker = sub.add_parser(
        "worker",
        help="run an RQ worker for the email and/or audit-archive queues (QUEUE_BACKEND=rq)",
    )
    worker.add_argument(
        "queue",
        nargs="?",
        default="all",
        choices=["email", "audit-archive", "all"],
        help="the queue(s) to serve (default: all)",
    )
    worker.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="your application's UserManagement (or a function returning it), so the "
        "worker runs the tasks it registered; default: UserManagement.from_env()",
    )
    worker.add_argument(
        "--burst", action="store_true", help="exit once the queues are empty (cron, tests)"
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve this worker's Prometheus metrics on PORT (all interfaces)",
    )
    worker.add_argument(
        "--status",
        action="store_true",
        help="print each queue's waiting, scheduled, running and failed jobs and workers",
    )
    worker.set_defaults(run=_worker)

    schedule = sub.add_parser(
        "schedule",
        help="queue the daily audit archive (long-running; --once for cron)",
    )
    schedule.add_argument(
        "--once",
        action="store_true",
        help="queue today's archive if its time of day has passed and no scheduler did, then exit",
    )
    schedule.add_argument(
        "--at",
        type=_at,
        metavar="HH:MM",
        help="the UTC time of the daily run (default: SCHEDULE_AUDIT_ARCHIVE_AT, 03:00)",
    )
    schedule.set_defaults(run=_schedule)
