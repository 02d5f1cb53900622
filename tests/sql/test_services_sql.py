"""The core flows through ``UserManagement`` on SQLite and PostgreSQL, compared with the
in-memory backend: the SQL storage must behave the same under the services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sql.conftest import fresh_sqlite_url, truncate_all
from usermgmt.app import UserManagement
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.errors import (
    EmailTaken,
    InvalidToken,
    LastOwner,
    OneTimeTokenError,
    SlugTaken,
    TokenReused,
    TokenRevoked,
    UserMgmtError,
)
from usermgmt.models import AuditEvent, Organization, User
from usermgmt.testing import create_user, extract_token, random_password

pytestmark = pytest.mark.sql

Build = Callable[..., UserManagement]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return fresh_sqlite_url(request.getfixturevalue("sqlite_template"), tmp_path)
    url: str = request.getfixturevalue("pg_contracts_url")
    truncate_all(url)
    return url


@pytest.fixture
def build(database_url: str) -> Iterator[Build]:
    """``build(**settings)``: a seeded UserManagement on the test database, on a fake clock."""
    built: list[UserManagement] = []

    def make(**overrides: Any) -> UserManagement:
        settings = Settings.for_tests(database_url=database_url, **overrides)
        um = UserManagement(settings, clock=FakeClock(), permissions=["project:create"])
        built.append(um)
        um.seed()
        return um

    yield make
    for um in built:
        um.close()
        factory = um.backends.uow
        assert isinstance(factory, SqlUnitOfWorkFactory)
        factory.dispose()


@pytest.fixture
def um(build: Build) -> UserManagement:
    return build()


def memory_um() -> UserManagement:
    return UserManagement.in_memory(clock=FakeClock(), permissions=["project:create"])


def _org_events(um: UserManagement, owner: User, org: Organization) -> list[AuditEvent]:
    """Every event of the organization, newest first, read page by page (cursor)."""
    events: list[AuditEvent] = []
    cursor: str | None = None
    while True:
        page = um.audit.list(owner.id, org.id, limit=2, cursor=cursor)
        events += page.items
        if page.next_cursor is None:
            return events
        cursor = page.next_cursor


# --- accounts and sessions --------------------------------------------------------------


def test_register_verify_login_refresh_reuse_logout(um: UserManagement) -> None:
    password = random_password()
    result = um.users.register(email="Ada@Example.com", password=password, name="Ada")
    assert result.user is not None
    user = result.user
    assert not user.is_verified

    message = um.outbox.last(template="verify_email")
    assert message is not None
    token = extract_token(message)
    verified = um.users.verify_email(token)
    assert verified.is_verified
    assert verified.email_verified_at is not None
    with pytest.raises(OneTimeTokenError):
        um.users.verify_email(token)  # single use

    # the same address in another case: same answer, no second account
    again = um.users.register(email="ada@EXAMPLE.com", password=random_password())
    assert again.user is None
    assert um.users.get_by_email("ADA@example.COM") == um.users.get(user.id)

    r1 = um.auth.login("ada@example.com", password)
    assert um.auth.authenticate(r1.access_token).id == user.id
    r2 = um.auth.refresh(r1.refresh_token)
    assert r2.session_id == r1.session_id
    with pytest.raises(TokenReused):
        um.auth.refresh(r1.refresh_token)  # reuse ends the family
    with pytest.raises(TokenRevoked):
        um.auth.refresh(r2.refresh_token)
    with pytest.raises(InvalidToken):
        um.auth.authenticate(r2.access_token)

    other = um.auth.login("ada@example.com", password)
    assert [s.id for s in um.users.list_sessions(user.id)] == [other.session_id]
    um.auth.logout(user.id, other.session_id)
    with pytest.raises(TokenRevoked):
        um.auth.verify_access_token(other.access_token)
    assert um.users.list_sessions(user.id) == []


def test_duplicate_registration_without_enumeration_protection(build: Build) -> None:
    um = build(prevent_enumeration=False)
    um.users.register(email="dup@example.com", password=random_password())
    with pytest.raises(EmailTaken):
        um.users.register(email="DUP@example.com", password=random_password())


def test_password_reset_token_is_single_use(um: UserManagement) -> None:
    user, _ = create_user(um)
    um.users.request_password_reset(user.email)
    message = um.outbox.last(to=user.email, template="password_reset")
    assert message is not None
    token = extract_token(message)
    new_password = random_password()
    um.users.reset_password(token, new_password)
    with pytest.raises(OneTimeTokenError):
        um.users.reset_password(token, random_password())
    assert um.auth.login(user.email, new_password).session_id is not None


# --- organizations, invitations, roles -----------------------------------------------------


def _team_scenario(um: UserManagement) -> dict[str, Any]:
    """Owner creates an org, invites and promotes a member, hits the last-owner rule,
    creates a custom role with an application permission, then deletes the org."""
    owner, _ = create_user(um, email="owner@example.com", name="Olivia Owner")
    invitee, _ = create_user(um, email="invitee@example.com")
    org = um.organizations.create(owner.id, "Acme Widgets")
    with pytest.raises(SlugTaken):
        um.organizations.create(owner.id, "Other", slug=org.slug)

    invitation = um.invitations.create(owner.id, org.id, "Invitee@Example.com")
    message = um.outbox.last(to="invitee@example.com", template="invitation")
    assert message is not None
    token = extract_token(message)
    membership = um.invitations.accept(invitee.id, token)
    assert membership.user_id == invitee.id
    with pytest.raises(UserMgmtError):
        um.invitations.accept(invitee.id, token)  # settled: never a second membership

    with pytest.raises(LastOwner):
        um.members.update_roles(owner.id, org.id, owner.id, ["member"])
    promoted = um.members.update_roles(owner.id, org.id, invitee.id, ["admin", "member"])
    assert {r.name for r in promoted.roles} == {"admin", "member"}
    um.members.update_roles(owner.id, org.id, invitee.id, ["owner"])
    um.members.update_roles(owner.id, org.id, owner.id, ["admin"])  # another owner remains
    with pytest.raises(LastOwner):
        um.members.leave(invitee.id, org.id)

    builder = um.roles.create(invitee.id, org.id, "builder", ["project:create", "member:read"])
    assert builder.permissions == frozenset({"project:create", "member:read"})
    effective = um.authz.effective(invitee.id, org.id)
    assert effective is not None
    assert "organization:delete" in effective.permissions

    members = um.members.list(invitee.id, org.id, limit=1)
    assert len(members.items) == 1
    assert members.next_cursor is not None
    rest = um.members.list(invitee.id, org.id, limit=10, cursor=members.next_cursor)
    listed = [v.user.email for v in members.items + rest.items]

    roles = [r.name for r in um.roles.list(invitee.id, org.id)]
    events = _org_events(um, invitee, org)
    um.organizations.delete(invitee.id, org.id)
    return {
        "invitation_email": invitation.email,
        "members": listed,
        "roles": roles,
        "events": [(e.action, e.outcome, e.target_type) for e in events],
        "orgs_after_delete": um.organizations.list_for_user(owner.id),
        "catalogue": [p.name for p in um.roles.catalogue()],
    }


def test_team_flow_matches_the_memory_backend(um: UserManagement) -> None:
    on_sql = _team_scenario(um)
    on_memory = _team_scenario(memory_um())
    assert on_sql == on_memory
    assert on_sql["orgs_after_delete"] == []
    assert on_sql["members"] == ["owner@example.com", "invitee@example.com"]
    actions = [action for action, _, _ in on_sql["events"]]
    assert actions[-1] == "organization.created"  # newest first
    assert "invitation.accepted" in actions
    assert "member.roles_updated" in actions


def test_audit_pages_are_strictly_ordered(um: UserManagement) -> None:
    owner, _ = create_user(um)
    org = um.organizations.create(owner.id, "Paged Org")
    for number in range(5):
        um.invitations.create(owner.id, org.id, f"guest{number}@example.com")
    events = _org_events(um, owner, org)
    ids = [e.id for e in events]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids) >= 6
    everything = um.audit.list(owner.id, org.id, limit=100)
    assert [e.id for e in everything.items] == ids
    assert everything.next_cursor is None
