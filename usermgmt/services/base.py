"""The kernel every service shares: backends, settings, transactions, audit, throttles."""

from __future__ import annotations

import base64
import binascii
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from usermgmt.config import Settings
from usermgmt.errors import (
    BackendUnavailable,
    RateLimited,
    TransactionConflict,
    UserMgmtError,
    ValidationError,
)
from usermgmt.ids import new_id
from usermgmt.models import EMPTY_CONTEXT, AuditEvent, RequestContext
from usermgmt.permissions import PermissionRegistry
from usermgmt.ports import (
    AttemptCounter,
    Cache,
    Clock,
    PasswordHasher,
    RateLimiter,
    RevocationStore,
    UnitOfWork,
    UnitOfWorkFactory,
)
from usermgmt.security.jwt import TokenCodecs
from usermgmt.security.limits import BuiltinLimits, Limit
from usermgmt.security.passwords import PasswordPolicy
from usermgmt.services.notifications import Notifier

T = TypeVar("T")

logger = logging.getLogger("usermgmt")

#: How often a transaction that hit a serialization failure or deadlock is retried.
TRANSACTION_ATTEMPTS = 4


class CommitThenRaise(Exception):
    """Raised inside a transaction body: commit what was done, then raise ``error``.

    Used where a failure must still leave a trace (an audit event, a revoked session).
    """

    def __init__(self, error: UserMgmtError) -> None:
        super().__init__(error.detail)
        self.error = error


@dataclass
class Kernel:
    settings: Settings
    uow: UnitOfWorkFactory
    clock: Clock
    hasher: PasswordHasher
    policy: PasswordPolicy
    codecs: TokenCodecs
    cache: Cache | None
    limiter: RateLimiter
    attempts: AttemptCounter
    revocations: RevocationStore | None
    notifier: Notifier
    registry: PermissionRegistry
    limits: BuiltinLimits

    def now(self) -> datetime:
        return self.clock.now()

    # --- transactions -------------------------------------------------------------------

    def write(self, body: Callable[[UnitOfWork], T]) -> T:
        """Run ``body`` in a unit of work and commit; retry serialization failures with backoff.

        ``body`` may raise :class:`CommitThenRaise` to commit and then fail.
        """
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                with self.uow() as uow:
                    try:
                        result = body(uow)
                    except CommitThenRaise as deferred:
                        uow.commit()
                        raise deferred.error from None
                    uow.commit()
                    return result
            except TransactionConflict:
                if attempt == TRANSACTION_ATTEMPTS:
                    logger.warning("transaction conflict persisted after %d attempts", attempt)
                    raise BackendUnavailable("The service is busy; try again.") from None
                time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 - jitter
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, body: Callable[[UnitOfWork], T], *, replica: bool = False) -> T:
        """Run ``body`` in a read-only unit of work (a replica may serve it when allowed)."""
        with self.uow(read_only=True, replica=replica) as uow:
            return body(uow)

    # --- audit ----------------------------------------------------------------------------

    def audit(
        self,
        uow: UnitOfWork,
        action: str,
        ctx: RequestContext | None,
        *,
        actor: UUID | None = None,
        org: UUID | None = None,
        target_type: str | None = None,
        target_id: UUID | str | None = None,
        outcome: str = "success",
        **metadata: Any,
    ) -> None:
        """Append an audit event in the caller's transaction (``outcome``: success, failure, denied)."""
        ctx = ctx or EMPTY_CONTEXT
        uow.audit.add(
            AuditEvent(
                id=new_id(),
                occurred_at=self.now(),
                action=action,
                actor_user_id=actor,
                organization_id=org,
                outcome=outcome,
                target_type=target_type,
                target_id=None if target_id is None else str(target_id),
                ip=ctx.ip,
                user_agent=None if ctx.user_agent is None else ctx.user_agent[:512],
                request_id=None if ctx.request_id is None else ctx.request_id[:128],
                metadata={k: v for k, v in metadata.items() if v is not None},
            )
        )

    # --- throttles -----------------------------------------------------------------------

    def throttle(self, name: str, subject: str | None, limit: Limit) -> None:
        """Count a hit on a built-in limit; raise RateLimited when it is exhausted."""
        if subject is None or not self.settings.rate_limit_enabled:
            return
        result = self.limiter.hit(
            f"{name}:{subject}", limit=limit.count, window_seconds=limit.seconds
        )
        if not result.allowed:
            raise RateLimited(
                "Too many requests; try again later.",
                retry_after=result.reset_after,
                limit=result.limit,
                remaining=0,
            )

    def quota(self, name: str, subject: str, limit: Limit) -> bool:
        """Count a hit on a silent limit; False when exhausted (the caller skips the mail)."""
        if not self.settings.rate_limit_enabled:
            return True
        return self.limiter.hit(
            f"{name}:{subject}", limit=limit.count, window_seconds=limit.seconds
        ).allowed

    # --- revocation -----------------------------------------------------------------------

    def push_revocations(self, session_ids: Iterable[UUID]) -> None:
        """Tell the fast revocation store, after commit, that these sessions are dead."""
        ids = list(session_ids)
        if not ids or self.revocations is None:
            return
        ttl = self.settings.access_token_ttl_seconds + self.settings.jwt_leeway_seconds + 5
        try:
            self.revocations.revoke(ids, ttl)
        except BackendUnavailable:
            logger.error(
                "revocation store unavailable; %d session(s) rely on the database", len(ids)
            )

    def expires(self, seconds: int) -> datetime:
        return self.now() + timedelta(seconds=seconds)


def merge_changes(changes: Any, fields: dict[str, Any]) -> Any:
    """One payload from a mapping (e.g. a request body) plus keyword fields.

    Anything that is not a mapping is passed on unchanged so that validation
    rejects it with a ValidationError.
    """
    if changes is None:
        return fields
    if not isinstance(changes, Mapping) or not fields:
        return changes if not fields else {**fields, "__invalid__": changes}
    return {**changes, **fields}


# --- cursors -------------------------------------------------------------------------------


def encode_cursor(item_id: UUID) -> str:
    return base64.urlsafe_b64encode(item_id.bytes).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> UUID | None:
    """The id a cursor points at; ValidationError for anything that is not one of ours."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return UUID(bytes=raw)
    except (ValueError, binascii.Error):
        raise ValidationError(
            "Invalid cursor.", errors=[{"loc": ["cursor"], "msg": "invalid cursor"}]
        ) from None


def parse_uuid(value: UUID | str, what: str) -> UUID:
    """A UUID from an id given as text; a malformed one is simply not found."""
    from usermgmt.errors import NotFound

    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise NotFound(what) from None
