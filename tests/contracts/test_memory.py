"""The in-memory backends (and the local blob storage) against every contract."""

from __future__ import annotations

from usermgmt.testing.contracts import (
    AttemptCounterContract,
    BlobStorageContract,
    CacheContract,
    RateLimiterContract,
    RevocationStoreContract,
    UnitOfWorkContract,
)


class TestUnitOfWork(UnitOfWorkContract):
    pass


class TestCache(CacheContract):
    pass


class TestRateLimiter(RateLimiterContract):
    pass


class TestAttemptCounter(AttemptCounterContract):
    pass


class TestRevocationStore(RevocationStoreContract):
    pass


class TestBlobStorage(BlobStorageContract):
    pass
