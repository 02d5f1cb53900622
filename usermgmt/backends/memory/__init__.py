"""In-memory backends: every port implemented in this process, with no server.

They are a product feature, not only test doubles: ``UserManagement.in_memory()``
and application test suites run on them, and they pass the same contract tests
(:mod:`usermgmt.testing.contracts`) as the SQL and Redis backends. All of them are
thread-safe. State lives in the process, so use them with one worker process.

============================  ======================================================
Port                          In-memory implementation
============================  ======================================================
UnitOfWorkFactory             :class:`MemoryUnitOfWorkFactory` over a :class:`MemoryStore`
Cache                         :class:`MemoryCache`
RateLimiter                   :class:`MemoryRateLimiter`
AttemptCounter                :class:`MemoryAttemptCounter`
RevocationStore               :class:`MemoryRevocationStore`
EmailSender                   :class:`MemoryEmailSender` (outbox), :class:`ConsoleEmailSender`
BlobStorage                   :class:`MemoryBlobStorage`, :class:`LocalBlobStorage`
TaskQueue                     :class:`InlineQueue`
============================  ======================================================
"""

from usermgmt.backends.memory.cache import MemoryCache
from usermgmt.backends.memory.email import ConsoleEmailSender, MemoryEmailSender
from usermgmt.backends.memory.queue import FailedJob, InlineQueue, TaskRunner, is_retryable
from usermgmt.backends.memory.ratelimit import MemoryAttemptCounter, MemoryRateLimiter
from usermgmt.backends.memory.revocation import MemoryRevocationStore
from usermgmt.backends.memory.storage import LocalBlobStorage, MemoryBlobStorage, validate_blob_key
from usermgmt.backends.memory.store import MemoryStore
from usermgmt.backends.memory.uow import MemoryUnitOfWork, MemoryUnitOfWorkFactory

__all__ = [
    "ConsoleEmailSender",
    "FailedJob",
    "InlineQueue",
    "LocalBlobStorage",
    "MemoryAttemptCounter",
    "MemoryBlobStorage",
    "MemoryCache",
    "MemoryEmailSender",
    "MemoryRateLimiter",
    "MemoryRevocationStore",
    "MemoryStore",
    "MemoryUnitOfWork",
    "MemoryUnitOfWorkFactory",
    "TaskRunner",
    "is_retryable",
    "validate_blob_key",
]
