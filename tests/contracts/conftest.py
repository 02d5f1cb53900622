"""Fixtures that run the contract suites of :mod:`usermgmt.testing.contracts`.

Each fixture is parametrized by backend, with one marker per backend, so another
backend joins a suite by adding a ``pytest.param`` and a branch here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from usermgmt.backends.memory import (
    LocalBlobStorage,
    MemoryAttemptCounter,
    MemoryBlobStorage,
    MemoryCache,
    MemoryRateLimiter,
    MemoryRevocationStore,
    MemoryUnitOfWorkFactory,
)
from usermgmt.clock import FakeClock
from usermgmt.ports import (
    AttemptCounter,
    BlobStorage,
    Cache,
    RateLimiter,
    RevocationStore,
    UnitOfWorkFactory,
)
from usermgmt.testing.contracts import AdvanceTime

MEMORY = pytest.param("memory", marks=pytest.mark.memory)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def advance_time(clock: FakeClock) -> AdvanceTime:
    """In-memory backends expire by ``clock``: moving it is letting time pass."""

    def advance(seconds: float) -> None:
        clock.advance(seconds=seconds)

    return advance


@pytest.fixture(params=[MEMORY])
def uow_factory(request: pytest.FixtureRequest) -> UnitOfWorkFactory:
    assert request.param == "memory"
    return MemoryUnitOfWorkFactory()


@pytest.fixture(params=[MEMORY])
def cache(request: pytest.FixtureRequest, clock: FakeClock) -> Cache:
    assert request.param == "memory"
    return MemoryCache(clock)


@pytest.fixture(params=[MEMORY])
def rate_limiter(request: pytest.FixtureRequest, clock: FakeClock) -> RateLimiter:
    assert request.param == "memory"
    return MemoryRateLimiter(clock)


@pytest.fixture(params=[MEMORY])
def attempt_counter(request: pytest.FixtureRequest, clock: FakeClock) -> AttemptCounter:
    assert request.param == "memory"
    return MemoryAttemptCounter(clock, max_failures=3, lockout_seconds=60, max_lockout_seconds=3600)


@pytest.fixture(params=[MEMORY])
def revocation_store(request: pytest.FixtureRequest, clock: FakeClock) -> RevocationStore:
    assert request.param == "memory"
    return MemoryRevocationStore(clock)


@pytest.fixture(params=[MEMORY, pytest.param("local", marks=pytest.mark.core_only)])
def blob_storage(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStorage:
    if request.param == "local":
        return LocalBlobStorage(tmp_path / "blobs")
    return MemoryBlobStorage()
