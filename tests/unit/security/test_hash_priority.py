"""On Linux, password hashes run in threads of lower priority than the requests' (nice),
so a burst of logins leaves the CPU to the event loop and the other requests first."""

from __future__ import annotations

import os
import sys
import threading

from usermgmt.security.passwords import HASH_THREAD_NICE, Argon2Parameters, PasslibHasher

CHEAP = Argon2Parameters(memory_kib=1024, time_cost=1, parallelism=2)

LINUX = sys.platform == "linux"


def _thread_nice() -> tuple[int, int]:
    return threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_hashes_run_in_a_lower_priority_thread_and_the_caller_keeps_its_own() -> None:
    hasher = PasslibHasher(CHEAP, concurrency=2)
    caller_tid, caller_nice = _thread_nice()
    worker_tid, worker_nice = hasher._context.run(_thread_nice)
    if LINUX:
        assert worker_tid != caller_tid
        assert worker_nice == min(19, caller_nice + HASH_THREAD_NICE)
    else:  # elsewhere a thread's nice is the process's: hashes stay in the caller's thread
        assert (worker_tid, worker_nice) == (caller_tid, caller_nice)
    assert os.getpriority(os.PRIO_PROCESS, caller_tid) == caller_nice  # untouched
    secret = "correct horse battery staple"
    assert hasher.verify(secret, hasher.hash(secret))
    assert not hasher.verify("another password entirely", hasher.hash(secret))


def test_nice_zero_hashes_in_the_callers_thread() -> None:
    hasher = PasslibHasher(CHEAP, nice=0)
    assert hasher._context.run(_thread_nice)[0] == threading.get_native_id()
    assert hasher.verify("pw pw pw pw pw", hasher.hash("pw pw pw pw pw"))


def test_a_forked_child_hashes_with_threads_of_its_own() -> None:
    # gunicorn --preload: the parent hashed (its pool thread exists), then forks; the
    # child must not wait forever on the parent's thread, which it does not have.
    hasher = PasslibHasher(CHEAP)
    hashed = hasher.hash("before the fork")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, never return into pytest
        status = 1
        try:
            ok = hasher.verify("before the fork", hashed) and hasher.verify(
                "after the fork", hasher.hash("after the fork")
            )
            os.write(write, b"ok" if ok else b"no")
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 2)
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == b"ok"
