"""The backend registry: settings in, one object per port out.

Backends are chosen by URL scheme (``memory://``, ``sqlite://``, ``postgresql://``,
``redis://``, ``redis+cluster://``) or provider name. Drivers are imported only
when chosen; a missing one raises :class:`~usermgmt.errors.MissingDependency`
naming the extra to install (SQLAlchemy and Alembic are core dependencies: SQLite
needs nothing more, PostgreSQL the ``postgres`` extra, which brings psycopg 3).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from usermgmt.config import Settings
from usermgmt.errors import ConfigurationError, MissingDependency
from usermgmt.ports import (
    AttemptCounter,
    BlobStorage,
    Cache,
    Clock,
    EmailSender,
    RateLimiter,
    RevocationStore,
    TaskQueue,
    UnitOfWorkFactory,
)

TaskRunner = Callable[[str, Mapping[str, Any]], None]


@dataclass
class Backends:
    """Every port a :class:`~usermgmt.UserManagement` needs.

    ``cache`` None disables the permission cache; ``revocations`` None makes every
    access-token check read the database (the right choice for several processes
    without Redis).
    """

    uow: UnitOfWorkFactory
    cache: Cache | None
    rate_limiter: RateLimiter
    attempts: AttemptCounter
    revocations: RevocationStore | None
    email: EmailSender
    blobs: BlobStorage
    queue: TaskQueue


def require_module(module: str, package: str, extra: str) -> Any:
    """Import an optional dependency or raise MissingDependency naming the extra."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise MissingDependency(package, extra)
    return importlib.import_module(module)


def _our_backend(module: str, feature: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise ConfigurationError(
                f"{feature} is not available in this version of usermgmt"
            ) from None
        raise


def build_backends(settings: Settings, clock: Clock, runner: TaskRunner) -> Backends:
    """Build every backend the settings name."""
    from usermgmt.backends import memory

    url = settings.database_url
    in_process = url.startswith("memory:")
    # The login lockout in the SQL database (SECURITY.md F1): the counter every process
    # shares without Redis, and the backstop while Redis fails.
    sql_attempts: AttemptCounter | None = None
    if in_process:
        uow: UnitOfWorkFactory = memory.MemoryUnitOfWorkFactory(memory.MemoryStore())
    elif url.startswith(("sqlite", "postgres")):
        # SQLAlchemy and Alembic are core dependencies; PostgreSQL needs the psycopg driver.
        if url.split(":", 1)[0] in ("postgresql", "postgres", "postgresql+psycopg"):
            require_module("psycopg", "psycopg", "postgres")
        sql = _our_backend("usermgmt.backends.sqlalchemy", "SQL storage")
        uow = sql.build_unit_of_work_factory(settings)
        sql_attempts = sql.build_attempt_counter(uow, settings, clock)
    else:
        raise ConfigurationError(
            "DATABASE_URL must start with postgresql://, sqlite:// or memory://"
        )

    if settings.redis_url:
        require_module("redis", "redis", "redis")
        redis_backends = _our_backend("usermgmt.backends.redis", "Redis support")
        cache, limiter, attempts, revocations = redis_backends.build(
            settings, clock, lockout_backstop=sql_attempts
        )
    else:
        # Without a shared store only a single in-process database may cache answers and
        # trust a local denylist; several processes on one SQL database must read it.
        cache = memory.MemoryCache(clock=clock) if in_process else None
        limiter = memory.MemoryRateLimiter(clock)
        attempts = (
            sql_attempts
            if sql_attempts is not None
            else memory.MemoryAttemptCounter(
                clock,
                max_failures=settings.login_max_failures,
                lockout_seconds=settings.login_lockout_seconds,
                max_lockout_seconds=settings.login_lockout_max_seconds,
            )
        )
        revocations = memory.MemoryRevocationStore(clock) if in_process else None

    return Backends(
        uow=uow,
        cache=cache,
        rate_limiter=limiter,
        attempts=attempts,
        revocations=revocations,
        email=build_email(settings),
        blobs=build_storage(settings),
        queue=build_queue(settings, runner),
    )


def build_email(settings: Settings) -> EmailSender:
    from usermgmt.backends import memory

    provider = settings.email_provider
    if provider == "memory":
        return memory.MemoryEmailSender()
    if provider == "console":
        return memory.ConsoleEmailSender()
    extras = {
        "smtp": ("smtplib", "smtp"),
        "sendgrid": ("sendgrid", "sendgrid"),
        "ses": ("boto3", "aws"),
    }
    package, extra = extras[str(provider)]
    require_module(package, package, extra)
    module = _our_backend(f"usermgmt.backends.email.{provider}", f"EMAIL_PROVIDER={provider}")
    sender: EmailSender = module.build(settings)
    return sender


def build_storage(settings: Settings) -> BlobStorage:
    from usermgmt.backends import memory

    if settings.storage_backend == "memory":
        return memory.MemoryBlobStorage()
    if settings.storage_backend == "local":
        return memory.LocalBlobStorage(settings.storage_local_path)
    require_module("boto3", "boto3", "aws")
    module = _our_backend("usermgmt.backends.storage.s3", "STORAGE_BACKEND=s3")
    storage: BlobStorage = module.build(settings)
    return storage


def build_queue(settings: Settings, runner: TaskRunner) -> TaskQueue:
    from usermgmt.backends import memory

    if settings.queue_backend == "inline":
        mode: Literal["sync", "thread"] = "sync" if settings.environment == "test" else "thread"
        return memory.InlineQueue(runner, mode=mode)
    require_module("rq", "rq", "rq")
    module = _our_backend("usermgmt.backends.queue.rq", "QUEUE_BACKEND=rq")
    queue: TaskQueue = module.build(settings, runner)  # runner: in-process if Redis fails
    return queue
