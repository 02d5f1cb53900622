"""Ports: the small protocols every backend implements.

Services depend only on these. The in-memory backends in
:mod:`usermgmt.backends.memory` implement every one of them, and the contract
test mixins in :mod:`usermgmt.testing.contracts` state what any implementation
must do.

Rules shared by all repositories:

* they never commit; the :class:`UnitOfWork` does;
* uniqueness is enforced by the store and reported as the domain error named in
  the method's docstring (never check-then-insert);
* methods documented as *atomic* are a single compare-and-set in the store
  (``UPDATE ... WHERE ... RETURNING`` in SQL), so exactly one concurrent caller wins;
* entities go in and come out as frozen dataclasses; a repository never hands
  out an object the store still holds.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable
from uuid import UUID

from usermgmt.models import (
    AuditEvent,
    Invitation,
    Membership,
    OAuthAccount,
    OneTimeToken,
    Organization,
    Permission,
    Role,
    Session,
    TokenPurpose,
    User,
)

# --- repositories -------------------------------------------------------------------


class UserRepository(Protocol):
    def add(self, user: User) -> None:
        """Insert a user. Raises :class:`~usermgmt.errors.EmailTaken` if the email exists (case-insensitively)."""

    def get(self, user_id: UUID, *, for_update: bool = False) -> User | None:
        """The user or None; ``for_update`` locks the row until the unit of work ends."""

    def get_by_email(self, email: str) -> User | None:
        """Look up by email, case-insensitively."""

    def get_many(self, user_ids: Iterable[UUID]) -> builtins.list[User]:
        """The users with these ids, each once, in any order; ids without a user are
        skipped. One round trip however many ids (lists of members use it)."""

    def update(self, user: User) -> None:
        """Replace the stored user. Raises EmailTaken if the new email belongs to another user."""

    def list(
        self, *, email_prefix: str | None, limit: int, after: UUID | None
    ) -> builtins.list[User]:
        """Users ordered by id, after the cursor id, optionally by case-insensitive email prefix."""

    def count(self) -> int:
        """The number of users."""


class OrganizationRepository(Protocol):
    def add(self, organization: Organization) -> None:
        """Insert. Raises :class:`~usermgmt.errors.SlugTaken` if the slug exists."""

    def get(self, organization_id: UUID, *, for_update: bool = False) -> Organization | None:
        """The organization or None; ``for_update`` locks its row (serialises membership changes)."""

    def get_by_slug(self, slug: str) -> Organization | None: ...

    def update(self, organization: Organization) -> None:
        """Replace. Raises SlugTaken on a slug conflict."""

    def delete(self, organization_id: UUID) -> None:
        """Delete with its roles, memberships and invitations (audit events stay)."""

    def list_ids(self) -> builtins.list[UUID]:
        """Every organization id (used by seeding)."""


class PermissionRepository(Protocol):
    def ensure(self, permissions: Iterable[Permission]) -> None:
        """Insert the permissions that are missing; idempotent."""

    def list(self) -> builtins.list[Permission]:
        """The whole catalogue, ordered by name."""


class RoleRepository(Protocol):
    def add(self, role: Role) -> None:
        """Insert. Raises :class:`~usermgmt.errors.RoleNameTaken` if the name exists in the organization."""

    def get(self, organization_id: UUID, role_id: UUID) -> Role | None:
        """The role if it belongs to that organization."""

    def get_by_name(self, organization_id: UUID, name: str) -> Role | None: ...

    def list(self, organization_id: UUID) -> builtins.list[Role]:
        """Roles of the organization ordered by creation (system roles first)."""

    def get_many(self, organization_id: UUID, role_ids: Iterable[UUID]) -> builtins.list[Role]:
        """Those of the ids that are roles of the organization."""

    def update(self, role: Role) -> None:
        """Replace. Raises RoleNameTaken on a name conflict."""

    def delete(self, organization_id: UUID, role_id: UUID) -> None: ...

    def is_assigned(self, role_id: UUID) -> bool:
        """True if a membership or a pending invitation holds the role."""


class MembershipRepository(Protocol):
    def add(self, membership: Membership) -> None:
        """Insert. Raises :class:`~usermgmt.errors.AlreadyMember` for a second (organization, user) pair."""

    def get(self, organization_id: UUID, user_id: UUID) -> Membership | None: ...

    def update(self, membership: Membership) -> None:
        """Replace (roles, version)."""

    def delete(self, organization_id: UUID, user_id: UUID) -> None: ...

    def list_for_organization(
        self, organization_id: UUID, *, limit: int, after: UUID | None
    ) -> builtins.list[Membership]:
        """Memberships ordered by id, after the cursor id."""

    def list_for_user(self, user_id: UUID) -> builtins.list[Membership]:
        """Every membership of the user, ordered by id."""

    def count_with_role(self, organization_id: UUID, role_id: UUID) -> int:
        """How many members of the organization hold the role."""


class InvitationRepository(Protocol):
    def add(self, invitation: Invitation) -> None: ...

    def get(self, organization_id: UUID, invitation_id: UUID) -> Invitation | None: ...

    def get_by_token_hash(self, token_hash: str) -> Invitation | None: ...

    def list_for_organization(
        self, organization_id: UUID, *, limit: int, after: UUID | None
    ) -> builtins.list[Invitation]:
        """Invitations ordered by id, after the cursor id."""

    def accept(self, invitation_id: UUID, user_id: UUID, now: datetime) -> Invitation | None:
        """Atomic: mark accepted if still pending and unexpired at ``now``; None otherwise."""

    def revoke(self, invitation_id: UUID, now: datetime) -> Invitation | None:
        """Atomic: mark revoked if neither accepted nor revoked; None otherwise."""


class SessionRepository(Protocol):
    def add(self, session: Session) -> None: ...

    def get(self, session_id: UUID) -> Session | None: ...

    def list_active_for_user(self, user_id: UUID, now: datetime) -> builtins.list[Session]:
        """Unrevoked, unexpired sessions, newest first."""

    def rotate(
        self,
        session_id: UUID,
        *,
        expected_generation: int,
        expected_token_hash: str,
        new_token_hash: str,
        now: datetime,
    ) -> Session | None:
        """Atomic compare-and-set: advance the generation if the session is unrevoked and
        still at ``expected_generation`` with ``expected_token_hash``; None otherwise.

        Shares its row lock with :meth:`revoke` so a refresh never survives a revocation.
        """

    def revoke(self, session_id: UUID, now: datetime, reason: str) -> bool:
        """Atomic: revoke if not yet revoked; True if this call revoked it."""

    def revoke_all_for_user(
        self, user_id: UUID, now: datetime, reason: str, *, except_id: UUID | None = None
    ) -> builtins.list[UUID]:
        """Revoke every unrevoked session of the user but ``except_id``; the ids revoked."""

    def count_active(self, now: datetime) -> int:
        """Active sessions across all users (the active-sessions metric)."""


class OneTimeTokenRepository(Protocol):
    def add(self, token: OneTimeToken) -> None: ...

    def consume(self, purpose: TokenPurpose, token_hash: str, now: datetime) -> OneTimeToken | None:
        """Atomic: mark used if of that purpose, unused and unexpired at ``now``; None otherwise."""

    def find(self, purpose: TokenPurpose, token_hash: str) -> OneTimeToken | None:
        """The token whatever its state (for diagnostics and tests)."""

    def invalidate_for_user(self, user_id: UUID, purpose: TokenPurpose, now: datetime) -> int:
        """Mark every outstanding token of the user and purpose used; how many."""


class OAuthAccountRepository(Protocol):
    def add(self, account: OAuthAccount) -> None:
        """Insert. Raises Conflict if (provider, subject) is linked already."""

    def get(self, provider: str, subject: str) -> OAuthAccount | None: ...

    def list_for_user(self, user_id: UUID) -> builtins.list[OAuthAccount]: ...

    def delete(self, account_id: UUID) -> bool:
        """Remove the linked account; False if it did not exist."""


@dataclass(frozen=True, slots=True)
class AuditQuery:
    organization_id: UUID | None = None
    action: str | None = None
    actor_user_id: UUID | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditLogRepository(Protocol):
    """The audit trail as the application sees it: append and query, never update or delete."""

    def add(self, event: AuditEvent) -> AuditEvent:
        """Append an event to its stream's hash chain (see :mod:`usermgmt.audit_chain`)
        and return it with ``chain_seq``, ``prev_hash`` and ``hash`` set. Appends to one
        stream are serialised by its chain-head row (held until commit); a rolled-back
        append leaves no gap. Raises Conflict for a duplicate id."""

    def list(
        self, query: AuditQuery, *, limit: int, before: UUID | None
    ) -> builtins.list[AuditEvent]:
        """Matching events newest first (by id), strictly before the cursor id."""


@dataclass(frozen=True, slots=True)
class AuditChainHead:
    """The last event appended to a stream (whether still in the database or archived)."""

    stream: str
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class AuditArchiveBatch:
    """A ledger row: events ``first_seq..last_seq`` of ``stream`` live in object ``key``."""

    stream: str
    first_seq: int
    last_seq: int
    min_occurred_at: datetime
    max_occurred_at: datetime
    key: str
    size: int
    sha256: str
    event_count: int
    archived_at: datetime


class AuditArchiveRepository(Protocol):
    """What the archiver, ``audit verify`` and ``audit export`` need. Only the archiver
    calls :meth:`record_batch`, the one place where audit rows are ever deleted."""

    def heads(self, *, after: str | None, limit: int) -> builtins.list[AuditChainHead]:
        """Chain heads ordered by stream, strictly after ``after`` (keyset pages)."""

    def head(self, stream: str) -> AuditChainHead | None: ...

    def events(self, stream: str, *, after_seq: int, limit: int) -> builtins.list[AuditEvent]:
        """Events of ``stream`` still in the database with ``chain_seq > after_seq``,
        in chain order (served by the ``(organization_id, chain_seq)`` index)."""

    def count_before(self, cutoff: datetime) -> int:
        """How many events in the database occurred before ``cutoff`` (progress totals)."""

    def batches(self, stream: str) -> builtins.list[AuditArchiveBatch]:
        """The ledger of ``stream`` ordered by ``first_seq``."""

    def record_batch(self, batch: AuditArchiveBatch) -> int:
        """Insert the ledger row and delete the events it covers, in this transaction;
        the number of rows deleted. Raises Conflict if the batch is recorded already."""


class UnitOfWork(Protocol):
    """One transaction. ``with uow:`` opens it; leaving without :meth:`commit` rolls back."""

    users: UserRepository
    organizations: OrganizationRepository
    permissions: PermissionRepository
    roles: RoleRepository
    memberships: MembershipRepository
    invitations: InvitationRepository
    sessions: SessionRepository
    tokens: OneTimeTokenRepository
    oauth_accounts: OAuthAccountRepository
    audit: AuditLogRepository
    audit_archive: AuditArchiveRepository

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, read_only: bool = False, replica: bool = False) -> UnitOfWork:
        """A new unit of work. ``read_only`` ones refuse writes (and take no write lock);
        ``replica=True`` (implies read-only) may be served by a read replica that lags."""

    def check(self) -> None:
        """Raise BackendUnavailable if the store cannot be reached (health checks)."""


@runtime_checkable
class OneStatementReads(Protocol):
    """Optional: the per-request checks, each in one statement outside any transaction.

    A :class:`UnitOfWorkFactory` over a remote database may offer these so that an
    authenticated request costs one round trip instead of a transaction (BEGIN, several
    SELECTs, ROLLBACK). One statement sees one consistent snapshot, so each answer is the
    one the unit-of-work reads it replaces would give; nothing is cached. The services
    use them when the factory has them and fall back to units of work otherwise.
    Database failures raise :class:`~usermgmt.errors.BackendUnavailable`.
    """

    #: Whether :meth:`user_by_id` may be served by a read replica (that may lag).
    reads_from_replicas: bool

    def live_session_user(self, session_id: UUID, user_id: UUID) -> tuple[bool, User | None]:
        """On the primary: (whether the session exists and is not revoked, the user or None)."""

    def user_by_id(self, user_id: UUID) -> User | None:
        """The user or None, from a read replica when there is one (``replica=True``)."""

    def member_roles(
        self, organization_id: UUID, user_id: UUID
    ) -> tuple[bool, builtins.list[Role]] | None:
        """On the primary: None if the user is not a member of the organization, else
        (whether the user is active, the membership's roles there with their permissions).
        The system roles of the catalogue may come without their stored permissions: the
        live catalogue decides theirs (``AuthorizationService.permissions_of``)."""


# --- cache, rate limiting, lockout, revocation -------------------------------------


class Cache(Protocol):
    """A shared string cache. Failures raise :class:`~usermgmt.errors.BackendUnavailable`."""

    def get(self, key: str) -> str | None: ...

    def get_many(self, keys: Sequence[str]) -> builtins.list[str | None]: ...

    def set(self, key: str, value: str, ttl: float | None = None) -> None: ...

    def delete(self, *keys: str) -> None: ...

    def incr(self, key: str, ttl: float | None = None) -> int:
        """Atomically add one (a missing key counts from 0); ``ttl`` applies when the key is new."""

    def pop(self, key: str) -> str | None:
        """Atomically read and delete: of concurrent callers, only one gets the value."""


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the window frees a slot


class RateLimiter(Protocol):
    def hit(self, key: str, *, limit: int, window_seconds: float, cost: int = 1) -> RateLimitResult:
        """Count a hit against ``limit`` per window, atomically; refused hits are not counted."""

    def reset(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class AttemptDecision:
    allowed: bool
    retry_after: float = 0.0


class AttemptCounter(Protocol):
    """Per-account login lockout, atomic across threads and processes.

    ``acquire`` reserves an attempt *before* the password is checked, so parallel
    requests can never run more verifications than the threshold (CVE-2024-4629).
    """

    def acquire(self, key: str) -> AttemptDecision:
        """Reserve an attempt, or refuse while locked or while the threshold is reserved."""

    def record_failure(self, key: str) -> float | None:
        """A reserved attempt failed; the lock duration in seconds if this locked the key."""

    def record_success(self, key: str) -> None:
        """A reserved attempt succeeded: forget the failures and the backoff level."""

    def release(self, key: str) -> None:
        """Give back a reserved attempt that was neither a failure nor a success (the
        check could not run, e.g. the database was down); nothing else changes."""

    def reset(self, key: str) -> None: ...


class RevocationStore(Protocol):
    """Fast check that an access token's session was revoked (logout, password change...)."""

    def revoke(self, session_ids: Iterable[UUID], ttl_seconds: float) -> None: ...

    def is_revoked(self, session_id: UUID) -> bool:
        """Raises BackendUnavailable when unsure: callers then ask the database, never assume valid."""


# --- email, blobs, queue ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmailMessage:
    to: str
    subject: str
    text: str
    template: str
    html: str | None = None
    sender: str | None = None


class EmailSender(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Deliver or raise :class:`~usermgmt.errors.EmailDeliveryError` (``transient`` says if a retry helps)."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int
    sha256: str
    content_type: str


class BlobStorage(Protocol):
    """Write-once object storage (audit archives). Keys are never overwritten or deleted.

    The audit archiver relies on exactly this contract:

    * ``put`` stores new bytes and returns their :class:`BlobInfo` (``size`` in bytes,
      ``sha256`` lowercase hex of the stored bytes). Putting *identical* bytes under an
      existing key is a no-op returning the stored info (a re-run after a crash);
      *different* bytes raise :class:`~usermgmt.errors.BlobExists` (a ``Conflict``)
      and leave the stored object untouched.
    * ``checksum_sha256`` (lowercase hex), when given, is the checksum the caller
      computed; the store checks the bytes against it (S3: sent as
      ``x-amz-checksum-sha256`` so the server verifies it) and raises
      :class:`~usermgmt.errors.BlobIntegrityError` without storing anything on a mismatch.
    * ``head`` reports what the store *holds* (size and SHA-256 of the stored bytes,
      not of what was sent), or None; the archiver compares it with what it uploaded
      before deleting any database row.
    * there is no delete: retention is the store's business (S3 Object Lock).
    * a bad key raises :class:`~usermgmt.errors.ValidationError`; an unreachable
      store raises :class:`~usermgmt.errors.BackendUnavailable`.
    """

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        checksum_sha256: str | None = None,
    ) -> BlobInfo:
        """Store; identical bytes again are a no-op, different bytes raise BlobExists;
        a ``checksum_sha256`` that does not match raises BlobIntegrityError."""

    def head(self, key: str) -> BlobInfo | None:
        """Size and SHA-256 of the stored bytes, or None if the key is absent."""

    def get(self, key: str) -> bytes:
        """The bytes; raises NotFound."""

    def list(self, prefix: str = "") -> builtins.list[BlobInfo]: ...


class TaskQueue(Protocol):
    def enqueue(self, task: str, payload: Mapping[str, Any], *, queue: str = "email") -> str:
        """Schedule a registered task by name; returns a job id. Never runs it in the caller's transaction."""


# --- security primitives -----------------------------------------------------------------


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, password: str, hashed: str) -> bool:
        """Constant-time verification; False (never an exception) for a malformed hash."""

    def needs_rehash(self, hashed: str) -> bool:
        """True when the hash uses an outdated scheme or parameters."""

    def dummy_verify(self, password: str) -> None:
        """One verification of the same cost against a dummy hash (for unknown users)."""


@runtime_checkable
class BreachChecker(Protocol):
    def is_breached(self, password: str) -> bool:
        """True if the password is known from a breach corpus."""


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
