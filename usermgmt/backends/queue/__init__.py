"""Queues on Redis with RQ 3 (``QUEUE_BACKEND=rq``) and the processes that serve them.

=====================================  =================================================
module                                 what
=====================================  =================================================
:mod:`usermgmt.backends.queue.rq`      :class:`RQQueue`, the :class:`~usermgmt.ports.TaskQueue`
                                       the application enqueues on, and its health
:mod:`usermgmt.backends.queue.jobs`    the job function RQ workers import and run
:mod:`usermgmt.backends.queue.worker`  ``usermgmt worker``: an RQ worker with its scheduler
:mod:`usermgmt.backends.queue.schedule`  ``usermgmt schedule``: the daily audit-archive job
:mod:`usermgmt.backends.queue.commands`  the two commands' argument parsers
=====================================  =================================================

Importing this package imports neither ``rq`` nor ``redis``: the modules above do, and
they are imported only when ``QUEUE_BACKEND=rq`` or one of the commands runs (installed
with ``pip install "usermgmt[rq]"``).
"""

from __future__ import annotations

from usermgmt.services.archive import AUDIT_ARCHIVE_TASK

__all__ = [
    "AUDIT_ARCHIVE_QUEUE",
    "AUDIT_ARCHIVE_TASK",
    "EMAIL_QUEUE",
    "QUEUES",
]

#: The queue outgoing mail goes to (the ``email`` key of ``/health/queues``).
EMAIL_QUEUE = "email"
#: The queue of the daily audit archive (the ``auditArchive`` key of ``/health/queues``).
AUDIT_ARCHIVE_QUEUE = "audit-archive"
#: Every queue usermgmt uses, in the order ``usermgmt worker all`` serves them.
QUEUES = (EMAIL_QUEUE, AUDIT_ARCHIVE_QUEUE)
