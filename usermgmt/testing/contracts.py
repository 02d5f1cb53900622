# ruff: noqa: S101  (pytest assertions are the point of this module)
"""Contract tests for backends: what every implementation of a port must do.

Each ``*Contract`` class is a pytest mixin: plain ``test_*`` methods that take
fixtures. A backend proves it conforms by subclassing the mixins in a test module
and providing the fixtures::

    # tests/contracts/conftest.py
    @pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.memory)])
    def uow_factory(request: pytest.FixtureRequest) -> UnitOfWorkFactory:
        return MemoryUnitOfWorkFactory()  # a fresh, empty store for every test

    # tests/contracts/test_memory.py
    class TestUnitOfWork(UnitOfWorkContract): ...

Fixtures the mixins need:

=========================  ==========================================================
mixin                      fixtures
=========================  ==========================================================
UnitOfWorkContract         ``uow_factory``: a UnitOfWorkFactory on an empty store
CacheContract              ``cache``; ``advance_time(seconds)`` lets that much time
                           pass for the cache (advance a fake clock, or sleep)
RateLimiterContract        ``rate_limiter`` driven by ``clock`` (a FakeClock)
AttemptCounterContract     ``attempt_counter`` (max_failures=3, lockout_seconds=60,
                           max_lockout_seconds=3600) driven by ``clock``
RevocationStoreContract    ``revocation_store``; ``advance_time(seconds)``
BlobStorageContract        ``blob_storage``: an empty store
=========================  ==========================================================

The entity factories (:func:`make_user` and friends) build valid entities with
fresh UUIDv7 ids and whole-second UTC times, for these tests and for yours.
Race tests run 20-50 real threads; a backend may make losers raise
:class:`~usermgmt.errors.TransactionConflict`, which the helpers retry as the
services do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import pytest

from usermgmt.audit_chain import GENESIS_HASH, PLATFORM_STREAM, event_hash
from usermgmt.clock import FakeClock
from usermgmt.errors import (
    AlreadyMember,
    BlobExists,
    BlobIntegrityError,
    Conflict,
    EmailTaken,
    NotFound,
    RoleNameTaken,
    SlugTaken,
    TransactionConflict,
)
from usermgmt.ids import new_id
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
from usermgmt.ports import (
    AttemptCounter,
    AuditQuery,
    BlobStorage,
    Cache,
    RateLimiter,
    RevocationStore,
    UnitOfWork,
    UnitOfWorkFactory,
)

__all__ = [
    "T0",
    "AdvanceTime",
    "AttemptCounterContract",
    "BlobStorageContract",
    "CacheContract",
    "RateLimiterContract",
    "RevocationStoreContract",
    "UnitOfWorkContract",
    "add_all",
    "make_audit_event",
    "make_invitation",
    "make_membership",
    "make_oauth_account",
    "make_organization",
    "make_role",
    "make_session",
    "make_token",
    "make_user",
    "race",
    "transact",
]

R = TypeVar("R")
E = TypeVar("E")
AdvanceTime = Callable[[float], None]
"""The ``advance_time`` fixture: let that many seconds pass for the backend under test."""

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
"""The base time of the factories: whole seconds, UTC."""

RACE_THREADS = 20
RACE_ITERATIONS = 20


# --- entity factories -------------------------------------------------------------


def _suffix() -> str:
    return secrets.token_hex(6)


def _hash() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def make_user(email: str | None = None, **fields: Any) -> User:
    """A verified-looking active user with a unique email; ``fields`` override."""
    values: dict[str, Any] = {
        "id": new_id(),
        "email": email if email is not None else f"user-{_suffix()}@example.com",
        "created_at": T0,
        "updated_at": T0,
        "name": "Test User",
        "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
    }
    values.update(fields)
    return User(**values)


def make_organization(slug: str | None = None, **fields: Any) -> Organization:
    """An organization with a unique slug; ``fields`` override."""
    slug = slug if slug is not None else f"org-{_suffix()}"
    values: dict[str, Any] = {
        "id": new_id(),
        "name": slug.title(),
        "slug": slug,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Organization(**values)


def make_role(
    organization_id: UUID,
    name: str | None = None,
    permissions: Iterable[str] = ("member:read",),
    **fields: Any,
) -> Role:
    """A custom role of the organization; ``fields`` override."""
    values: dict[str, Any] = {
        "id": new_id(),
        "organization_id": organization_id,
        "name": name if name is not None else f"role-{_suffix()}",
        "permissions": frozenset(permissions),
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Role(**values)


def make_membership(
    organization_id: UUID, user_id: UUID, role_ids: Iterable[UUID] = (), **fields: Any
) -> Membership:
    """A membership holding ``role_ids``; ``fields`` override."""
    values: dict[str, Any] = {
        "id": new_id(),
        "organization_id": organization_id,
        "user_id": user_id,
        "role_ids": frozenset(role_ids),
        "joined_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Membership(**values)


def make_invitation(
    organization_id: UUID, role_ids: Iterable[UUID] = (), **fields: Any
) -> Invitation:
    """A pending invitation expiring 7 days after T0; ``fields`` override."""
    values: dict[str, Any] = {
        "id": new_id(),
        "organization_id": organization_id,
        "email": f"invitee-{_suffix()}@example.com",
        "role_ids": frozenset(role_ids),
        "token_hash": _hash(),
        "invited_by": None,
        "created_at": T0,
        "expires_at": T0 + timedelta(days=7),
    }
    values.update(fields)
    return Invitation(**values)


def make_session(user_id: UUID, **fields: Any) -> Session:
    """A fresh session (generation 1) expiring 30 days after T0; ``fields`` override."""
    values: dict[str, Any] = {
        "id": new_id(),
        "user_id": user_id,
        "token_hash": _hash(),
        "created_at": T0,
        "last_used_at": T0,
        "expires_at": T0 + timedelta(days=30),
        "ip": "203.0.113.7",
        "user_agent": "contract-tests",
    }
    values.update(fields)
    return Session(**values)


def make_token(
    user_id: UUID, purpose: TokenPurpose = TokenPurpose.EMAIL_VERIFICATION, **fields: Any
) -> OneTimeToken:
    """An unused one-time token expiring an hour after T0; ``fields`` override."""
    values: dict[str, Any] = {
        "id": new_id(),
        "user_id": user_id,
        "purpose": purpose,
        "token_hash": _hash(),
        "email": f"user-{_suffix()}@example.com",
        "created_at": T0,
        "expires_at": T0 + timedelta(hours=1),
    }
    values.update(fields)
    return OneTimeToken(**values)


def make_oauth_account(
    user_id: UUID, provider: str = "google", subject: str | None = None, **fields: Any
) -> OAuthAccount:
    """A linked OAuth account with a unique subject; ``fields`` override."""
    values: dict[str, Any] = {
        "id": new_id(),
        "user_id": user_id,
        "provider": provider,
        "subject": subject if subject is not None else secrets.token_hex(8),
        "created_at": T0,
    }
    values.update(fields)
    return OAuthAccount(**values)


def make_audit_event(action: str = "user.login", **fields: Any) -> AuditEvent:
    """An audit event at T0; ``fields`` override."""
    values: dict[str, Any] = {"id": new_id(), "occurred_at": T0, "action": action}
    values.update(fields)
    return AuditEvent(**values)


# --- helpers -------------------------------------------------------------------------


def transact(factory: UnitOfWorkFactory, fn: Callable[[UnitOfWork], R], *, attempts: int = 50) -> R:
    """Run ``fn`` in a unit of work and commit, retrying TransactionConflict like a service."""
    for attempt in range(1, attempts + 1):
        try:
            with factory() as uow:
                result = fn(uow)
                uow.commit()
                return result
        except TransactionConflict:
            if attempt == attempts:
                raise
            time.sleep(min(0.002 * attempt, 0.05))
    raise AssertionError("unreachable")


def add_all(
    factory: UnitOfWorkFactory, pick: Callable[[UnitOfWork], Callable[[E], None]], *items: E
) -> None:
    """Add ``items`` with the repository method ``pick(uow)`` and commit, e.g.
    ``add_all(factory, lambda uow: uow.users.add, alice, bob)``."""

    def run(uow: UnitOfWork) -> None:
        add = pick(uow)
        for item in items:
            add(item)

    transact(factory, run)


def peek(factory: UnitOfWorkFactory, fn: Callable[[UnitOfWork], R]) -> R:
    """Run ``fn`` in a fresh unit of work that is left without commit."""
    with factory() as uow:
        return fn(uow)


def race(n: int, fn: Callable[[int], R]) -> list[R | Exception]:
    """Run ``fn(0)`` ... ``fn(n - 1)`` on ``n`` threads released together; each
    result, or the exception it raised."""
    barrier = threading.Barrier(n, timeout=30)

    def run(i: int) -> R:
        barrier.wait()
        return fn(i)

    results: list[R | Exception] = []
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        for future in futures:
            try:
                results.append(future.result(timeout=60))
            except Exception as exc:
                results.append(exc)
    return results


def _seed_user(factory: UnitOfWorkFactory, **fields: Any) -> User:
    user = make_user(**fields)
    transact(factory, lambda uow: uow.users.add(user))
    return user


def _seed_org(factory: UnitOfWorkFactory, **fields: Any) -> Organization:
    org = make_organization(**fields)
    transact(factory, lambda uow: uow.organizations.add(org))
    return org


def _seed_role(factory: UnitOfWorkFactory, org: Organization, **fields: Any) -> Role:
    role = make_role(org.id, **fields)
    transact(factory, lambda uow: uow.roles.add(role))
    return role


# --- unit of work and repositories ---------------------------------------------------


class TransactionContract:
    """Commit, rollback and isolation of a unit of work."""

    def test_commit_makes_writes_visible(self, uow_factory: UnitOfWorkFactory) -> None:
        user = make_user()
        with uow_factory() as uow:
            uow.users.add(user)
            assert uow.users.get(user.id) == user  # read your own writes
            uow.commit()
        assert peek(uow_factory, lambda uow: uow.users.get(user.id)) == user

    def test_exit_without_commit_rolls_back(self, uow_factory: UnitOfWorkFactory) -> None:
        user = make_user()
        with uow_factory() as uow:
            uow.users.add(user)
        assert peek(uow_factory, lambda uow: uow.users.get(user.id)) is None
        assert peek(uow_factory, lambda uow: uow.users.count()) == 0

    def test_exception_rolls_back_and_propagates(self, uow_factory: UnitOfWorkFactory) -> None:
        org = make_organization()

        def fail() -> None:
            with uow_factory() as uow:
                uow.organizations.add(org)
                raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            fail()
        assert peek(uow_factory, lambda uow: uow.organizations.get(org.id)) is None

    def test_rollback_undoes_only_writes_since_last_commit(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        first, second, third = make_user(), make_user(), make_user()
        with uow_factory() as uow:
            uow.users.add(first)
            uow.commit()
            uow.users.add(second)
            uow.rollback()
            assert uow.users.get(second.id) is None
            uow.users.add(third)  # the unit of work stays usable after a rollback
            uow.commit()
        found = peek(uow_factory, lambda uow: [uow.users.get(u.id) for u in (first, second, third)])
        assert found == [first, None, third]

    def test_commit_more_than_once(self, uow_factory: UnitOfWorkFactory) -> None:
        first, second, uncommitted = make_user(), make_user(), make_user()
        with uow_factory() as uow:
            uow.users.add(first)
            uow.commit()
            uow.users.add(second)
            uow.commit()
            uow.users.add(uncommitted)
        ids = peek(
            uow_factory,
            lambda uow: [u.id for u in uow.users.list(email_prefix=None, limit=10, after=None)],
        )
        assert ids == [first.id, second.id]

    def test_rollback_restores_updates_deletes_and_unique_keys(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        user = _seed_user(uow_factory, email="keep@example.com")
        org = _seed_org(uow_factory, slug="keep")
        with uow_factory() as uow:
            uow.users.update(dataclasses.replace(user, email="changed@example.com", name="X"))
            uow.organizations.delete(org.id)
        with uow_factory() as uow:
            assert uow.users.get(user.id) == user
            assert uow.users.get_by_email("keep@example.com") == user
            assert uow.users.get_by_email("changed@example.com") is None
            assert uow.organizations.get_by_slug("keep") == org
            # the rolled-back email is free again, the kept one is still taken
            uow.users.add(make_user(email="changed@example.com"))
            with pytest.raises(EmailTaken):
                uow.users.add(make_user(email="KEEP@example.com"))

    def test_repositories_refuse_use_outside_with(self, uow_factory: UnitOfWorkFactory) -> None:
        uow = uow_factory()
        with pytest.raises(RuntimeError):
            uow.users.count()
        with uow:
            uow.users.add(make_user())
            uow.commit()
        with pytest.raises(RuntimeError):
            uow.users.get(new_id())

    def test_uncommitted_writes_are_invisible_to_other_threads(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        user = make_user()
        written = threading.Event()
        seen: list[User | None] = []

        def reader() -> None:
            assert written.wait(10)
            seen.append(peek(uow_factory, lambda uow: uow.users.get_by_email(user.email)))

        thread = threading.Thread(target=reader)
        thread.start()
        with uow_factory() as uow:
            uow.users.add(user)
            written.set()
            time.sleep(0.05)  # give the reader a chance to look while we are open
        thread.join(10)
        assert not thread.is_alive()
        assert seen == [None]

    def test_check_and_read_only_unit_of_work(self, uow_factory: UnitOfWorkFactory) -> None:
        uow_factory.check()
        user = _seed_user(uow_factory)
        with uow_factory(read_only=True) as uow:
            assert uow.users.get(user.id) == user


class UserRepositoryContract:
    def test_users_add_get_and_count(self, uow_factory: UnitOfWorkFactory) -> None:
        user = make_user(
            name="Ada",
            is_verified=True,
            email_verified_at=T0,
            last_login_at=T0 + timedelta(hours=1),
            metadata={"plan": "pro", "tags": ["a", "b"]},
        )
        transact(uow_factory, lambda uow: uow.users.add(user))
        with uow_factory() as uow:
            assert uow.users.get(user.id) == user
            assert uow.users.get(new_id()) is None
            assert uow.users.get(user.id, for_update=True) == user
            assert uow.users.count() == 1

    def test_users_email_lookup_is_case_insensitive(self, uow_factory: UnitOfWorkFactory) -> None:
        user = _seed_user(uow_factory, email="Ada.Lovelace@Example.COM")
        with uow_factory() as uow:
            assert uow.users.get_by_email("ada.lovelace@example.com") == user
            assert uow.users.get_by_email("ADA.LOVELACE@EXAMPLE.COM") == user
            assert uow.users.get_by_email("ada@example.com") is None

    def test_users_duplicate_email_in_any_case_raises_email_taken(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        _seed_user(uow_factory, email="a@example.com")
        with uow_factory() as uow, pytest.raises(EmailTaken):
            uow.users.add(make_user(email="A@EXAMPLE.com"))
        assert peek(uow_factory, lambda uow: uow.users.count()) == 1

    def test_users_get_many(self, uow_factory: UnitOfWorkFactory) -> None:
        first, second, third = (make_user(metadata={"n": i}) for i in range(3))
        add_all(uow_factory, lambda uow: uow.users.add, first, second, third)
        with uow_factory(read_only=True) as uow:
            found = uow.users.get_many([third.id, new_id(), first.id, third.id])
            assert sorted(found, key=lambda u: u.id) == sorted([first, third], key=lambda u: u.id)
            assert uow.users.get_many([]) == []
            assert uow.users.get_many(iter([new_id()])) == []
            everyone = uow.users.get_many(u.id for u in (first, second, third))
            assert {u.id for u in everyone} == {first.id, second.id, third.id}
            assert len(everyone) == 3
            found[0].metadata["changed"] = True  # never the stored object
            assert uow.users.get(found[0].id) in (first, third)

    def test_users_update(self, uow_factory: UnitOfWorkFactory) -> None:
        user = _seed_user(uow_factory, email="old@example.com")
        changed = dataclasses.replace(
            user, email="New@example.com", name="New", is_active=False, deactivated_at=T0
        )
        transact(uow_factory, lambda uow: uow.users.update(changed))
        with uow_factory() as uow:
            assert uow.users.get(user.id) == changed
            assert uow.users.get_by_email("new@example.com") == changed
            assert uow.users.get_by_email("old@example.com") is None
            uow.users.add(make_user(email="old@example.com"))  # the old email is free

    def test_users_update_email_conflicts(self, uow_factory: UnitOfWorkFactory) -> None:
        first = _seed_user(uow_factory, email="first@example.com")
        second = _seed_user(uow_factory, email="second@example.com")
        with uow_factory() as uow, pytest.raises(EmailTaken):
            uow.users.update(dataclasses.replace(second, email="FIRST@example.com"))
        recased = dataclasses.replace(first, email="First@Example.com")
        transact(uow_factory, lambda uow: uow.users.update(recased))  # own email, new case
        assert peek(uow_factory, lambda uow: uow.users.get(first.id)) == recased

    def test_users_update_missing_raises_not_found(self, uow_factory: UnitOfWorkFactory) -> None:
        with uow_factory() as uow, pytest.raises(NotFound):
            uow.users.update(make_user())

    def test_users_list_orders_by_id_with_cursor_and_prefix(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        emails = ["alice@a.test", "bob@b.test", "ALBERT@c.test", "carol@d.test", "Alma@e.test"]
        users = [_seed_user(uow_factory, email=e) for e in emails]
        with uow_factory() as uow:
            listed = uow.users.list(email_prefix=None, limit=10, after=None)
            assert listed == users
            assert uow.users.list(email_prefix=None, limit=2, after=None) == users[:2]
            assert uow.users.list(email_prefix=None, limit=10, after=users[1].id) == users[2:]
            assert uow.users.list(email_prefix=None, limit=10, after=users[-1].id) == []
            by_prefix = uow.users.list(email_prefix="AL", limit=10, after=None)
            assert by_prefix == [users[0], users[2], users[4]]
            after_alice = uow.users.list(email_prefix="al", limit=1, after=users[0].id)
            assert after_alice == [users[2]]
            assert uow.users.list(email_prefix="zed", limit=10, after=None) == []

    def test_users_list_pages_through_everything_once(self, uow_factory: UnitOfWorkFactory) -> None:
        users = [make_user() for _ in range(7)]
        add_all(uow_factory, lambda uow: uow.users.add, *users)
        seen: list[UUID] = []
        cursor: UUID | None = None
        with uow_factory() as uow:
            while page := uow.users.list(email_prefix=None, limit=3, after=cursor):
                seen += [u.id for u in page]
                cursor = page[-1].id
        assert seen == sorted(u.id for u in users)

    def test_users_metadata_is_never_shared(self, uow_factory: UnitOfWorkFactory) -> None:
        metadata: dict[str, Any] = {"nested": {"n": 1}, "list": [1]}
        user = make_user(metadata=metadata)
        with uow_factory() as uow:
            uow.users.add(user)
            metadata["nested"]["n"] = 2  # the caller keeps mutating its dict
            uow.commit()
        with uow_factory() as uow:
            loaded = uow.users.get(user.id)
            assert loaded is not None
            assert loaded.metadata == {"nested": {"n": 1}, "list": [1]}
            loaded.metadata["nested"]["n"] = 3
            loaded.metadata["list"].append(2)
            by_email = uow.users.get_by_email(user.email)
            assert by_email is not None
            assert by_email.metadata == {"nested": {"n": 1}, "list": [1]}
            listed = uow.users.list(email_prefix=None, limit=1, after=None)
            listed[0].metadata["new"] = True
            assert uow.users.get(user.id) == dataclasses.replace(
                user, metadata={"nested": {"n": 1}, "list": [1]}
            )

    def test_users_concurrent_registration_of_one_email(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        def register(i: int) -> User:
            user = make_user(email="Race@Example.com" if i % 2 else "race@example.COM")
            transact(uow_factory, lambda uow: uow.users.add(user))
            return user

        results = race(RACE_THREADS, register)
        winners = [r for r in results if isinstance(r, User)]
        assert len(winners) == 1
        assert all(isinstance(r, EmailTaken) for r in results if not isinstance(r, User))
        assert (
            peek(uow_factory, lambda uow: uow.users.get_by_email("RACE@example.com")) == winners[0]
        )


class OrganizationRepositoryContract:
    def test_orgs_add_get_by_id_and_slug(self, uow_factory: UnitOfWorkFactory) -> None:
        org = make_organization(slug="acme", metadata={"tier": "gold"})
        transact(uow_factory, lambda uow: uow.organizations.add(org))
        with uow_factory() as uow:
            assert uow.organizations.get(org.id) == org
            assert uow.organizations.get(org.id, for_update=True) == org
            assert uow.organizations.get_by_slug("acme") == org
            assert uow.organizations.get_by_slug("other") is None
            assert uow.organizations.get(new_id()) is None

    def test_orgs_duplicate_slug_raises_slug_taken(self, uow_factory: UnitOfWorkFactory) -> None:
        _seed_org(uow_factory, slug="acme")
        with uow_factory() as uow, pytest.raises(SlugTaken):
            uow.organizations.add(make_organization(slug="acme"))

    def test_orgs_update_and_slug_conflict(self, uow_factory: UnitOfWorkFactory) -> None:
        org = _seed_org(uow_factory, slug="acme")
        _seed_org(uow_factory, slug="taken")
        with uow_factory() as uow, pytest.raises(SlugTaken):
            uow.organizations.update(dataclasses.replace(org, slug="taken"))
        renamed = dataclasses.replace(org, slug="acme-2", name="Acme 2", metadata={"k": 1})
        transact(uow_factory, lambda uow: uow.organizations.update(renamed))
        with uow_factory() as uow:
            assert uow.organizations.get(org.id) == renamed
            assert uow.organizations.get_by_slug("acme-2") == renamed
            assert uow.organizations.get_by_slug("acme") is None
            uow.organizations.add(make_organization(slug="acme"))  # the old slug is free

    def test_orgs_update_missing_raises_not_found(self, uow_factory: UnitOfWorkFactory) -> None:
        with uow_factory() as uow, pytest.raises(NotFound):
            uow.organizations.update(make_organization())

    def test_orgs_list_ids(self, uow_factory: UnitOfWorkFactory) -> None:
        orgs = [_seed_org(uow_factory) for _ in range(3)]
        listed = peek(uow_factory, lambda uow: uow.organizations.list_ids())
        assert sorted(listed) == sorted(o.id for o in orgs)

    def test_orgs_delete_cascades_but_keeps_audit_and_users(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        user = _seed_user(uow_factory)
        doomed, other = _seed_org(uow_factory, slug="doomed"), _seed_org(uow_factory)
        role, other_role = _seed_role(uow_factory, doomed), _seed_role(uow_factory, other)
        event = make_audit_event("organization.created", organization_id=doomed.id)

        def populate(uow: UnitOfWork) -> AuditEvent:
            uow.memberships.add(make_membership(doomed.id, user.id, [role.id]))
            uow.memberships.add(make_membership(other.id, user.id, [other_role.id]))
            uow.invitations.add(make_invitation(doomed.id, [role.id], token_hash="doomed-inv"))
            uow.invitations.add(make_invitation(other.id, [other_role.id], token_hash="other-inv"))
            return uow.audit.add(event)

        event = transact(uow_factory, populate)
        transact(uow_factory, lambda uow: uow.organizations.delete(doomed.id))
        with uow_factory() as uow:
            assert uow.organizations.get(doomed.id) is None
            assert uow.organizations.get_by_slug("doomed") is None
            assert uow.roles.list(doomed.id) == []
            assert uow.roles.get(doomed.id, role.id) is None
            assert uow.roles.get_by_name(doomed.id, role.name) is None
            assert uow.roles.get_many(doomed.id, [role.id]) == []
            assert not uow.roles.is_assigned(role.id)
            assert uow.memberships.get(doomed.id, user.id) is None
            assert uow.invitations.get_by_token_hash("doomed-inv") is None
            assert [m.organization_id for m in uow.memberships.list_for_user(user.id)] == [other.id]
            assert uow.invitations.get_by_token_hash("other-inv") is not None
            assert uow.roles.list(other.id) == [other_role]
            assert uow.users.get(user.id) == user
            query = AuditQuery(organization_id=doomed.id)
            assert uow.audit.list(query, limit=10, before=None) == [event]
            uow.organizations.delete(new_id())  # an unknown id is ignored
            # the slug and the role name are free again
            uow.organizations.add(make_organization(slug="doomed"))

    def test_orgs_metadata_is_never_shared(self, uow_factory: UnitOfWorkFactory) -> None:
        metadata: dict[str, Any] = {"a": {"b": [1]}}
        org = make_organization(metadata=metadata)
        with uow_factory() as uow:
            uow.organizations.add(org)
            metadata["a"]["b"].append(2)
            uow.commit()
        with uow_factory() as uow:
            loaded = uow.organizations.get(org.id)
            assert loaded is not None
            assert loaded.metadata == {"a": {"b": [1]}}
            loaded.metadata["a"]["b"].append(3)
            by_slug = uow.organizations.get_by_slug(org.slug)
            assert by_slug is not None
            assert by_slug.metadata == {"a": {"b": [1]}}

    def test_orgs_for_update_serialises_read_modify_write(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        org = _seed_org(uow_factory, metadata={"counter": 0})

        def increment(uow: UnitOfWork) -> None:
            current = uow.organizations.get(org.id, for_update=True)
            assert current is not None
            counter = current.metadata["counter"] + 1
            uow.organizations.update(dataclasses.replace(current, metadata={"counter": counter}))

        results = race(RACE_THREADS, lambda _: transact(uow_factory, increment))
        assert [r for r in results if isinstance(r, Exception)] == []
        final = peek(uow_factory, lambda uow: uow.organizations.get(org.id))
        assert final is not None
        assert final.metadata == {"counter": RACE_THREADS}


class PermissionRepositoryContract:
    def test_permissions_ensure_is_idempotent_and_list_sorted(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        first = [
            Permission("member:read", "Read members", is_system=True),
            Permission("audit:read", "Read the audit log", is_system=True),
        ]
        transact(uow_factory, lambda uow: uow.permissions.ensure(first))
        again = [
            Permission("member:read", "A different description"),
            Permission("project:create", "Create projects"),
        ]
        transact(uow_factory, lambda uow: uow.permissions.ensure(iter(again)))
        transact(uow_factory, lambda uow: uow.permissions.ensure([]))
        listed = peek(uow_factory, lambda uow: uow.permissions.list())
        assert listed == [
            Permission("audit:read", "Read the audit log", is_system=True),
            Permission("member:read", "Read members", is_system=True),
            Permission("project:create", "Create projects"),
        ]

    def test_permissions_ensure_rolls_back(self, uow_factory: UnitOfWorkFactory) -> None:
        with uow_factory() as uow:
            uow.permissions.ensure([Permission("x:y")])
        assert peek(uow_factory, lambda uow: uow.permissions.list()) == []


class RoleRepositoryContract:
    def test_roles_add_get_and_get_by_name(self, uow_factory: UnitOfWorkFactory) -> None:
        org, other = _seed_org(uow_factory), _seed_org(uow_factory)
        role = make_role(org.id, "editor", ["doc:read", "doc:write"], description="Edits")
        transact(uow_factory, lambda uow: uow.roles.add(role))
        with uow_factory() as uow:
            assert uow.roles.get(org.id, role.id) == role
            assert uow.roles.get(other.id, role.id) is None  # wrong organization
            assert uow.roles.get(org.id, new_id()) is None
            assert uow.roles.get_by_name(org.id, "editor") == role
            assert uow.roles.get_by_name(other.id, "editor") is None
            assert uow.roles.get_by_name(org.id, "viewer") is None

    def test_roles_name_is_unique_per_organization(self, uow_factory: UnitOfWorkFactory) -> None:
        org, other = _seed_org(uow_factory), _seed_org(uow_factory)
        _seed_role(uow_factory, org, name="editor")
        with uow_factory() as uow, pytest.raises(RoleNameTaken):
            uow.roles.add(make_role(org.id, "editor"))
        _seed_role(uow_factory, other, name="editor")  # fine in another organization

    def test_roles_list_in_creation_order(self, uow_factory: UnitOfWorkFactory) -> None:
        org, other = _seed_org(uow_factory), _seed_org(uow_factory)
        # ids are created in one order, creation times say another
        late = make_role(org.id, "late", created_at=T0 + timedelta(minutes=2))
        tie_a = make_role(org.id, "tie-a", created_at=T0 + timedelta(minutes=1))
        tie_b = make_role(org.id, "tie-b", created_at=T0 + timedelta(minutes=1))
        owner = make_role(org.id, "owner", created_at=T0, is_system=True)
        foreign = make_role(other.id, "foreign")
        add_all(uow_factory, lambda uow: uow.roles.add, late, tie_a, tie_b, owner, foreign)
        assert peek(uow_factory, lambda uow: uow.roles.list(org.id)) == [owner, tie_a, tie_b, late]
        assert peek(uow_factory, lambda uow: uow.roles.list(new_id())) == []

    def test_roles_get_many(self, uow_factory: UnitOfWorkFactory) -> None:
        org, other = _seed_org(uow_factory), _seed_org(uow_factory)
        a, b = _seed_role(uow_factory, org), _seed_role(uow_factory, org)
        foreign = _seed_role(uow_factory, other)
        with uow_factory() as uow:
            found = uow.roles.get_many(org.id, [b.id, foreign.id, new_id(), a.id, b.id])
            assert sorted(found, key=lambda r: r.id) == [a, b]
            assert uow.roles.get_many(org.id, []) == []
            assert uow.roles.get_many(org.id, iter([a.id])) == [a]

    def test_roles_update_and_name_conflict(self, uow_factory: UnitOfWorkFactory) -> None:
        org = _seed_org(uow_factory)
        role = _seed_role(uow_factory, org, name="editor")
        _seed_role(uow_factory, org, name="viewer")
        with uow_factory() as uow, pytest.raises(RoleNameTaken):
            uow.roles.update(dataclasses.replace(role, name="viewer"))
        changed = dataclasses.replace(
            role, name="writer", permissions=frozenset({"doc:write"}), updated_at=T0 + timedelta(1)
        )
        transact(uow_factory, lambda uow: uow.roles.update(changed))
        with uow_factory() as uow:
            assert uow.roles.get(org.id, role.id) == changed
            assert uow.roles.get_by_name(org.id, "writer") == changed
            assert uow.roles.get_by_name(org.id, "editor") is None
            with pytest.raises(NotFound):
                uow.roles.update(make_role(org.id))

    def test_roles_delete(self, uow_factory: UnitOfWorkFactory) -> None:
        org, other = _seed_org(uow_factory), _seed_org(uow_factory)
        role = _seed_role(uow_factory, org, name="editor")
        transact(uow_factory, lambda uow: uow.roles.delete(other.id, role.id))  # wrong org
        assert peek(uow_factory, lambda uow: uow.roles.get(org.id, role.id)) == role
        transact(uow_factory, lambda uow: uow.roles.delete(org.id, role.id))
        with uow_factory() as uow:
            assert uow.roles.get(org.id, role.id) is None
            assert uow.roles.list(org.id) == []
            uow.roles.add(make_role(org.id, "editor"))  # the name is free again

    def test_roles_is_assigned(self, uow_factory: UnitOfWorkFactory) -> None:
        org = _seed_org(uow_factory)
        user = _seed_user(uow_factory)
        held, invited, accepted, revoked, free = (_seed_role(uow_factory, org) for _ in range(5))
        accepted_inv = make_invitation(org.id, [accepted.id])
        revoked_inv = make_invitation(org.id, [revoked.id])

        def populate(uow: UnitOfWork) -> None:
            uow.memberships.add(make_membership(org.id, user.id, [held.id]))
            # still pending even though expired: it can be listed and revoked
            uow.invitations.add(
                make_invitation(org.id, [invited.id], expires_at=T0 - timedelta(days=1))
            )
            uow.invitations.add(accepted_inv)
            uow.invitations.add(revoked_inv)

        transact(uow_factory, populate)

        def settle(uow: UnitOfWork) -> None:
            assert uow.invitations.accept(accepted_inv.id, user.id, T0) is not None
            assert uow.invitations.revoke(revoked_inv.id, T0) is not None

        transact(uow_factory, settle)
        with uow_factory() as uow:
            assert uow.roles.is_assigned(held.id)
            assert uow.roles.is_assigned(invited.id)
            assert not uow.roles.is_assigned(accepted.id)
            assert not uow.roles.is_assigned(revoked.id)
            assert not uow.roles.is_assigned(free.id)


class MembershipRepositoryContract:
    def test_memberships_add_get_update_delete(self, uow_factory: UnitOfWorkFactory) -> None:
        org, user = _seed_org(uow_factory), _seed_user(uow_factory)
        a, b = _seed_role(uow_factory, org), _seed_role(uow_factory, org)
        membership = make_membership(org.id, user.id, [a.id])
        transact(uow_factory, lambda uow: uow.memberships.add(membership))
        with uow_factory() as uow:
            assert uow.memberships.get(org.id, user.id) == membership
            assert uow.memberships.get(org.id, new_id()) is None
            assert uow.memberships.get(new_id(), user.id) is None
        changed = dataclasses.replace(
            membership, role_ids=frozenset({a.id, b.id}), version=2, updated_at=T0 + timedelta(1)
        )
        transact(uow_factory, lambda uow: uow.memberships.update(changed))
        assert peek(uow_factory, lambda uow: uow.memberships.get(org.id, user.id)) == changed
        transact(uow_factory, lambda uow: uow.memberships.delete(org.id, user.id))
        with uow_factory() as uow:
            assert uow.memberships.get(org.id, user.id) is None
            uow.memberships.delete(org.id, user.id)  # deleting again is harmless
            uow.memberships.add(make_membership(org.id, user.id))  # can join again

    def test_memberships_update_missing_raises_not_found(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        org, user = _seed_org(uow_factory), _seed_user(uow_factory)
        with uow_factory() as uow, pytest.raises(NotFound):
            uow.memberships.update(make_membership(org.id, user.id))

    def test_memberships_second_pair_raises_already_member(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        org, user = _seed_org(uow_factory), _seed_user(uow_factory)
        transact(uow_factory, lambda uow: uow.memberships.add(make_membership(org.id, user.id)))
        with uow_factory() as uow, pytest.raises(AlreadyMember):
            uow.memberships.add(make_membership(org.id, user.id))

    def test_memberships_lists_and_counts(self, uow_factory: UnitOfWorkFactory) -> None:
        org, other = _seed_org(uow_factory), _seed_org(uow_factory)
        owner, member = _seed_role(uow_factory, org), _seed_role(uow_factory, org)
        users = [_seed_user(uow_factory) for _ in range(5)]
        role_sets = [[owner.id], [owner.id], [member.id], [member.id, owner.id], [member.id]]
        ms = [make_membership(org.id, u.id, r) for u, r in zip(users, role_sets, strict=True)]
        foreign = make_membership(other.id, users[0].id)
        add_all(uow_factory, lambda uow: uow.memberships.add, *ms, foreign)
        with uow_factory() as uow:
            assert uow.memberships.list_for_organization(org.id, limit=10, after=None) == ms
            assert uow.memberships.list_for_organization(org.id, limit=2, after=None) == ms[:2]
            assert uow.memberships.list_for_organization(org.id, limit=2, after=ms[1].id) == ms[2:4]
            assert uow.memberships.list_for_organization(org.id, limit=9, after=ms[4].id) == []
            assert uow.memberships.list_for_user(users[0].id) == [ms[0], foreign]
            assert uow.memberships.list_for_user(new_id()) == []
            assert uow.memberships.count_with_role(org.id, owner.id) == 3
            assert uow.memberships.count_with_role(org.id, member.id) == 3
            assert uow.memberships.count_with_role(other.id, owner.id) == 0

    def test_memberships_concurrent_add_of_one_pair(self, uow_factory: UnitOfWorkFactory) -> None:
        org, user = _seed_org(uow_factory), _seed_user(uow_factory)

        def join(_: int) -> Membership:
            membership = make_membership(org.id, user.id)
            transact(uow_factory, lambda uow: uow.memberships.add(membership))
            return membership

        results = race(RACE_THREADS, join)
        winners = [r for r in results if isinstance(r, Membership)]
        assert len(winners) == 1
        assert all(isinstance(r, AlreadyMember) for r in results if r not in winners)
        assert peek(uow_factory, lambda uow: uow.memberships.get(org.id, user.id)) == winners[0]


class InvitationRepositoryContract:
    def test_invitations_add_get_and_lookup(self, uow_factory: UnitOfWorkFactory) -> None:
        org, other = _seed_org(uow_factory), _seed_org(uow_factory)
        inviter = _seed_user(uow_factory)
        role = _seed_role(uow_factory, org)
        inv = make_invitation(org.id, [role.id], invited_by=inviter.id, email="new@example.com")
        transact(uow_factory, lambda uow: uow.invitations.add(inv))
        with uow_factory() as uow:
            assert uow.invitations.get(org.id, inv.id) == inv
            assert uow.invitations.get(other.id, inv.id) is None  # wrong organization
            assert uow.invitations.get(org.id, new_id()) is None
            assert uow.invitations.get_by_token_hash(inv.token_hash) == inv
            assert uow.invitations.get_by_token_hash(_hash()) is None

    def test_invitations_list_for_organization(self, uow_factory: UnitOfWorkFactory) -> None:
        org, other = _seed_org(uow_factory), _seed_org(uow_factory)
        invs = [make_invitation(org.id) for _ in range(4)]
        foreign = make_invitation(other.id)
        add_all(uow_factory, lambda uow: uow.invitations.add, *invs, foreign)
        with uow_factory() as uow:
            assert uow.invitations.list_for_organization(org.id, limit=10, after=None) == invs
            assert uow.invitations.list_for_organization(org.id, limit=3, after=None) == invs[:3]
            page = uow.invitations.list_for_organization(org.id, limit=10, after=invs[1].id)
            assert page == invs[2:]

    def test_invitations_accept(self, uow_factory: UnitOfWorkFactory) -> None:
        org, user = _seed_org(uow_factory), _seed_user(uow_factory)
        inv = make_invitation(org.id)
        transact(uow_factory, lambda uow: uow.invitations.add(inv))
        now = T0 + timedelta(hours=1)
        accepted = transact(uow_factory, lambda uow: uow.invitations.accept(inv.id, user.id, now))
        assert accepted == dataclasses.replace(inv, accepted_at=now, accepted_by=user.id)
        assert peek(uow_factory, lambda uow: uow.invitations.get(org.id, inv.id)) == accepted
        later = now + timedelta(minutes=1)
        assert (
            transact(uow_factory, lambda uow: uow.invitations.accept(inv.id, user.id, later))
            is None
        )
        assert transact(uow_factory, lambda uow: uow.invitations.revoke(inv.id, later)) is None
        assert peek(uow_factory, lambda uow: uow.invitations.get(org.id, inv.id)) == accepted
        unknown = transact(uow_factory, lambda uow: uow.invitations.accept(new_id(), user.id, now))
        assert unknown is None

    def test_invitations_accept_refuses_expired(self, uow_factory: UnitOfWorkFactory) -> None:
        org, user = _seed_org(uow_factory), _seed_user(uow_factory)
        inv = make_invitation(org.id, expires_at=T0 + timedelta(hours=1))
        transact(uow_factory, lambda uow: uow.invitations.add(inv))
        at_expiry = inv.expires_at  # expired at the instant of expires_at
        assert (
            transact(uow_factory, lambda uow: uow.invitations.accept(inv.id, user.id, at_expiry))
            is None
        )
        stored = peek(uow_factory, lambda uow: uow.invitations.get(org.id, inv.id))
        assert stored == inv
        just_before = inv.expires_at - timedelta(seconds=1)
        accepted = transact(
            uow_factory, lambda uow: uow.invitations.accept(inv.id, user.id, just_before)
        )
        assert accepted is not None
        assert accepted.accepted_at == just_before

    def test_invitations_revoke(self, uow_factory: UnitOfWorkFactory) -> None:
        org, user = _seed_org(uow_factory), _seed_user(uow_factory)
        inv = make_invitation(org.id)
        expired = make_invitation(org.id, expires_at=T0 - timedelta(days=1))
        add_all(uow_factory, lambda uow: uow.invitations.add, inv, expired)
        now = T0 + timedelta(minutes=5)
        revoked = transact(uow_factory, lambda uow: uow.invitations.revoke(inv.id, now))
        assert revoked == dataclasses.replace(inv, revoked_at=now)
        assert transact(uow_factory, lambda uow: uow.invitations.revoke(inv.id, now)) is None
        assert (
            transact(uow_factory, lambda uow: uow.invitations.accept(inv.id, user.id, now)) is None
        )
        assert peek(uow_factory, lambda uow: uow.invitations.get(org.id, inv.id)) == revoked
        # an expired but never settled invitation can still be revoked
        assert (
            transact(uow_factory, lambda uow: uow.invitations.revoke(expired.id, now)) is not None
        )
        assert transact(uow_factory, lambda uow: uow.invitations.revoke(new_id(), now)) is None

    def test_invitations_concurrent_accepts_have_one_winner(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        org = _seed_org(uow_factory)
        users = [_seed_user(uow_factory) for _ in range(RACE_THREADS)]
        for _ in range(RACE_ITERATIONS):
            inv = make_invitation(org.id)
            add_all(uow_factory, lambda uow: uow.invitations.add, inv)

            def accept(i: int, inv: Invitation = inv) -> Invitation | None:
                return transact(
                    uow_factory, lambda uow: uow.invitations.accept(inv.id, users[i].id, T0)
                )

            results = race(RACE_THREADS, accept)
            winners = [r for r in results if isinstance(r, Invitation)]
            assert len(winners) == 1, results
            assert results.count(None) == RACE_THREADS - 1
            with uow_factory() as uow:
                stored = uow.invitations.get(org.id, inv.id)
            assert stored == winners[0]
            assert stored.accepted_by == users[results.index(winners[0])].id

    def test_invitations_accept_races_revoke(self, uow_factory: UnitOfWorkFactory) -> None:
        org, user = _seed_org(uow_factory), _seed_user(uow_factory)
        for _ in range(RACE_ITERATIONS):
            inv = make_invitation(org.id)
            add_all(uow_factory, lambda uow: uow.invitations.add, inv)

            def settle(i: int, inv: Invitation = inv) -> Invitation | None:
                if i % 2:
                    return transact(uow_factory, lambda uow: uow.invitations.revoke(inv.id, T0))
                return transact(
                    uow_factory, lambda uow: uow.invitations.accept(inv.id, user.id, T0)
                )

            results = race(4, settle)
            winners = [r for r in results if isinstance(r, Invitation)]
            assert len(winners) == 1, results
            with uow_factory() as uow:
                stored = uow.invitations.get(org.id, inv.id)
            assert stored == winners[0]
            assert (stored.accepted_at is None) != (stored.revoked_at is None)


class SessionRepositoryContract:
    def test_sessions_add_get(self, uow_factory: UnitOfWorkFactory) -> None:
        user = _seed_user(uow_factory)
        session = make_session(user.id)
        transact(uow_factory, lambda uow: uow.sessions.add(session))
        assert peek(uow_factory, lambda uow: uow.sessions.get(session.id)) == session
        assert peek(uow_factory, lambda uow: uow.sessions.get(new_id())) is None

    def test_sessions_list_active_and_count(self, uow_factory: UnitOfWorkFactory) -> None:
        user, other = _seed_user(uow_factory), _seed_user(uow_factory)
        now = T0 + timedelta(hours=1)
        oldest = make_session(user.id, created_at=T0)
        newest = make_session(user.id, created_at=T0 + timedelta(minutes=2))
        middle = make_session(user.id, created_at=T0 + timedelta(minutes=1))
        revoked = make_session(user.id, revoked_at=T0, revoked_reason="logout")
        expired = make_session(user.id, expires_at=now)
        foreign = make_session(other.id)
        all_sessions = [oldest, newest, middle, revoked, expired, foreign]
        add_all(uow_factory, lambda uow: uow.sessions.add, *all_sessions)
        with uow_factory() as uow:
            assert uow.sessions.list_active_for_user(user.id, now) == [newest, middle, oldest]
            assert uow.sessions.list_active_for_user(other.id, now) == [foreign]
            assert uow.sessions.list_active_for_user(new_id(), now) == []
            assert uow.sessions.count_active(now) == 4
            assert uow.sessions.count_active(now - timedelta(seconds=1)) == 5  # not yet expired
            assert uow.sessions.count_active(T0 + timedelta(days=30)) == 0

    def test_sessions_rotate(self, uow_factory: UnitOfWorkFactory) -> None:
        user = _seed_user(uow_factory)
        session = make_session(user.id)
        transact(uow_factory, lambda uow: uow.sessions.add(session))
        now = T0 + timedelta(minutes=10)

        def rotate(generation: int, expected: str, new: str) -> Callable[[UnitOfWork], Any]:
            return lambda uow: uow.sessions.rotate(
                session.id,
                expected_generation=generation,
                expected_token_hash=expected,
                new_token_hash=new,
                now=now,
            )

        assert transact(uow_factory, rotate(2, session.token_hash, "h2")) is None  # generation
        assert transact(uow_factory, rotate(1, "wrong", "h2")) is None  # token hash
        assert peek(uow_factory, lambda uow: uow.sessions.get(session.id)) == session
        rotated = transact(uow_factory, rotate(1, session.token_hash, "h2"))
        expected = dataclasses.replace(session, generation=2, token_hash="h2", last_used_at=now)
        assert rotated == expected
        assert peek(uow_factory, lambda uow: uow.sessions.get(session.id)) == expected
        assert transact(uow_factory, rotate(1, session.token_hash, "h3")) is None  # replayed
        assert transact(uow_factory, rotate(2, "h2", "h3")) is not None
        unknown = transact(
            uow_factory,
            lambda uow: uow.sessions.rotate(
                new_id(),
                expected_generation=1,
                expected_token_hash="x",
                new_token_hash="y",
                now=now,
            ),
        )
        assert unknown is None

    def test_sessions_revoke(self, uow_factory: UnitOfWorkFactory) -> None:
        user = _seed_user(uow_factory)
        session = make_session(user.id)
        transact(uow_factory, lambda uow: uow.sessions.add(session))
        now = T0 + timedelta(minutes=1)
        assert transact(uow_factory, lambda uow: uow.sessions.revoke(session.id, now, "logout"))
        later = now + timedelta(minutes=1)
        assert not transact(
            uow_factory, lambda uow: uow.sessions.revoke(session.id, later, "again")
        )
        stored = peek(uow_factory, lambda uow: uow.sessions.get(session.id))
        assert stored == dataclasses.replace(session, revoked_at=now, revoked_reason="logout")
        assert not transact(uow_factory, lambda uow: uow.sessions.revoke(new_id(), now, "x"))
        # a revoked session can never rotate
        rotated = transact(
            uow_factory,
            lambda uow: uow.sessions.rotate(
                session.id,
                expected_generation=1,
                expected_token_hash=session.token_hash,
                new_token_hash="h2",
                now=later,
            ),
        )
        assert rotated is None

    def test_sessions_revoke_all_for_user(self, uow_factory: UnitOfWorkFactory) -> None:
        user, other = _seed_user(uow_factory), _seed_user(uow_factory)
        keep, a, b = (make_session(user.id) for _ in range(3))
        already = make_session(user.id, revoked_at=T0, revoked_reason="logout")
        foreign = make_session(other.id)
        add_all(uow_factory, lambda uow: uow.sessions.add, keep, a, b, already, foreign)
        now = T0 + timedelta(minutes=3)
        revoked = transact(
            uow_factory,
            lambda uow: uow.sessions.revoke_all_for_user(
                user.id, now, "password", except_id=keep.id
            ),
        )
        assert sorted(revoked) == sorted([a.id, b.id])
        with uow_factory() as uow:
            for s in (a, b):
                assert uow.sessions.get(s.id) == dataclasses.replace(
                    s, revoked_at=now, revoked_reason="password"
                )
            assert uow.sessions.get(already.id) == already
            assert uow.sessions.get(keep.id) == keep
            assert uow.sessions.get(foreign.id) == foreign
        everything = transact(
            uow_factory, lambda uow: uow.sessions.revoke_all_for_user(user.id, now, "all")
        )
        assert everything == [keep.id]
        assert (
            transact(uow_factory, lambda uow: uow.sessions.revoke_all_for_user(user.id, now, "x"))
            == []
        )

    def test_sessions_concurrent_rotations_have_one_winner(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        user = _seed_user(uow_factory)
        for _ in range(RACE_ITERATIONS):
            session = make_session(user.id)
            add_all(uow_factory, lambda uow: uow.sessions.add, session)

            def rotate(i: int, s: Session = session) -> Session | None:
                return transact(
                    uow_factory,
                    lambda uow: uow.sessions.rotate(
                        s.id,
                        expected_generation=1,
                        expected_token_hash=s.token_hash,
                        new_token_hash=f"next-{i}",
                        now=T0,
                    ),
                )

            results = race(RACE_THREADS, rotate)
            winners = [r for r in results if isinstance(r, Session)]
            assert len(winners) == 1, results
            assert results.count(None) == RACE_THREADS - 1
            with uow_factory() as uow:
                stored = uow.sessions.get(session.id)
            assert stored == winners[0]
            assert stored.generation == 2
            assert stored.token_hash == f"next-{results.index(winners[0])}"

    def test_sessions_concurrent_revokes_have_one_winner(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        user = _seed_user(uow_factory)
        for _ in range(RACE_ITERATIONS // 2):
            session = make_session(user.id)
            add_all(uow_factory, lambda uow: uow.sessions.add, session)

            def revoke(i: int, s: Session = session) -> bool:
                return transact(uow_factory, lambda uow: uow.sessions.revoke(s.id, T0, f"r{i}"))

            results = race(RACE_THREADS, revoke)
            assert results.count(True) == 1, results
            assert results.count(False) == RACE_THREADS - 1
            with uow_factory() as uow:
                stored = uow.sessions.get(session.id)
            assert stored is not None
            assert stored.revoked_reason == f"r{results.index(True)}"


class OneTimeTokenRepositoryContract:
    def test_tokens_add_find_consume(self, uow_factory: UnitOfWorkFactory) -> None:
        user = _seed_user(uow_factory)
        token = make_token(user.id, TokenPurpose.PASSWORD_RESET)
        transact(uow_factory, lambda uow: uow.tokens.add(token))
        purpose, h = TokenPurpose.PASSWORD_RESET, token.token_hash
        assert peek(uow_factory, lambda uow: uow.tokens.find(purpose, h)) == token
        other = TokenPurpose.EMAIL_VERIFICATION
        assert peek(uow_factory, lambda uow: uow.tokens.find(other, h)) is None
        now = T0 + timedelta(minutes=30)
        assert transact(uow_factory, lambda uow: uow.tokens.consume(other, h, now)) is None
        used = transact(uow_factory, lambda uow: uow.tokens.consume(purpose, h, now))
        assert used == dataclasses.replace(token, used_at=now)
        assert transact(uow_factory, lambda uow: uow.tokens.consume(purpose, h, now)) is None
        assert peek(uow_factory, lambda uow: uow.tokens.find(purpose, h)) == used
        assert transact(uow_factory, lambda uow: uow.tokens.consume(purpose, _hash(), now)) is None

    def test_tokens_consume_refuses_expired(self, uow_factory: UnitOfWorkFactory) -> None:
        user = _seed_user(uow_factory)
        token = make_token(user.id)
        transact(uow_factory, lambda uow: uow.tokens.add(token))
        p, h = token.purpose, token.token_hash
        assert transact(uow_factory, lambda uow: uow.tokens.consume(p, h, token.expires_at)) is None
        assert peek(uow_factory, lambda uow: uow.tokens.find(p, h)) == token
        before = token.expires_at - timedelta(seconds=1)
        assert transact(uow_factory, lambda uow: uow.tokens.consume(p, h, before)) is not None

    def test_tokens_consume_rolls_back(self, uow_factory: UnitOfWorkFactory) -> None:
        user = _seed_user(uow_factory)
        token = make_token(user.id)
        transact(uow_factory, lambda uow: uow.tokens.add(token))
        with uow_factory() as uow:
            assert uow.tokens.consume(token.purpose, token.token_hash, T0) is not None
        used = transact(
            uow_factory, lambda uow: uow.tokens.consume(token.purpose, token.token_hash, T0)
        )
        assert used is not None

    def test_tokens_invalidate_for_user(self, uow_factory: UnitOfWorkFactory) -> None:
        user, other = _seed_user(uow_factory), _seed_user(uow_factory)
        reset = TokenPurpose.PASSWORD_RESET
        outstanding = [make_token(user.id, reset) for _ in range(2)]
        used = make_token(user.id, reset, used_at=T0)
        expired = make_token(user.id, reset, expires_at=T0)
        verification = make_token(user.id, TokenPurpose.EMAIL_VERIFICATION)
        foreign = make_token(other.id, reset)
        tokens = [*outstanding, used, expired, verification, foreign]
        add_all(uow_factory, lambda uow: uow.tokens.add, *tokens)
        now = T0 + timedelta(minutes=1)
        assert (
            transact(uow_factory, lambda uow: uow.tokens.invalidate_for_user(user.id, reset, now))
            == 2
        )
        with uow_factory() as uow:
            for t in outstanding:
                assert uow.tokens.find(reset, t.token_hash) == dataclasses.replace(t, used_at=now)
                assert uow.tokens.consume(reset, t.token_hash, now) is None
            for t in (used, expired, verification, foreign):
                assert uow.tokens.find(t.purpose, t.token_hash) == t
        assert (
            transact(uow_factory, lambda uow: uow.tokens.invalidate_for_user(user.id, reset, now))
            == 0
        )

    def test_tokens_concurrent_consumes_have_one_winner(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        user = _seed_user(uow_factory)
        for _ in range(RACE_ITERATIONS):
            token = make_token(user.id, TokenPurpose.PASSWORD_RESET)
            add_all(uow_factory, lambda uow: uow.tokens.add, token)

            def consume(_: int, t: OneTimeToken = token) -> OneTimeToken | None:
                return transact(
                    uow_factory, lambda uow: uow.tokens.consume(t.purpose, t.token_hash, T0)
                )

            results = race(RACE_THREADS, consume)
            winners = [r for r in results if isinstance(r, OneTimeToken)]
            assert len(winners) == 1, results
            assert results.count(None) == RACE_THREADS - 1
            assert winners[0].used_at == T0


class OAuthAccountRepositoryContract:
    def test_oauth_add_get_list(self, uow_factory: UnitOfWorkFactory) -> None:
        user, other = _seed_user(uow_factory), _seed_user(uow_factory)
        google = make_oauth_account(user.id, "google", "123", email="a@gmail.com")
        gitlab = make_oauth_account(user.id, "gitlab", "123")  # same subject, other provider
        foreign = make_oauth_account(other.id, "google", "456")
        add_all(uow_factory, lambda uow: uow.oauth_accounts.add, google, gitlab, foreign)
        with uow_factory() as uow:
            assert uow.oauth_accounts.get("google", "123") == google
            assert uow.oauth_accounts.get("gitlab", "123") == gitlab
            assert uow.oauth_accounts.get("google", "789") is None
            listed = uow.oauth_accounts.list_for_user(user.id)
            assert sorted(listed, key=lambda a: a.id) == [google, gitlab]
            assert uow.oauth_accounts.list_for_user(new_id()) == []

    def test_oauth_duplicate_link_raises_conflict(self, uow_factory: UnitOfWorkFactory) -> None:
        user, other = _seed_user(uow_factory), _seed_user(uow_factory)
        account = make_oauth_account(user.id, "google", "123")
        transact(uow_factory, lambda uow: uow.oauth_accounts.add(account))
        with uow_factory() as uow, pytest.raises(Conflict):
            uow.oauth_accounts.add(make_oauth_account(other.id, "google", "123"))
        assert peek(uow_factory, lambda uow: uow.oauth_accounts.list_for_user(other.id)) == []

    def test_oauth_delete(self, uow_factory: UnitOfWorkFactory) -> None:
        user = _seed_user(uow_factory)
        account = make_oauth_account(user.id, "google", "123")
        kept = make_oauth_account(user.id, "gitlab", "123")
        add_all(uow_factory, lambda uow: uow.oauth_accounts.add, account, kept)
        assert transact(uow_factory, lambda uow: uow.oauth_accounts.delete(account.id)) is True
        assert transact(uow_factory, lambda uow: uow.oauth_accounts.delete(account.id)) is False
        assert peek(uow_factory, lambda uow: uow.oauth_accounts.get("google", "123")) is None
        assert peek(uow_factory, lambda uow: uow.oauth_accounts.list_for_user(user.id)) == [kept]
        relinked = make_oauth_account(user.id, "google", "123")  # the pair is free again
        transact(uow_factory, lambda uow: uow.oauth_accounts.add(relinked))
        assert peek(uow_factory, lambda uow: uow.oauth_accounts.get("google", "123")) == relinked


class AuditLogRepositoryContract:
    def _events(
        self, uow_factory: UnitOfWorkFactory
    ) -> tuple[list[AuditEvent], Organization, User]:
        org, other = _seed_org(uow_factory), _seed_org(uow_factory)
        actor = _seed_user(uow_factory)
        specs = [  # (minutes after T0, organization, action, actor)
            (1, org, "member.added", actor),
            (2, other, "member.added", None),
            (3, org, "role.updated", actor),
            (4, org, "member.added", None),
            (5, org, "member.removed", actor),
        ]
        events = [
            make_audit_event(
                action,
                occurred_at=T0 + timedelta(minutes=minutes),
                organization_id=o.id,
                actor_user_id=None if a is None else a.id,
                target_type="user",
                target_id=str(new_id()),
                ip="198.51.100.1",
                user_agent="ua",
                request_id=f"req-{minutes}",
                metadata={"minutes": minutes},
            )
            for minutes, o, action, a in specs
        ]
        events = transact(uow_factory, lambda uow: [uow.audit.add(e) for e in events])
        return events, org, actor

    def test_audit_list_newest_first_with_cursor(self, uow_factory: UnitOfWorkFactory) -> None:
        events, _, _ = self._events(uow_factory)
        newest_first = events[::-1]
        with uow_factory() as uow:
            q = AuditQuery()
            assert uow.audit.list(q, limit=10, before=None) == newest_first
            assert uow.audit.list(q, limit=2, before=None) == newest_first[:2]
            assert uow.audit.list(q, limit=10, before=events[3].id) == newest_first[2:]
            assert uow.audit.list(q, limit=2, before=events[3].id) == newest_first[2:4]
            assert uow.audit.list(q, limit=10, before=events[0].id) == []

    def test_audit_list_filters(self, uow_factory: UnitOfWorkFactory) -> None:
        e, org, actor = self._events(uow_factory)

        def listed(**kw: Any) -> list[AuditEvent]:
            return peek(
                uow_factory, lambda uow: uow.audit.list(AuditQuery(**kw), limit=10, before=None)
            )

        assert listed(organization_id=org.id) == [e[4], e[3], e[2], e[0]]
        assert listed(action="member.added") == [e[3], e[1], e[0]]
        assert listed(actor_user_id=actor.id) == [e[4], e[2], e[0]]
        assert listed(since=T0 + timedelta(minutes=3)) == [e[4], e[3], e[2]]  # inclusive
        assert listed(until=T0 + timedelta(minutes=3)) == [e[1], e[0]]  # exclusive
        assert listed(
            organization_id=org.id,
            action="member.added",
            since=T0 + timedelta(minutes=1),
            until=T0 + timedelta(minutes=5),
        ) == [e[3], e[0]]
        assert listed(organization_id=new_id()) == []

    def test_audit_filtered_pages_stop_at_limit(self, uow_factory: UnitOfWorkFactory) -> None:
        e, org, _ = self._events(uow_factory)
        q = AuditQuery(organization_id=org.id)
        with uow_factory() as uow:
            first = uow.audit.list(q, limit=2, before=None)
            assert first == [e[4], e[3]]
            assert uow.audit.list(q, limit=2, before=first[-1].id) == [e[2], e[0]]

    def test_audit_list_filters_by_target(self, uow_factory: UnitOfWorkFactory) -> None:
        e, org, _ = self._events(uow_factory)
        assert peek(
            uow_factory,
            lambda uow: uow.audit.list(
                AuditQuery(organization_id=org.id, target_type="user", target_id=e[2].target_id),
                limit=10,
                before=None,
            ),
        ) == [e[2]]

    def test_audit_events_form_a_hash_chain_per_stream(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        e, org, _ = self._events(uow_factory)
        mine = [x for x in e if x.organization_id == org.id]
        assert [x.chain_seq for x in mine] == [1, 2, 3, 4]
        assert mine[0].prev_hash == GENESIS_HASH
        for before, after in itertools.pairwise(mine):
            assert after.prev_hash == before.hash
        for x in e:
            assert x.hash == event_hash(x)
        assert e[1].chain_seq == 1  # the other organization has its own chain
        platform = transact(uow_factory, lambda uow: uow.audit.add(make_audit_event()))
        assert (platform.chain_seq, platform.prev_hash) == (1, GENESIS_HASH)
        with uow_factory() as uow:
            head = uow.audit_archive.head(str(org.id))
            assert head is not None
            assert (head.seq, head.hash) == (4, mine[-1].hash)
            assert uow.audit_archive.events(str(org.id), after_seq=1, limit=2) == mine[1:3]
            assert uow.audit_archive.events(PLATFORM_STREAM, after_seq=0, limit=9) == [platform]

    def test_audit_rolled_back_append_leaves_no_gap(self, uow_factory: UnitOfWorkFactory) -> None:
        org = _seed_org(uow_factory)
        first = transact(
            uow_factory, lambda uow: uow.audit.add(make_audit_event(organization_id=org.id))
        )
        with uow_factory() as uow:
            uow.audit.add(make_audit_event(organization_id=org.id))
            uow.rollback()
        second = transact(
            uow_factory, lambda uow: uow.audit.add(make_audit_event(organization_id=org.id))
        )
        assert (first.chain_seq, second.chain_seq) == (1, 2)
        assert second.prev_hash == first.hash

    def test_audit_metadata_is_never_shared(self, uow_factory: UnitOfWorkFactory) -> None:
        metadata: dict[str, Any] = {"changes": {"roles": ["member"]}}
        event = make_audit_event(metadata=metadata)
        with uow_factory() as uow:
            uow.audit.add(event)
            metadata["changes"]["roles"].append("owner")
            uow.commit()
        with uow_factory() as uow:
            (loaded,) = uow.audit.list(AuditQuery(), limit=1, before=None)
            assert loaded.metadata == {"changes": {"roles": ["member"]}}
            loaded.metadata["changes"]["roles"].clear()
            (again,) = uow.audit.list(AuditQuery(), limit=1, before=None)
            assert again.metadata == {"changes": {"roles": ["member"]}}


class UnitOfWorkContract(
    TransactionContract,
    UserRepositoryContract,
    OrganizationRepositoryContract,
    PermissionRepositoryContract,
    RoleRepositoryContract,
    MembershipRepositoryContract,
    InvitationRepositoryContract,
    SessionRepositoryContract,
    OneTimeTokenRepositoryContract,
    OAuthAccountRepositoryContract,
    AuditLogRepositoryContract,
):
    """Every repository and the transaction rules; needs the ``uow_factory`` fixture."""


# --- cache, rate limiting, lockout, revocation ---------------------------------------


class CacheContract:
    """Needs ``cache`` (empty) and ``advance_time``. TTLs stay around a second so a
    backend with real expiry can sleep through them."""

    def test_cache_get_set_overwrite_delete(self, cache: Cache) -> None:
        assert cache.get("missing") is None
        cache.set("k", "v1")
        assert cache.get("k") == "v1"
        cache.set("k", "v2 ✓")
        assert cache.get("k") == "v2 ✓"
        cache.set("other", "")
        assert cache.get("other") == ""  # empty string is a value, not a miss
        cache.delete("k", "other", "never-set")
        assert cache.get("k") is None
        assert cache.get("other") is None
        cache.delete()  # no keys: nothing to do

    def test_cache_get_many_keeps_order(self, cache: Cache) -> None:
        cache.set("a", "1")
        cache.set("c", "3")
        assert cache.get_many(["c", "b", "a", "c"]) == ["3", None, "1", "3"]
        assert cache.get_many([]) == []

    def test_cache_ttl_expires(self, cache: Cache, advance_time: AdvanceTime) -> None:
        cache.set("short", "x", ttl=1)
        cache.set("forever", "y")
        cache.set("long", "z", ttl=3600)
        assert cache.get("short") == "x"
        advance_time(1.2)
        assert cache.get("short") is None
        assert cache.get_many(["short", "forever", "long"]) == [None, "y", "z"]

    def test_cache_set_replaces_ttl(self, cache: Cache, advance_time: AdvanceTime) -> None:
        cache.set("k", "old", ttl=1)
        cache.set("k", "new")  # no ttl: lives on
        advance_time(1.2)
        assert cache.get("k") == "new"

    def test_cache_incr(self, cache: Cache) -> None:
        assert cache.incr("n") == 1
        assert cache.incr("n") == 2
        assert cache.get("n") == "2"
        cache.set("m", "41")
        assert cache.incr("m") == 42

    def test_cache_incr_ttl_applies_to_new_keys_only(
        self, cache: Cache, advance_time: AdvanceTime
    ) -> None:
        assert cache.incr("n", ttl=1) == 1
        advance_time(0.6)
        assert cache.incr("n", ttl=1) == 2  # does not push the expiry back
        advance_time(0.6)
        assert cache.get("n") is None
        assert cache.incr("n", ttl=1) == 1  # an expired key counts from 0 again

    def test_cache_incr_is_atomic(self, cache: Cache) -> None:
        def bump(_: int) -> list[int]:
            return [cache.incr("counter") for _ in range(50)]

        results = race(20, bump)
        values = [v for r in results if isinstance(r, list) for v in r]
        assert sorted(values) == list(range(1, 1001))
        assert cache.get("counter") == "1000"

    def test_cache_pop_reads_and_deletes(self, cache: Cache, advance_time: AdvanceTime) -> None:
        assert cache.pop("missing") is None
        cache.set("k", "v")
        assert cache.pop("k") == "v"
        assert cache.get("k") is None
        assert cache.pop("k") is None
        cache.set("short", "x", ttl=1)
        advance_time(1.2)
        assert cache.pop("short") is None  # an expired value is never handed out

    def test_cache_pop_is_single_use_under_concurrency(self, cache: Cache) -> None:
        for round_ in range(5):
            key = f"once{round_}"
            cache.set(key, "value")

            def take(_: int, key: str = key) -> str | None:
                return cache.pop(key)

            results = race(20, take)
            assert [r for r in results if r is not None] == ["value"]


class RateLimiterContract:
    """Needs ``rate_limiter`` driven by the FakeClock ``clock``."""

    def test_ratelimit_allows_up_to_limit(self, rate_limiter: RateLimiter) -> None:
        results = [rate_limiter.hit("k", limit=3, window_seconds=60) for _ in range(4)]
        assert [r.allowed for r in results] == [True, True, True, False]
        assert [r.remaining for r in results] == [2, 1, 0, 0]
        assert all(r.limit == 3 for r in results)
        assert results[0].reset_after == pytest.approx(60)

    def test_ratelimit_window_moves(self, rate_limiter: RateLimiter, clock: FakeClock) -> None:
        def hit() -> bool:
            return rate_limiter.hit("k", limit=2, window_seconds=60).allowed

        assert hit()
        clock.advance(seconds=30)
        assert hit()
        clock.advance(seconds=10)
        refused = rate_limiter.hit("k", limit=2, window_seconds=60)
        assert not refused.allowed
        assert refused.reset_after == pytest.approx(20)  # the first hit leaves at t=60
        clock.advance(seconds=20)
        assert hit()  # one slot freed, not a whole new window
        assert not hit()
        clock.advance(seconds=29)
        assert not hit()  # the second hit (t=30) leaves at t=90
        clock.advance(seconds=1)
        assert hit()

    def test_ratelimit_refused_hits_are_not_counted(
        self, rate_limiter: RateLimiter, clock: FakeClock
    ) -> None:
        assert rate_limiter.hit("k", limit=1, window_seconds=10).allowed
        for _ in range(5):
            clock.advance(seconds=1)
            assert not rate_limiter.hit("k", limit=1, window_seconds=10).allowed
        clock.advance(seconds=5)
        result = rate_limiter.hit("k", limit=1, window_seconds=10)
        assert result.allowed
        assert result.remaining == 0

    def test_ratelimit_cost(self, rate_limiter: RateLimiter) -> None:
        assert rate_limiter.hit("k", limit=5, window_seconds=60, cost=3).remaining == 2
        refused = rate_limiter.hit("k", limit=5, window_seconds=60, cost=3)
        assert not refused.allowed
        assert refused.remaining == 2
        assert rate_limiter.hit("k", limit=5, window_seconds=60, cost=2).allowed
        assert not rate_limiter.hit("k", limit=5, window_seconds=60).allowed

    def test_ratelimit_keys_are_independent_and_reset(self, rate_limiter: RateLimiter) -> None:
        assert rate_limiter.hit("a", limit=1, window_seconds=60).allowed
        assert not rate_limiter.hit("a", limit=1, window_seconds=60).allowed
        assert rate_limiter.hit("b", limit=1, window_seconds=60).allowed
        rate_limiter.reset("a")
        assert rate_limiter.hit("a", limit=1, window_seconds=60).allowed
        assert not rate_limiter.hit("b", limit=1, window_seconds=60).allowed
        rate_limiter.reset("never-hit")

    def test_ratelimit_concurrent_hits_respect_limit(self, rate_limiter: RateLimiter) -> None:
        results = race(50, lambda _: rate_limiter.hit("k", limit=10, window_seconds=60))
        allowed = [r for r in results if not isinstance(r, Exception) and r.allowed]
        assert len(allowed) == 10
        assert sorted(r.remaining for r in allowed) == list(range(10))


class AttemptCounterContract:
    """Needs ``attempt_counter`` built with max_failures=3, lockout_seconds=60 and
    max_lockout_seconds=3600, driven by the FakeClock ``clock``."""

    @staticmethod
    def _fail(counter: AttemptCounter, key: str) -> float | None:
        assert counter.acquire(key).allowed
        return counter.record_failure(key)

    def _lock(self, counter: AttemptCounter, key: str) -> float | None:
        assert self._fail(counter, key) is None
        assert self._fail(counter, key) is None
        return self._fail(counter, key)

    def test_attempts_lock_after_max_failures(
        self, attempt_counter: AttemptCounter, clock: FakeClock
    ) -> None:
        assert self._lock(attempt_counter, "k") == pytest.approx(60)
        refused = attempt_counter.acquire("k")
        assert not refused.allowed
        assert refused.retry_after == pytest.approx(60)
        clock.advance(seconds=59)
        refused = attempt_counter.acquire("k")
        assert not refused.allowed
        assert refused.retry_after == pytest.approx(1)
        clock.advance(seconds=1)
        assert attempt_counter.acquire("k").allowed
        assert attempt_counter.acquire("other").allowed  # keys are independent

    def test_attempts_backoff_doubles_up_to_max(
        self, attempt_counter: AttemptCounter, clock: FakeClock
    ) -> None:
        durations = []
        for _ in range(8):
            duration = self._lock(attempt_counter, "k")
            assert duration is not None
            durations.append(duration)
            clock.advance(seconds=duration)
        assert durations == pytest.approx([60, 120, 240, 480, 960, 1920, 3600, 3600])

    def test_attempts_success_forgets_failures_and_level(
        self, attempt_counter: AttemptCounter, clock: FakeClock
    ) -> None:
        assert self._lock(attempt_counter, "k") == pytest.approx(60)
        clock.advance(seconds=60)
        assert self._fail(attempt_counter, "k") is None
        assert self._fail(attempt_counter, "k") is None
        assert attempt_counter.acquire("k").allowed
        attempt_counter.record_success("k")
        assert self._fail(attempt_counter, "k") is None  # the count started over
        assert self._fail(attempt_counter, "k") is None
        assert self._fail(attempt_counter, "k") == pytest.approx(60)  # and the level too

    def test_attempts_reservations_block_before_verification(
        self, attempt_counter: AttemptCounter
    ) -> None:
        assert all(attempt_counter.acquire("k").allowed for _ in range(3))
        refused = attempt_counter.acquire("k")
        assert not refused.allowed
        assert refused.retry_after > 0
        attempt_counter.record_success("k")
        assert attempt_counter.acquire("k").allowed

    def test_attempts_concurrent_acquires_allow_at_most_threshold(
        self, attempt_counter: AttemptCounter
    ) -> None:
        results = race(50, lambda _: attempt_counter.acquire("victim"))
        decisions = [r for r in results if not isinstance(r, Exception)]
        assert len(decisions) == 50
        assert sum(d.allowed for d in decisions) == 3
        locks = [attempt_counter.record_failure("victim") for _ in range(3)]
        assert locks[0] == pytest.approx(60)  # the reserved count reached the threshold
        assert not attempt_counter.acquire("victim").allowed

    def test_attempts_release_gives_back_a_reservation(
        self, attempt_counter: AttemptCounter
    ) -> None:
        assert all(attempt_counter.acquire("k").allowed for _ in range(3))
        assert not attempt_counter.acquire("k").allowed
        attempt_counter.release("k")
        assert attempt_counter.acquire("k").allowed  # the released slot is free again
        assert not attempt_counter.acquire("k").allowed
        for _ in range(10):
            attempt_counter.release("k")  # never below zero, never locks
        assert all(attempt_counter.acquire("k").allowed for _ in range(3))
        attempt_counter.release("never-seen")

    def test_attempts_refused_attempts_do_not_keep_state_alive(
        self, attempt_counter: AttemptCounter, clock: FakeClock
    ) -> None:
        assert all(attempt_counter.acquire("k").allowed for _ in range(3))
        for _ in range(23):
            clock.advance(timedelta(hours=1))
            assert not attempt_counter.acquire("k").allowed  # reservations never answered
        clock.advance(timedelta(hours=1))
        assert attempt_counter.acquire("k").allowed  # refusals did not keep the state alive

    def test_attempts_reset(self, attempt_counter: AttemptCounter) -> None:
        self._lock(attempt_counter, "k")
        assert not attempt_counter.acquire("k").allowed
        attempt_counter.reset("k")
        assert self._fail(attempt_counter, "k") is None
        attempt_counter.reset("never-seen")

    def test_attempts_level_decays_after_a_day(
        self, attempt_counter: AttemptCounter, clock: FakeClock
    ) -> None:
        assert self._lock(attempt_counter, "k") == pytest.approx(60)
        clock.advance(seconds=60)
        assert self._lock(attempt_counter, "k") == pytest.approx(120)  # level kept
        clock.advance(timedelta(hours=24, seconds=121))
        assert self._lock(attempt_counter, "k") == pytest.approx(60)  # level forgotten


class RevocationStoreContract:
    """Needs ``revocation_store`` (empty) and ``advance_time``."""

    def test_revocation_revoke_and_check(self, revocation_store: RevocationStore) -> None:
        a, b, c = new_id(), new_id(), new_id()
        assert not revocation_store.is_revoked(a)
        revocation_store.revoke([a, b], ttl_seconds=600)
        assert revocation_store.is_revoked(a)
        assert revocation_store.is_revoked(b)
        assert not revocation_store.is_revoked(c)
        revocation_store.revoke(iter([c]), ttl_seconds=600)
        assert revocation_store.is_revoked(c)
        revocation_store.revoke([], ttl_seconds=600)

    def test_revocation_expires(
        self, revocation_store: RevocationStore, advance_time: AdvanceTime
    ) -> None:
        short, long = new_id(), new_id()
        revocation_store.revoke([short], ttl_seconds=1)
        revocation_store.revoke([long], ttl_seconds=3600)
        advance_time(1.2)
        assert not revocation_store.is_revoked(short)
        assert revocation_store.is_revoked(long)


# --- blobs ------------------------------------------------------------------------------


class BlobStorageContract:
    """Needs ``blob_storage`` (empty)."""

    def test_blobs_put_head_get(self, blob_storage: BlobStorage) -> None:
        data = bytes(range(256)) * 3
        info = blob_storage.put(
            "org/2026/01/batch-1.jsonl.gz", data, content_type="application/gzip"
        )
        assert info.key == "org/2026/01/batch-1.jsonl.gz"
        assert info.size == len(data)
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert info.content_type == "application/gzip"
        assert blob_storage.head(info.key) == info
        assert blob_storage.get(info.key) == data

    def test_blobs_default_content_type_and_empty_blob(self, blob_storage: BlobStorage) -> None:
        info = blob_storage.put("empty.bin", b"")
        assert info.content_type == "application/octet-stream"
        assert info.size == 0
        assert info.sha256 == hashlib.sha256(b"").hexdigest()
        assert blob_storage.get("empty.bin") == b""

    def test_blobs_missing(self, blob_storage: BlobStorage) -> None:
        assert blob_storage.head("nope/x") is None
        with pytest.raises(NotFound):
            blob_storage.get("nope/x")

    def test_blobs_are_write_once(self, blob_storage: BlobStorage) -> None:
        info = blob_storage.put("a/b", b"original", content_type="text/plain")
        assert blob_storage.put("a/b", b"original", content_type="text/plain") == info
        with pytest.raises(BlobExists):
            blob_storage.put("a/b", b"tampered", content_type="text/plain")
        assert blob_storage.get("a/b") == b"original"
        assert blob_storage.head("a/b") == info

    def test_blobs_checksum_is_verified(self, blob_storage: BlobStorage) -> None:
        data = b"line 1\nline 2\n"
        digest = hashlib.sha256(data).hexdigest()
        info = blob_storage.put("sum/ok", data, checksum_sha256=digest)
        assert (info.size, info.sha256) == (len(data), digest)
        assert blob_storage.head("sum/ok") == info
        with pytest.raises(BlobIntegrityError):
            blob_storage.put("sum/bad", data, checksum_sha256=hashlib.sha256(b"x").hexdigest())
        assert blob_storage.head("sum/bad") is None

    def test_blobs_list_by_prefix(self, blob_storage: BlobStorage) -> None:
        keys = ["org1/2026/02/b", "org1/2026/01/a", "org2/2026/01/a", "org10/x"]
        infos = {k: blob_storage.put(k, k.encode()) for k in keys}
        assert blob_storage.list() == [infos[k] for k in sorted(keys)]
        assert blob_storage.list("org1/") == [infos["org1/2026/01/a"], infos["org1/2026/02/b"]]
        assert blob_storage.list("org1") == [infos[k] for k in sorted(keys) if k.startswith("org1")]
        assert blob_storage.list("org3/") == []

    def test_blobs_concurrent_puts_of_one_key(self, blob_storage: BlobStorage) -> None:
        results = race(20, lambda i: blob_storage.put("race/key", f"writer-{i}".encode()))
        winners = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
        assert len(winners) == 1, results
        assert all(isinstance(r, Conflict) for r in results if isinstance(r, Exception))
        assert blob_storage.get("race/key") == f"writer-{winners[0]}".encode()
