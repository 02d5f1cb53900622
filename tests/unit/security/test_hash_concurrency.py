"""Password hashing is bounded per process so a burst of logins cannot starve other requests."""

from __future__ import annotations

import threading
import time
from typing import Any

from usermgmt.config import Settings
from usermgmt.security.passwords import Argon2Parameters, PasslibHasher, default_hash_concurrency

CHEAP = Argon2Parameters(memory_kib=1024, time_cost=1, parallelism=1)


class _Probe:
    """Stands in for the CryptContext and records how many calls overlap."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def _enter(self) -> None:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.02)
        with self.lock:
            self.active -= 1

    def hash(self, secret: str) -> str:
        self._enter()
        return "$argon2id$probe"

    def verify(self, secret: str, hashed: str) -> bool:
        self._enter()
        return False

    def identify(self, hashed: str, required: bool = False) -> str:
        return "argon2"


def _overlap(concurrency: int, calls: int = 8) -> int:
    hasher = PasslibHasher(CHEAP, concurrency=concurrency)
    probe = _Probe()
    hasher._context._inner = probe  # keep the bounding wrapper, observe what it lets through
    barrier = threading.Barrier(calls)

    def work(i: int) -> Any:
        barrier.wait()
        return hasher.hash("pw") if i % 2 else hasher.verify("pw", "$argon2id$x")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return probe.peak


def test_hashes_never_exceed_the_concurrency_bound() -> None:
    assert _overlap(1) == 1
    assert _overlap(3) <= 3


def test_the_bound_still_allows_parallel_work() -> None:
    assert _overlap(4) >= 2  # a bound, not a global lock


def test_default_leaves_a_core_free_and_setting_overrides() -> None:
    assert default_hash_concurrency() >= 1
    assert (
        PasslibHasher.from_settings(Settings.for_tests()).concurrency == default_hash_concurrency()
    )
    hasher = PasslibHasher.from_settings(Settings.for_tests(password_hash_concurrency=3))
    assert hasher.concurrency == 3
    assert hasher.verify("a long enough password", hasher.hash("a long enough password"))
