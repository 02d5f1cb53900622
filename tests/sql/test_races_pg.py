"""SECURITY.md §4B: the concurrency races, on the real PostgreSQL server with real threads.

Every race goes through the public services of a ``UserManagement`` built on
``Settings.for_tests(database_url=<PostgreSQL>)`` (migrated, seeded, emptied before each
test), with threads released together by a :class:`threading.Barrier`, each on its own
pooled connection, and is repeated :data:`ITERATIONS` times. Besides the outcome of
each race, every test asserts "no 500": the only exceptions that escape are
:class:`~usermgmt.errors.UserMgmtError` subclasses the HTTP adapters map to a 4xx
(never BackendError, which would be a 503 after exhausted retries, and never anything
else, which would be a 500).
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.sql.conftest import PgServer, truncate_all
from usermgmt.app import UserManagement
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory, migrate
from usermgmt.config import Settings
from usermgmt.errors import (
    AlreadyMember,
    BackendError,
    InvalidToken,
    InvitationEmailMismatch,
    InvitationNotPending,
    LastOwner,
    NotFound,
    OneTimeTokenError,
    TokenReused,
    TokenRevoked,
    UserMgmtError,
)
from usermgmt.ids import new_id
from usermgmt.models import Membership, Organization, TokenPair, User
from usermgmt.permissions import MEMBER, OWNER
from usermgmt.services.users import RegistrationResult
from usermgmt.testing import extract_token, random_password
from usermgmt.testing.contracts import make_user

pytestmark = pytest.mark.sql

#: How often each race is run.
ITERATIONS = 20
#: Threads of the many-against-one races.
THREADS = 20
#: Random delay (seconds) of the threads of two- and three-way races in odd iterations.
JITTER = 0.02

T = TypeVar("T")
OK = "ok"


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def races_url(pg_server: PgServer) -> str:
    url = pg_server.database("usermgmt_races")
    migrate.upgrade(url)
    return url


@pytest.fixture
def um(races_url: str) -> Iterator[UserManagement]:
    """A seeded UserManagement on the emptied race database, with a pool big enough for
    every thread to hold its own connection."""
    truncate_all(races_url)
    pooled = make_url(races_url).update_query_dict(
        {"connection_limit": str(THREADS + 10), "pool_timeout": "30"}
    )
    settings = Settings.for_tests(database_url=pooled.render_as_string(hide_password=False))
    um = UserManagement(settings)
    um.seed()
    yield um
    um.close()


def race(n: int, fn: Callable[[int], T], *, jitter: float = 0.0) -> list[T | BaseException]:
    """``fn(0)`` … ``fn(n - 1)`` on ``n`` threads released together by a barrier; the
    result or the exception of each. With ``jitter`` each thread then waits a random
    fraction of that many seconds, so that a slower call also gets to go first."""
    barrier = threading.Barrier(n, timeout=60)
    results: list[T | BaseException | None] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        if jitter:
            time.sleep(random.uniform(0, jitter))
        try:
            results[i] = fn(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a racing thread hangs"
    return results  # type: ignore[return-value]


def no_500(results: list[Any]) -> list[UserMgmtError]:
    """The errors among ``results``; fails on anything but a non-backend UserMgmtError."""
    errors = []
    for result in results:
        if isinstance(result, BaseException):
            trace = "".join(traceback.format_exception(result))
            assert isinstance(result, UserMgmtError), f"would be a 500:\n{trace}"
            assert not isinstance(result, BackendError), f"would be a 503:\n{trace}"
            errors.append(result)
    return errors


def wins(results: list[Any], kind: type[Any]) -> list[Any]:
    return [r for r in results if isinstance(r, kind)]


def done(call: Callable[[], object]) -> str:
    """Run ``call`` (a service method returning None) and say it succeeded."""
    call()
    return OK


def scalar(um: UserManagement, sql: str, **params: Any) -> Any:
    factory = um.backends.uow
    assert isinstance(factory, SqlUnitOfWorkFactory)
    with factory.engine.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()


def audited(um: UserManagement, action: str, target_id: UUID) -> int:
    return int(
        scalar(
            um,
            "SELECT count(*) FROM audit_logs WHERE action = :action AND target_id = :target",
            action=action,
            target=str(target_id),
        )
    )


def add_user(um: UserManagement, password: str | None = None, **fields: Any) -> User:
    """A verified, active user stored directly (fast); a real hash when ``password``."""
    now = um.clock.now()
    values: dict[str, Any] = {
        "is_verified": True,
        "email_verified_at": now,
        "created_at": now,
        "updated_at": now,
    }
    if password is not None:
        values["password_hash"] = um.hasher.hash(password)
    user = make_user(**{**values, **fields})
    um.kernel.write(lambda uow: uow.users.add(user))
    return user


def add_member(um: UserManagement, org: Organization, user: User, role: str) -> None:
    def body(uow: Any) -> None:
        found = uow.roles.get_by_name(org.id, role)
        now = um.clock.now()
        uow.memberships.add(
            Membership(
                id=new_id(),
                organization_id=org.id,
                user_id=user.id,
                role_ids=frozenset({found.id}),
                joined_at=now,
                updated_at=now,
            )
        )

    um.kernel.write(body)
    um.authz.invalidate(org.id)


def invite(um: UserManagement, owner: User, org: Organization, email: str) -> tuple[UUID, str]:
    invitation = um.invitations.create(owner.id, org.id, email)
    message = um.outbox.last(to=email, template="invitation")
    assert message is not None
    return invitation.id, extract_token(message)


def owners(um: UserManagement, org_id: UUID) -> int:
    return int(
        scalar(
            um,
            "SELECT count(*) FROM organization_memberships m "
            "JOIN membership_roles mr ON mr.membership_id = m.id "
            "JOIN roles r ON r.id = mr.role_id "
            "WHERE m.organization_id = :org AND r.name = :owner",
            org=org_id,
            owner=OWNER,
        )
    )


def assert_unusable(um: UserManagement, pair: TokenPair) -> None:
    """Neither token of ``pair`` works any more."""
    with pytest.raises(TokenRevoked):
        um.auth.verify_access_token(pair.access_token)
    with pytest.raises(InvalidToken):
        um.auth.refresh(pair.refresh_token)


# --- R1 duplicate registration -------------------------------------------------------------------


def test_r1_duplicate_registration_in_two_cases(um: UserManagement) -> None:
    for i in range(ITERATIONS):
        emails = [f"A{i}@x.com" if j % 2 else f"a{i}@x.com" for j in range(THREADS)]
        passwords = [random_password() for _ in range(THREADS)]
        results = race(
            THREADS, lambda j, e=emails, p=passwords: um.users.register(email=e[j], password=p[j])
        )
        assert no_500(results) == []  # nobody gets an error, EmailTaken included
        assert all(type(r) is RegistrationResult for r in results)
        # One account; the others get the same generic result (user=None is what an
        # adapter answers with under PREVENT_ENUMERATION, exactly as for the winner).
        created = [r for r in results if isinstance(r, RegistrationResult) and r.created]
        assert len(created) == 1
        rows = scalar(um, "SELECT count(*) FROM users WHERE lower(email) = :e", e=f"a{i}@x.com")
        assert rows == 1
        assert len(um.outbox.find(to=f"a{i}@x.com", template="verify_email")) == 1
    assert scalar(um, "SELECT count(*) FROM users") == ITERATIONS


# --- R2 last owner -----------------------------------------------------------------------------


def _two_owners(um: UserManagement, i: int) -> tuple[User, User, Organization]:
    alice, bob = add_user(um), add_user(um)
    org = um.organizations.create(alice.id, f"Owners {i}")
    add_member(um, org, bob, OWNER)
    assert owners(um, org.id) == 2
    return alice, bob, org


def test_r2_two_owners_remove_each_other(um: UserManagement) -> None:
    for i in range(ITERATIONS):
        alice, bob, org = _two_owners(um, i)
        pairs = [(alice, bob), (bob, alice)]
        results = race(
            2,
            lambda j, p=pairs, o=org: done(lambda: um.members.remove(p[j][0].id, o.id, p[j][1].id)),
        )
        errors = no_500(results)
        assert results.count(OK) == 1, results
        assert len(errors) == 1
        assert isinstance(errors[0], NotFound | LastOwner)
        assert owners(um, org.id) == 1


def test_r2_two_owners_leave_at_once(um: UserManagement) -> None:
    for i in range(ITERATIONS):
        alice, bob, org = _two_owners(um, i)
        people = [alice, bob]
        results = race(
            2,
            lambda j, p=people, o=org: done(lambda: um.members.leave(p[j].id, o.id)),
            jitter=JITTER * (i % 2),
        )
        errors = no_500(results)
        assert results.count(OK) == 1, results
        assert len(errors) == 1
        assert isinstance(errors[0], LastOwner)
        assert owners(um, org.id) == 1


# --- R3 refresh-token double use ---------------------------------------------------------------


def test_r3_one_refresh_token_twenty_times(um: UserManagement) -> None:
    password = random_password()
    user = add_user(um, password)
    for _ in range(ITERATIONS):
        pair = um.auth.login(user.email, password)
        results = race(THREADS, lambda _j, p=pair: um.auth.refresh(p.refresh_token))
        errors = no_500(results)
        minted = wins(results, TokenPair)
        assert len(minted) == 1
        assert all(isinstance(e, TokenReused | TokenRevoked) for e in errors), errors
        session_id = pair.session_id
        assert audited(um, "session.refreshed", session_id) == 1
        # strict policy: the concurrent losers are reuse, so the family is revoked at once
        assert audited(um, "session.refresh_token_reuse_detected", session_id) >= 1
        assert (
            scalar(um, "SELECT revoked_reason FROM sessions WHERE id = :id", id=session_id)
            == "reuse"
        )
        assert scalar(um, "SELECT generation FROM sessions WHERE id = :id", id=session_id) == 2
        with pytest.raises(InvalidToken):  # reuse afterwards: still dead
            um.auth.refresh(pair.refresh_token)
        assert_unusable(um, minted[0])
        with pytest.raises(TokenRevoked):
            um.auth.verify_access_token(pair.access_token)

    # reuse of a rotated token, without any race: the family dies and it is audited
    pair = um.auth.login(user.email, password)
    fresh = um.auth.refresh(pair.refresh_token)
    with pytest.raises(TokenReused):
        um.auth.refresh(pair.refresh_token)
    assert audited(um, "session.refresh_token_reuse_detected", pair.session_id) == 1
    assert_unusable(um, fresh)


# --- R4 refresh against logout -----------------------------------------------------------------


def test_r4_refresh_against_logout(um: UserManagement) -> None:
    password = random_password()
    user = add_user(um, password)
    for i in range(ITERATIONS + 10):
        pair = um.auth.login(user.email, password)
        calls: list[Callable[[], object]] = [
            lambda p=pair: um.auth.refresh(p.refresh_token),
            lambda p=pair: done(lambda: um.auth.logout(user.id, p.session_id)),
        ]
        results = race(2, lambda j, c=calls: c[j](), jitter=JITTER * (i % 2))
        errors = no_500(results)
        assert results[1] == OK  # the logout always ends the session
        assert all(isinstance(e, InvalidToken) for e in errors), errors
        assert scalar(um, "SELECT revoked_at FROM sessions WHERE id = :id", id=pair.session_id)
        for minted in wins(results, TokenPair):  # issued before the revoke committed
            assert_unusable(um, minted)
        with pytest.raises(TokenRevoked):
            um.auth.verify_access_token(pair.access_token)


# --- R5 / R6 invitations -------------------------------------------------------------------------


def test_r5_twenty_accepts_of_one_invitation(um: UserManagement) -> None:
    owner = add_user(um)
    stranger = add_user(um, email="stranger@x.com")  # verified, but not the invitee
    for i in range(ITERATIONS):
        org = um.organizations.create(owner.id, f"Invites {i}")
        invitee = add_user(um, email=f"invitee{i}@x.com")
        invitation_id, token = invite(um, owner, org, invitee.email)
        people = [invitee if j % 2 == 0 else stranger for j in range(THREADS)]
        results = race(THREADS, lambda j, p=people, t=token: um.invitations.accept(p[j].id, t))
        errors = no_500(results)
        joined = wins(results, Membership)
        assert len(joined) == 1
        assert joined[0].user_id == invitee.id
        for person, result in zip(people, results, strict=True):
            if person is stranger:
                assert isinstance(result, InvitationEmailMismatch)
            elif not isinstance(result, Membership):
                assert isinstance(result, OneTimeTokenError | AlreadyMember), result
        assert len(errors) == THREADS - 1
        count = "SELECT count(*) FROM organization_memberships WHERE organization_id = :o"
        assert scalar(um, count, o=org.id) == 2  # the owner and the invitee
        assert audited(um, "invitation.accepted", invitation_id) == 1
        assert audited(um, "member.added", invitee.id) == 1


def test_r6_accept_against_revoke(um: UserManagement) -> None:
    owner = add_user(um)
    outcomes = set()
    for i in range(ITERATIONS + 10):
        org = um.organizations.create(owner.id, f"Revokes {i}")
        invitee = add_user(um)
        invitation_id, token = invite(um, owner, org, invitee.email)
        calls: list[Callable[[], object]] = [
            lambda t=token, u=invitee: um.invitations.accept(u.id, t),
            lambda o=org, n=invitation_id: done(lambda: um.invitations.revoke(owner.id, o.id, n)),
        ]
        results = race(2, lambda j, c=calls: c[j](), jitter=JITTER * (i % 2))
        no_500(results)
        invitation = um.kernel.read(
            lambda uow, o=org, n=invitation_id: uow.invitations.get(o.id, n)
        )
        member = um.kernel.read(lambda uow, o=org, u=invitee: uow.memberships.get(o.id, u.id))
        assert invitation is not None
        if isinstance(results[0], Membership):  # accepted first: the revoke found it settled
            assert isinstance(results[1], InvitationNotPending)
            assert member is not None
            assert invitation.accepted_at is not None
            assert invitation.revoked_at is None
            outcomes.add("accepted")
        else:  # revoked first: no membership, ever
            assert results[1] == OK
            assert isinstance(results[0], OneTimeTokenError)
            assert member is None
            assert invitation.revoked_at is not None
            assert invitation.accepted_at is None
            outcomes.add("revoked")
    assert outcomes  # (which orders occur depends on the scheduler)


# --- R7 password-reset token double use --------------------------------------------------------


def test_r7_twenty_resets_with_one_token(um: UserManagement) -> None:
    for i in range(ITERATIONS):
        user = add_user(um, random_password(), email=f"reset{i}@x.com")
        um.users.request_password_reset(user.email)
        message = um.outbox.last(to=user.email, template="password_reset")
        assert message is not None
        token = extract_token(message)
        passwords = [random_password() for _ in range(THREADS)]
        results = race(
            THREADS,
            lambda j, t=token, p=passwords: done(lambda: um.users.reset_password(t, p[j])),
        )
        errors = no_500(results)
        assert results.count(OK) == 1
        assert all(isinstance(e, OneTimeTokenError) for e in errors)
        winner = results.index(OK)
        stored = um.users.get(user.id).password_hash
        assert stored is not None
        assert um.hasher.verify(passwords[winner], stored)
        assert not any(um.hasher.verify(p, stored) for j, p in enumerate(passwords) if j != winner)
        assert audited(um, "user.password_reset", user.id) == 1


# --- R9 password change against refresh ---------------------------------------------------------


def test_r9_password_change_against_refresh(um: UserManagement) -> None:
    password = random_password()
    user = add_user(um, password)
    for i in range(ITERATIONS):
        pair = um.auth.login(user.email, password)
        new_password = random_password()
        calls: list[Callable[[], object]] = [
            lambda old=password, new=new_password: done(
                lambda: um.users.change_password(user.id, old, new)
            ),
            lambda p=pair: um.auth.refresh(p.refresh_token),
        ]
        results = race(2, lambda j, c=calls: c[j](), jitter=JITTER * (i % 2))
        errors = no_500(results)
        assert results[0] == OK
        assert all(isinstance(e, InvalidToken) for e in errors), errors
        with pytest.raises(TokenRevoked):
            um.auth.verify_access_token(pair.access_token)
        for minted in wins(results, TokenPair):
            assert_unusable(um, minted)
        password = new_password
    assert um.auth.login(user.email, password).access_token


# --- R11 organization deletion against member operations ---------------------------------------

ORPHANS = {
    "memberships": "SELECT count(*) FROM organization_memberships m "
    "LEFT JOIN organizations o ON o.id = m.organization_id WHERE o.id IS NULL",
    "membership roles": "SELECT count(*) FROM membership_roles mr "
    "LEFT JOIN organization_memberships m ON m.id = mr.membership_id WHERE m.id IS NULL",
    "invitations": "SELECT count(*) FROM invitations i "
    "LEFT JOIN organizations o ON o.id = i.organization_id WHERE o.id IS NULL",
    "roles": "SELECT count(*) FROM roles r "
    "LEFT JOIN organizations o ON o.id = r.organization_id WHERE o.id IS NULL",
}


def test_r11_delete_organization_against_accept_and_update(um: UserManagement) -> None:
    owner = add_user(um)
    for i in range(ITERATIONS):
        org = um.organizations.create(owner.id, f"Doomed {i}")
        bob = add_user(um)
        add_member(um, org, bob, MEMBER)
        invitee = add_user(um)
        _, token = invite(um, owner, org, invitee.email)
        calls: list[Callable[[], object]] = [
            lambda o=org: done(lambda: um.organizations.delete(owner.id, o.id)),
            lambda t=token, u=invitee: um.invitations.accept(u.id, t),
            lambda o=org, b=bob: um.members.update_roles(owner.id, o.id, b.id, ["admin"]),
        ]
        results = race(3, lambda j, c=calls: c[j](), jitter=JITTER * (i % 2))
        no_500(results)
        assert results[0] == OK
        assert scalar(um, "SELECT count(*) FROM organizations WHERE id = :o", o=org.id) == 0
        for what, sql in ORPHANS.items():
            assert scalar(um, sql) == 0, f"orphan {what}"
        assert um.organizations.list_for_user(invitee.id) == []
    assert scalar(um, "SELECT count(*) FROM organization_memberships") == 0


def test_race_helper_reports_a_500() -> None:
    results = race(2, lambda j: 1 // j)
    with pytest.raises(AssertionError, match="would be a 500"):
        no_500(results)
    assert no_500([OK, None]) == []
