"""How many SQL statements the hot paths send, on SQLite and PostgreSQL.

Counted with a ``before_cursor_execute`` listener on the primary engine of the
:class:`~usermgmt.backends.sqlalchemy.SqlUnitOfWorkFactory`, so transaction control sent
as SQL (SQLite's ``BEGIN`` / ``BEGIN IMMEDIATE``, PostgreSQL's ``SAVEPOINT`` around
writes that may break a constraint) counts too; commits and rollbacks the driver does
by itself do not. The numbers are exact: a change that adds a query (an N+1, say) fails
here, and a change that removes one updates the table below.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.sql.conftest import fresh_sqlite_url, truncate_all
from usermgmt.app import UserManagement
from usermgmt.backends.memory import MemoryCache
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.ids import new_id
from usermgmt.models import Membership, Organization, User
from usermgmt.permissions import MEMBER
from usermgmt.ports import UnitOfWork
from usermgmt.testing import create_user

pytestmark = pytest.mark.sql

#: Statements per operation and database (see the module docstring for what counts).
EXPECTED: dict[str, dict[str, int]] = {
    # SQLite sends its BEGIN as SQL: IMMEDIATE for a unit of work that may write (every
    # Kernel.read without replica=True, too), plain for a read-only one.
    # An audit event is 3 statements (issue 7's hash chain): UPDATE audit_chain_heads ...
    # RETURNING (the stream's row lock), INSERT audit_logs, UPDATE the head's hash.
    # Without Redis the login lockout lives in the database (SECURITY.md F1, migration
    # 0003), so every process shares it: a login reserves its attempt (one INSERT ... ON
    # CONFLICT DO UPDATE ... RETURNING, autocommit) and a success clears it (one DELETE).
    "sqlite": {
        # lockout upsert | BEGIN + user by email | lockout DELETE |
        # BEGIN + user FOR UPDATE, UPDATE user, INSERT session, audit (3)
        "login": 11,
        "refresh": 7,  # BEGIN, session, user, UPDATE session (compare-and-set), audit (3)
        # The per-request checks are one statement each outside a transaction (no BEGIN):
        # membership + user + roles + permissions; session (revocation) + user.
        "has_permission_cold": 1,
        "has_permission_warm": 0,
        "authenticate": 1,
        "members_list": 4,  # BEGIN, roles, memberships, users IN (...)
    },
    # PostgreSQL: BEGIN is implicit; a write that may break a constraint runs in a SAVEPOINT.
    "postgresql": {
        # lockout upsert | user by email | lockout DELETE |
        # user FOR NO KEY UPDATE, SAVEPOINT, UPDATE, RELEASE, INSERT, audit (3)
        "login": 11,
        "refresh": 6,
        "has_permission_cold": 1,  # one SELECT in autocommit (no BEGIN / ROLLBACK either)
        "has_permission_warm": 0,
        "authenticate": 1,
        "members_list": 3,
    },
}


@dataclass
class Statements:
    """The statements sent while a :meth:`counting` block ran."""

    sql: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sql)


@dataclass
class Scene:
    um: UserManagement
    dialect: str
    user: User
    password: str
    org: Organization

    @contextlib.contextmanager
    def counting(self) -> Iterator[Statements]:
        factory = self.um.backends.uow
        assert isinstance(factory, SqlUnitOfWorkFactory)
        seen = Statements()

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            seen.sql.append(" ".join(statement.split()))

        event.listen(factory.engine, "before_cursor_execute", record)
        try:
            yield seen
        finally:
            event.remove(factory.engine, "before_cursor_execute", record)

    def expect(self, operation: str, seen: Statements) -> None:
        listing = "\n".join(f"  {s[:160]}" for s in seen.sql)
        assert len(seen) == EXPECTED[self.dialect][operation], (
            f"{operation} on {self.dialect} sent {len(seen)} statements:\n{listing}"
        )


def _add_member(um: UserManagement, org: Organization, user: User) -> None:
    def body(uow: UnitOfWork) -> None:
        role = uow.roles.get_by_name(org.id, MEMBER)
        assert role is not None
        now = um.clock.now()
        uow.memberships.add(
            Membership(
                id=new_id(),
                organization_id=org.id,
                user_id=user.id,
                role_ids=frozenset({role.id}),
                joined_at=now,
                updated_at=now,
            )
        )

    um.kernel.write(body)


@pytest.fixture(params=["sqlite", "postgresql"])
def scene(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scene]:
    if request.param == "sqlite":
        url = fresh_sqlite_url(request.getfixturevalue("sqlite_template"), tmp_path)
    else:
        url = request.getfixturevalue("pg_contracts_url")
        truncate_all(url)
    clock = FakeClock()
    um = UserManagement(Settings.for_tests(database_url=url), clock=clock)
    # Without Redis a SQL deployment has no permission cache (processes could not share
    # its invalidations); give it one here, as Redis would, to count the warm path.
    um.kernel.cache = MemoryCache(clock=clock)
    um.seed()
    user, password = create_user(um)
    org = um.organizations.create(user.id, "Counted")
    for _ in range(3):
        member, _ = create_user(um)
        _add_member(um, org, member)
    um.auth.login(user.email, password)  # warm the pool: first connections cost extra
    yield Scene(um, request.param, user, password, org)
    um.close()


def test_login(scene: Scene) -> None:
    with scene.counting() as seen:
        scene.um.auth.login(scene.user.email, scene.password)
    scene.expect("login", seen)


def test_refresh(scene: Scene) -> None:
    pair = scene.um.auth.login(scene.user.email, scene.password)
    with scene.counting() as seen:
        scene.um.auth.refresh(pair.refresh_token)
    scene.expect("refresh", seen)


def test_has_permission_without_a_cache_reads_the_database_each_time(
    tmp_path: Path, sqlite_template: Path
) -> None:
    um = UserManagement(
        Settings.for_tests(database_url=fresh_sqlite_url(sqlite_template, tmp_path)),
        clock=FakeClock(),
    )
    try:
        assert um.kernel.cache is None  # SQL without Redis: no process-local cache
        user, _ = create_user(um)
        org = um.organizations.create(user.id, "Uncached")
        other = UserManagement(um.settings, clock=um.clock)  # a second process, same database
        assert other.authz.has_permission(user.id, org.id, "organization:delete")
        um.organizations.delete(user.id, org.id)
        assert not other.authz.has_permission(user.id, org.id, "organization:delete")  # at once
        other.close()
    finally:
        um.close()


def test_has_permission_cold_and_warm_cache(scene: Scene) -> None:
    um, user, org = scene.um, scene.user, scene.org
    um.authz.invalidate(org.id)
    with scene.counting() as cold:
        assert um.authz.has_permission(user.id, org.id, "member:invite")
    scene.expect("has_permission_cold", cold)
    with scene.counting() as warm:
        assert um.authz.has_permission(user.id, org.id, "member:invite")
        assert not um.authz.has_permission(user.id, org.id, "nothing:here")
    scene.expect("has_permission_warm", warm)


def test_authenticate(scene: Scene) -> None:
    pair = scene.um.auth.login(scene.user.email, scene.password)
    scene.um.auth.authenticate(pair.access_token)  # the signature check is remembered
    with scene.counting() as seen:
        assert scene.um.auth.authenticate(pair.access_token).id == scene.user.id
    scene.expect("authenticate", seen)


def test_members_list_is_not_n_plus_one(scene: Scene) -> None:
    um, user, org = scene.um, scene.user, scene.org
    um.authz.has_permission(user.id, org.id, "member:read")  # warm the permission cache
    with scene.counting() as seen:
        page = um.members.list(user.id, org.id, limit=10)
    assert len(page.items) == 4
    scene.expect("members_list", seen)
    assert sum(" IN (" in s and s.startswith("SELECT users.") for s in seen.sql) == 1

    for _ in range(5):  # more members, same number of statements
        member, _ = create_user(um)
        _add_member(um, org, member)
    with scene.counting() as more:
        page = um.members.list(user.id, org.id, limit=10)
    assert len(page.items) == 9
    scene.expect("members_list", more)
