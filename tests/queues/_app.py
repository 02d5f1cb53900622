"""The application the test workers run (``--app tests.queues._app:make``): the
environment's UserManagement plus test tasks that leave their traces in Redis."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from usermgmt import UserManagement
from usermgmt.backends.queue import AUDIT_ARCHIVE_TASK
from usermgmt.backends.queue.rq import make_client

ARCHIVE_RUNS = "test:archive:runs"
SLOW_STARTED = "test:slow:started"
SLOW_FINISHED = "test:slow:finished"


def make() -> UserManagement:
    um = UserManagement.from_env()
    client = make_client(os.environ["QUEUE_REDIS_URL"], socket_timeout=5)

    def archive(payload: Mapping[str, Any]) -> None:
        client.incr(ARCHIVE_RUNS)

    def slow(payload: Mapping[str, Any]) -> None:
        client.set(SLOW_STARTED, str(os.getpid()))
        time.sleep(float(payload["seconds"]))
        client.set(SLOW_FINISHED, "1")

    # the real audit.archive body belongs to the audit issue; a counter stands in for it
    um.register_task(AUDIT_ARCHIVE_TASK, archive)
    um.register_task("test.slow", slow)
    return um
