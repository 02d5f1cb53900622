"""Where the FastAPI adapter's per-request checks run when they may block (SQL, Redis).

Starlette's ``run_in_threadpool`` hands work to AnyIO's shared pool of up to 40 threads.
Under concurrent requests many of those threads wake at once, each wanting the GIL back
from the event loop when its database answer arrives, and the hand-overs cost more CPU
than the reads themselves (PostgreSQL ``GET /users/me``: ~1,650 µs per request through
the shared pool, ~1,200 µs through two threads). The short checks of every authenticated
request (token, session, user, permission, the global rate limit) therefore run in a
small pool of their own, ``HTTP_CHECK_THREADS`` threads per process (default 2), in a
copy of the caller's context (request id and user id for the logs). Endpoints and
everything else still run in Starlette's threadpool.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["run_check"]

T = TypeVar("T")

_lock = threading.Lock()
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _executor(size: int) -> ThreadPoolExecutor:
    # Keyed by process too: a forked worker (gunicorn --preload) has the dict, not the threads.
    key = (os.getpid(), size)
    pool = _pools.get(key)
    if pool is None:
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = ThreadPoolExecutor(
                    max_workers=size, thread_name_prefix="usermgmt-check"
                )
    return pool


async def run_check(size: int, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in the process's pool of ``size`` check threads, in a copy of
    the caller's context."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    call = functools.partial(context.run, function, *args)
    return await loop.run_in_executor(_executor(size), call)
