"""Static proof that every in-memory backend satisfies its port (checked by mypy,
never imported at run time)."""

from __future__ import annotations

from pathlib import Path

from usermgmt.backends.memory import (
    ConsoleEmailSender,
    InlineQueue,
    LocalBlobStorage,
    MemoryAttemptCounter,
    MemoryBlobStorage,
    MemoryCache,
    MemoryEmailSender,
    MemoryRateLimiter,
    MemoryRevocationStore,
    MemoryUnitOfWorkFactory,
)
from usermgmt.ports import (
    AttemptCounter,
    BlobStorage,
    Cache,
    EmailSender,
    RateLimiter,
    RevocationStore,
    TaskQueue,
    UnitOfWork,
    UnitOfWorkFactory,
)


def _conformance(root: Path) -> None:  # pragma: no cover - never called
    factory: UnitOfWorkFactory = MemoryUnitOfWorkFactory()
    uow: UnitOfWork = factory()
    cache: Cache = MemoryCache()
    limiter: RateLimiter = MemoryRateLimiter()
    counter: AttemptCounter = MemoryAttemptCounter()
    revocations: RevocationStore = MemoryRevocationStore()
    senders: list[EmailSender] = [MemoryEmailSender(), ConsoleEmailSender()]
    storages: list[BlobStorage] = [MemoryBlobStorage(), LocalBlobStorage(root)]
    queue: TaskQueue = InlineQueue(lambda task, payload: None)
    del factory, uow, cache, limiter, counter, revocations, senders, storages, queue
