"""The per-request checks on PostgreSQL (one autocommit SELECT each, no pool pre-ping).

* Two UserManagement instances share one database (two application processes; with
  and without a shared Redis): every change that must stop a caller — logout, password
  change, deactivation, membership removal, a role losing a permission — is seen by the
  other instance at its very next check. Nothing on this path is cached.
* A server restart leaves every pooled connection dead; without pre-ping, the first
  statement of a unit of work, the one-statement reads and the health check each run
  once more on a fresh connection, so the first call after the restart succeeds.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy import event

from tests.redis.conftest import flush, redis_server
from tests.sql.conftest import truncate_all
from tests.sql.test_faults_pg import StoppableServer, stoppable
from usermgmt.app import UserManagement
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory, migrate
from usermgmt.config import Settings
from usermgmt.errors import InvalidToken, NotFound, TokenRevoked
from usermgmt.models import Organization, User
from usermgmt.ports import OneStatementReads
from usermgmt.testing import create_user, extract_token

pytestmark = pytest.mark.sql

__all__ = ["redis_server", "stoppable"]  # fixtures of tests/redis and test_faults_pg


@pytest.fixture(params=["postgresql", "postgresql+redis", "postgresql+redis+replica"])
def pair(
    request: pytest.FixtureRequest, pg_contracts_url: str
) -> Iterator[tuple[UserManagement, UserManagement]]:
    """(writer, checker): two instances on one PostgreSQL database (and one Redis)."""
    truncate_all(pg_contracts_url)
    options: dict[str, Any] = {"database_url": pg_contracts_url}
    if "+redis" in request.param:
        url = request.getfixturevalue("redis_server")
        flush(url)
        options["redis_url"] = url
    if request.param.endswith("+replica"):  # the primary, named as a replica too
        options["database_read_replica_urls"] = [pg_contracts_url]
    settings = Settings.for_tests(**options)
    writer, checker = UserManagement(settings), UserManagement(settings)
    writer.seed()
    assert isinstance(checker.backends.uow, OneStatementReads)  # the path under test
    assert (checker.backends.revocations is None) == ("redis" not in request.param)
    assert checker.backends.uow.reads_from_replicas == request.param.endswith("+replica")
    try:
        yield writer, checker
    finally:
        writer.close()
        checker.close()


def _member_of_new_org(um: UserManagement) -> tuple[User, User, str, Organization]:
    """(owner, member, the member's password, the organization); the member has ``member``."""
    owner, _ = create_user(um)
    member, password = create_user(um)
    org = um.organizations.create(owner.id, "Hot path")
    um.invitations.create(owner.id, org.id, member.email)
    um.invitations.accept(member.id, extract_token(um.outbox.last(to=member.email)))
    return owner, member, password, org


def test_logout_elsewhere_stops_the_token_at_the_next_check(
    pair: tuple[UserManagement, UserManagement],
) -> None:
    writer, checker = pair
    user, password = create_user(writer)
    token = writer.auth.login(user.email, password)
    kept = writer.auth.login(user.email, password)
    assert checker.auth.authenticate(token.access_token).id == user.id
    assert checker.auth.authenticate(token.access_token).id == user.id  # signature remembered

    assert checker.auth.verify_access_token(token.access_token).session_id == token.session_id

    writer.auth.logout(user.id, token.session_id)

    with pytest.raises(TokenRevoked):
        checker.auth.authenticate(token.access_token)
    with pytest.raises(TokenRevoked):
        checker.auth.verify_access_token(token.access_token)
    assert checker.auth.authenticate(kept.access_token).id == user.id  # another session lives
    assert checker.auth.verify_access_token(kept.access_token).session_id == kept.session_id


def test_a_session_revoked_in_the_database_alone_is_refused_without_replicas(
    pair: tuple[UserManagement, UserManagement],
) -> None:
    # Without replicas the session is read with the user in one SELECT on the primary,
    # even with a revocation store: a revocation the store never heard of (written by
    # hand, or lost while Redis was down) still takes effect at once.
    writer, checker = pair
    user, password = create_user(writer)
    token = writer.auth.login(user.email, password)
    assert checker.auth.authenticate(token.access_token).id == user.id
    factory = writer.backends.uow
    assert isinstance(factory, SqlUnitOfWorkFactory)
    with factory.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE sessions SET revoked_at = now() WHERE id = %(id)s", {"id": token.session_id}
        )

    if factory.reads_from_replicas:  # the store decides, as documented (replicas may lag)
        assert checker.auth.authenticate(token.access_token).id == user.id
    else:
        with pytest.raises(TokenRevoked):
            checker.auth.authenticate(token.access_token)


def test_password_change_elsewhere_ends_the_other_sessions_at_once(
    pair: tuple[UserManagement, UserManagement],
) -> None:
    writer, checker = pair
    user, password = create_user(writer)
    old = writer.auth.login(user.email, password)
    current = writer.auth.login(user.email, password)
    assert checker.auth.authenticate(old.access_token).id == user.id

    writer.users.change_password(
        user.id, password, password + "-changed", keep_session_id=current.session_id
    )

    with pytest.raises(TokenRevoked):
        checker.auth.authenticate(old.access_token)
    assert checker.auth.authenticate(current.access_token).id == user.id


def test_deactivation_elsewhere_stops_tokens_and_permissions_at_once(
    pair: tuple[UserManagement, UserManagement],
) -> None:
    writer, checker = pair
    owner, member, password, org = _member_of_new_org(writer)
    token = writer.auth.login(member.email, password)
    assert checker.auth.authenticate(token.access_token).id == member.id
    assert checker.authz.has_permission(member.id, org.id, "member:read")

    writer.users.deactivate(member.id)

    with pytest.raises(InvalidToken):
        checker.auth.authenticate(token.access_token)
    assert not checker.authz.has_permission(member.id, org.id, "member:read")
    assert checker.authz.has_permission(owner.id, org.id, "member:read")  # others untouched


def test_a_deactivated_user_holds_nothing_even_with_a_live_session(
    pair: tuple[UserManagement, UserManagement],
) -> None:
    # The user row alone decides (a row changed by hand or by another tool, no
    # invalidation anywhere): with no cache on this path there is nothing to go stale.
    writer, checker = pair
    _, member, password, org = _member_of_new_org(writer)
    token = writer.auth.login(member.email, password)
    assert checker.authz.has_permission(member.id, org.id, "member:read")
    factory = writer.backends.uow
    assert isinstance(factory, SqlUnitOfWorkFactory)
    with factory.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE users SET is_active = false WHERE id = %(id)s", {"id": member.id}
        )

    with pytest.raises(InvalidToken) as refused:
        checker.auth.authenticate(token.access_token)
    assert not isinstance(refused.value, TokenRevoked)
    if checker.backends.cache is None:  # with Redis the entry lives until an invalidation
        assert not checker.authz.has_permission(member.id, org.id, "member:read")


def test_membership_removal_elsewhere_is_enforced_at_once(
    pair: tuple[UserManagement, UserManagement],
) -> None:
    writer, checker = pair
    owner, member, _, org = _member_of_new_org(writer)
    assert checker.authz.require(member.id, org.id, "member:read").roles == frozenset({"member"})

    writer.members.remove(owner.id, org.id, member.id)

    with pytest.raises(NotFound):
        checker.authz.require(member.id, org.id, "member:read")
    assert checker.authz.effective(member.id, org.id) is None


def test_role_changes_elsewhere_are_enforced_at_once(
    pair: tuple[UserManagement, UserManagement],
) -> None:
    writer, checker = pair
    owner, member, _, org = _member_of_new_org(writer)
    role = writer.roles.create(owner.id, org.id, "auditor", permissions=["audit:read"])
    assert not checker.authz.has_permission(member.id, org.id, "audit:read")

    writer.members.update_roles(owner.id, org.id, member.id, ["member", "auditor"])
    effective = checker.authz.effective(member.id, org.id)
    assert effective is not None
    assert effective.roles == frozenset({"member", "auditor"})
    assert "audit:read" in effective.permissions
    assert "member:read" in effective.permissions

    writer.roles.update(owner.id, org.id, role.id, permissions=["member:read"])
    assert not checker.authz.has_permission(member.id, org.id, "audit:read")

    writer.members.update_roles(owner.id, org.id, member.id, ["auditor"])
    effective = checker.authz.effective(member.id, org.id)
    assert effective is not None
    assert effective.roles == frozenset({"auditor"})
    assert not checker.authz.has_permission(member.id, org.id, "member:invite")


def test_a_member_without_roles_is_a_member_holding_nothing(
    pair: tuple[UserManagement, UserManagement],
) -> None:
    writer, checker = pair
    owner, member, _, org = _member_of_new_org(writer)
    factory = writer.backends.uow
    assert isinstance(factory, SqlUnitOfWorkFactory)
    with factory.engine.begin() as connection:
        connection.exec_driver_sql(
            "DELETE FROM membership_roles WHERE membership_id IN (SELECT id FROM "
            "organization_memberships WHERE user_id = %(id)s)",
            {"id": member.id},
        )
    writer.authz.invalidate(org.id)  # the hand-made change, announced as the services do

    effective = checker.authz.effective(member.id, org.id)
    assert effective is not None
    assert effective.permissions == frozenset()
    assert effective.roles == frozenset()
    assert checker.authz.effective(owner.id, org.id) is not None


# --- no pre-ping: the first call after a restart ----------------------------------------------


def _pooled(um: UserManagement) -> SqlUnitOfWorkFactory:
    """Leave a connection in the pool (and return the factory)."""
    factory = um.backends.uow
    assert isinstance(factory, SqlUnitOfWorkFactory)
    factory.check()
    assert factory.engine.pool.checkedin() >= 1
    return factory


def _watch(factory: SqlUnitOfWorkFactory) -> list[str]:
    """Listen to the engine's statements (which sends the hot path through SQLAlchemy
    instead of straight to psycopg); the statements seen."""
    seen: list[str] = []
    event.listen(factory.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


@pytest.mark.parametrize("path", ["psycopg", "sqlalchemy"])
def test_the_first_call_after_a_server_restart_succeeds(
    stoppable: StoppableServer, path: str
) -> None:
    migrate.upgrade(stoppable.url)
    settings = Settings.for_tests(database_url=stoppable.url)
    setup = UserManagement(settings)
    setup.seed()
    _owner, member, password, org = _member_of_new_org(setup)
    token = setup.auth.login(member.email, password)
    setup.close()

    # one instance per kind of first call, each with a pooled connection the restart kills
    kinds = ["authenticate", "authorize", "read", "write", "check"]
    instances = {kind: UserManagement(settings) for kind in kinds}
    try:
        for um in instances.values():
            factory = _pooled(um)
            if path == "sqlalchemy":
                _watch(factory)
        stoppable.stop()
        stoppable.start()

        assert instances["authenticate"].auth.authenticate(token.access_token).id == member.id
        assert instances["authorize"].authz.has_permission(member.id, org.id, "member:read")
        assert instances["read"].auth.verify_access_token(token.access_token).user_id == member.id
        assert instances["write"].auth.login(member.email, password).session_id is not None
        _pooled(instances["check"])  # the health check, too
    finally:
        for um in instances.values():
            um.close()
        with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
            stoppable.start()  # leave it running for the fixture's teardown


def test_no_ping_before_a_statement(pg_contracts_url: str) -> None:
    truncate_all(pg_contracts_url)
    um = UserManagement(Settings.for_tests(database_url=pg_contracts_url))
    try:
        um.seed()
        user, password = create_user(um)
        token = um.auth.login(user.email, password)
        factory = _pooled(um)
        assert factory.engine.pool._pre_ping is False
        sent = _watch(factory)
        assert um.auth.authenticate(token.access_token).id == user.id
        assert len(sent) == 1
        assert sent[0].lstrip().upper().startswith("SELECT")
    finally:
        um.close()


def test_both_paths_read_the_same_answers(pg_contracts_url: str) -> None:
    # psycopg's own rows (no SQLAlchemy result processing) against SQLAlchemy's
    truncate_all(pg_contracts_url)
    um = UserManagement(Settings.for_tests(database_url=pg_contracts_url))
    try:
        um.seed()
        owner, member, password, org = _member_of_new_org(um)
        um.users.update_profile(member.id, metadata={"team": "blue", "n": 1})
        token = um.auth.login(member.email, password)
        factory = um.backends.uow
        assert isinstance(factory, SqlUnitOfWorkFactory)
        asks = [
            lambda: factory.live_session_user(token.session_id, member.id),
            lambda: factory.live_session_user(token.session_id, owner.id),
            lambda: factory.live_session_user(owner.id, member.id),  # no such session
            lambda: factory.user_by_id(member.id),
            lambda: factory.user_by_id(org.id),  # no such user
            lambda: factory.member_roles(org.id, member.id),
            lambda: factory.member_roles(org.id, owner.id),
            lambda: factory.member_roles(member.id, member.id),  # no such organization
        ]
        direct = [ask() for ask in asks]
        seen = _watch(factory)
        through = [ask() for ask in asks]
        assert len(seen) == len(asks)  # the second round went through SQLAlchemy
        assert direct == through
        live, user = direct[0]
        assert live
        assert user is not None
        assert user.metadata == {"team": "blue", "n": 1}
        assert user.created_at.tzinfo is UTC
        assert direct[2] == (False, None)
        assert direct[4] is None
        assert direct[7] is None
        member_answer = direct[5]
        assert member_answer is not None
        assert member_answer[0] is True
        assert [role.name for role in member_answer[1]] == ["member"]
        assert member_answer[1][0].created_at.tzinfo is UTC
    finally:
        um.close()


def test_an_unreachable_replica_falls_back_to_the_primary(
    pg_contracts_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    truncate_all(pg_contracts_url)
    um = UserManagement(Settings.for_tests(database_url=pg_contracts_url))
    factory = SqlUnitOfWorkFactory(
        pg_contracts_url, replica_urls=["postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"]
    )
    try:
        um.seed()
        user, _ = create_user(um)
        with caplog.at_level("WARNING", logger="usermgmt.sql"):
            found = factory.user_by_id(user.id)
        assert found == um.users.get(user.id)
        assert "unavailable; reading from the next" in caplog.text
    finally:
        factory.dispose()
        um.close()
