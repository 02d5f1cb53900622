"""Audit: one event per flow with its full context (SEC-LG-01/02), and audit.list queries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.errors import InvalidCredentials, NotFound, PermissionDenied, ValidationError
from usermgmt.models import AuditEvent, Organization, RequestContext, User
from usermgmt.testing import create_user, extract_token, random_password


def _events(um: UserManagement, action: str | None = None) -> list[AuditEvent]:
    store = um.backends.uow.store
    with store.lock:
        found = sorted(store.audit.values(), key=lambda e: e.id)
    return [e for e in found if action is None or e.action == action]


def _join(um: UserManagement, inviter: User, org_id: UUID, roles: list[str] | None = None) -> User:
    user, _ = create_user(um)
    um.invitations.create(inviter.id, org_id, user.email, roles=roles)
    um.invitations.accept(user.id, extract_token(um.outbox.last(to=user.email)))
    return user


@dataclass
class Env:
    um: UserManagement
    owner: User
    owner_password: str
    org: Organization


@dataclass
class Expect:
    actor: UUID | None
    org: UUID | None
    target_type: str | None
    target_id: UUID | str | None


Flow = Callable[[Env], Callable[[RequestContext], Expect]]


# --- the flows: each sets up without a context, then acts once with one -----------------------------


def _registered(env: Env) -> Callable[[RequestContext], Expect]:
    def act(ctx: RequestContext) -> Expect:
        user = env.um.users.register("fresh@example.com", random_password(), ctx=ctx).user
        assert user is not None
        return Expect(user.id, None, "user", user.id)

    return act


def _email_verified(env: Env) -> Callable[[RequestContext], Expect]:
    user, _ = create_user(env.um, "unverified@example.com", verified=False)
    token = extract_token(env.um.outbox.last(to=user.email, template="verify_email"))

    def act(ctx: RequestContext) -> Expect:
        env.um.users.verify_email(token, ctx=ctx)
        return Expect(user.id, None, "user", user.id)

    return act


def _login(env: Env) -> Callable[[RequestContext], Expect]:
    def act(ctx: RequestContext) -> Expect:
        pair = env.um.auth.login(env.owner.email, env.owner_password, ctx=ctx)
        return Expect(env.owner.id, None, "session", pair.session_id)

    return act


def _login_failed(env: Env) -> Callable[[RequestContext], Expect]:
    def act(ctx: RequestContext) -> Expect:
        with pytest.raises(InvalidCredentials):
            env.um.auth.login(env.owner.email, "wrong password, long enough", ctx=ctx)
        return Expect(env.owner.id, None, "user", env.owner.id)

    return act


def _logout(env: Env) -> Callable[[RequestContext], Expect]:
    pair = env.um.auth.login(env.owner.email, env.owner_password)

    def act(ctx: RequestContext) -> Expect:
        env.um.auth.logout(env.owner.id, pair.session_id, ctx=ctx)
        return Expect(env.owner.id, None, "session", pair.session_id)

    return act


def _refreshed(env: Env) -> Callable[[RequestContext], Expect]:
    pair = env.um.auth.login(env.owner.email, env.owner_password)

    def act(ctx: RequestContext) -> Expect:
        env.um.auth.refresh(pair.refresh_token, ctx=ctx)
        return Expect(env.owner.id, None, "session", pair.session_id)

    return act


def _password_changed(env: Env) -> Callable[[RequestContext], Expect]:
    def act(ctx: RequestContext) -> Expect:
        env.um.users.change_password(env.owner.id, env.owner_password, random_password(), ctx=ctx)
        return Expect(env.owner.id, None, "user", env.owner.id)

    return act


def _password_reset(env: Env) -> Callable[[RequestContext], Expect]:
    env.um.users.request_password_reset(env.owner.email)
    token = extract_token(env.um.outbox.last(to=env.owner.email, template="password_reset"))

    def act(ctx: RequestContext) -> Expect:
        env.um.users.reset_password(token, random_password(), ctx=ctx)
        return Expect(env.owner.id, None, "user", env.owner.id)

    return act


def _org_created(env: Env) -> Callable[[RequestContext], Expect]:
    def act(ctx: RequestContext) -> Expect:
        org = env.um.organizations.create(env.owner.id, "Another", ctx=ctx)
        return Expect(env.owner.id, org.id, "organization", org.id)

    return act


def _org_updated(env: Env) -> Callable[[RequestContext], Expect]:
    def act(ctx: RequestContext) -> Expect:
        env.um.organizations.update(env.owner.id, env.org.id, ctx=ctx, name="Renamed")
        return Expect(env.owner.id, env.org.id, "organization", env.org.id)

    return act


def _org_deleted(env: Env) -> Callable[[RequestContext], Expect]:
    def act(ctx: RequestContext) -> Expect:
        env.um.organizations.delete(env.owner.id, env.org.id, ctx=ctx)
        return Expect(env.owner.id, env.org.id, "organization", env.org.id)

    return act


def _roles_updated(env: Env) -> Callable[[RequestContext], Expect]:
    user = _join(env.um, env.owner, env.org.id)

    def act(ctx: RequestContext) -> Expect:
        env.um.members.update_roles(env.owner.id, env.org.id, user.id, ["admin"], ctx=ctx)
        return Expect(env.owner.id, env.org.id, "user", user.id)

    return act


def _member_removed(env: Env) -> Callable[[RequestContext], Expect]:
    user = _join(env.um, env.owner, env.org.id)

    def act(ctx: RequestContext) -> Expect:
        env.um.members.remove(env.owner.id, env.org.id, user.id, ctx=ctx)
        return Expect(env.owner.id, env.org.id, "user", user.id)

    return act


def _member_left(env: Env) -> Callable[[RequestContext], Expect]:
    user = _join(env.um, env.owner, env.org.id)

    def act(ctx: RequestContext) -> Expect:
        env.um.members.leave(user.id, env.org.id, ctx=ctx)
        return Expect(user.id, env.org.id, "user", user.id)

    return act


def _invitation_created(env: Env) -> Callable[[RequestContext], Expect]:
    def act(ctx: RequestContext) -> Expect:
        inv = env.um.invitations.create(env.owner.id, env.org.id, "new@example.com", ctx=ctx)
        return Expect(env.owner.id, env.org.id, "invitation", inv.id)

    return act


def _invitation_accepted(env: Env) -> Callable[[RequestContext], Expect]:
    user, _ = create_user(env.um)
    inv = env.um.invitations.create(env.owner.id, env.org.id, user.email)
    token = extract_token(env.um.outbox.last(to=user.email, template="invitation"))

    def act(ctx: RequestContext) -> Expect:
        env.um.invitations.accept(user.id, token, ctx=ctx)
        return Expect(user.id, env.org.id, "invitation", inv.id)

    return act


def _invitation_revoked(env: Env) -> Callable[[RequestContext], Expect]:
    inv = env.um.invitations.create(env.owner.id, env.org.id, "gone@example.com")

    def act(ctx: RequestContext) -> Expect:
        env.um.invitations.revoke(env.owner.id, env.org.id, inv.id, ctx=ctx)
        return Expect(env.owner.id, env.org.id, "invitation", inv.id)

    return act


def _role_created(env: Env) -> Callable[[RequestContext], Expect]:
    def act(ctx: RequestContext) -> Expect:
        role = env.um.roles.create(env.owner.id, env.org.id, "Billing", ["audit:read"], ctx=ctx)
        return Expect(env.owner.id, env.org.id, "role", role.id)

    return act


def _role_updated(env: Env) -> Callable[[RequestContext], Expect]:
    role = env.um.roles.create(env.owner.id, env.org.id, "Billing", [])

    def act(ctx: RequestContext) -> Expect:
        env.um.roles.update(env.owner.id, env.org.id, role.id, name="Finance", ctx=ctx)
        return Expect(env.owner.id, env.org.id, "role", role.id)

    return act


def _role_deleted(env: Env) -> Callable[[RequestContext], Expect]:
    role = env.um.roles.create(env.owner.id, env.org.id, "Billing", [])

    def act(ctx: RequestContext) -> Expect:
        env.um.roles.delete(env.owner.id, env.org.id, role.id, ctx=ctx)
        return Expect(env.owner.id, env.org.id, "role", role.id)

    return act


def _authorization_denied(env: Env) -> Callable[[RequestContext], Expect]:
    user = _join(env.um, env.owner, env.org.id)

    def act(ctx: RequestContext) -> Expect:
        with pytest.raises(PermissionDenied):
            env.um.organizations.update(user.id, env.org.id, ctx=ctx, name="Mine now")
        return Expect(user.id, env.org.id, "permission", "organization:update")

    return act


FLOWS: dict[str, Flow] = {
    "user.registered": _registered,
    "user.email_verified": _email_verified,
    "user.login": _login,
    "user.login_failed": _login_failed,
    "user.logout": _logout,
    "session.refreshed": _refreshed,
    "user.password_changed": _password_changed,
    "user.password_reset": _password_reset,
    "organization.created": _org_created,
    "organization.updated": _org_updated,
    "organization.deleted": _org_deleted,
    "member.roles_updated": _roles_updated,
    "member.removed": _member_removed,
    "member.left": _member_left,
    "invitation.created": _invitation_created,
    "invitation.accepted": _invitation_accepted,
    "invitation.revoked": _invitation_revoked,
    "role.created": _role_created,
    "role.updated": _role_updated,
    "role.deleted": _role_deleted,
    "authorization.denied": _authorization_denied,
}


@pytest.fixture
def env(um: UserManagement) -> Env:
    owner, password = create_user(um, "owner@example.com")
    org = um.organizations.create(owner.id, "Acme")
    return Env(um, owner, password, org)


@pytest.mark.parametrize("action", sorted(FLOWS))
def test_audit_events_per_flow(env: Env, action: str) -> None:
    act = FLOWS[action](env)
    ctx = RequestContext(ip="203.0.113.9", user_agent="AuditAgent/1.0", request_id=f"req-{action}")
    before = {e.id for e in env.um.backends.uow.store.audit.values()}

    expect = act(ctx)

    new = [e for e in _events(env.um) if e.id not in before]
    matching = [e for e in new if e.action == action]
    assert len(matching) == 1, [e.action for e in new]
    event = matching[0]
    assert event.occurred_at == env.um.clock.now()
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.actor_user_id == expect.actor
    assert event.organization_id == expect.org
    assert event.target_type == expect.target_type
    assert event.target_id == (None if expect.target_id is None else str(expect.target_id))
    assert (event.ip, event.user_agent, event.request_id) == (
        "203.0.113.9",
        "AuditAgent/1.0",
        f"req-{action}",
    )
    # every event the call wrote carries the request's context
    assert all((e.ip, e.request_id) == ("203.0.113.9", f"req-{action}") for e in new)


def test_denied_event_names_the_permission(env: Env) -> None:
    FLOWS["authorization.denied"](env)(RequestContext())
    (event,) = _events(env.um, "authorization.denied")
    assert event.metadata == {"permission": "organization:update"}
    assert event.outcome == "denied"
    assert event.target_id == "organization:update"


def test_context_fields_are_bounded(env: Env) -> None:
    ctx = RequestContext(ip="192.0.2.1", user_agent="U" * 5000, request_id="r" * 5000)
    env.um.organizations.update(env.owner.id, env.org.id, ctx=ctx, name="Bounded")
    (event,) = _events(env.um, "organization.updated")
    assert event.user_agent is not None
    assert 0 < len(event.user_agent) <= 512
    assert event.request_id is not None
    assert 0 < len(event.request_id) <= 128


# --- audit.list ------------------------------------------------------------------------------------------


@pytest.fixture
def trail(um: UserManagement, um_clock: FakeClock) -> tuple[Env, User, list[AuditEvent]]:
    """An org whose owner and an admin each wrote events, one minute apart."""
    owner, password = create_user(um, "owner@example.com")
    org = um.organizations.create(owner.id, "Acme")
    admin = _join(um, owner, org.id, ["admin"])
    for i in range(10):
        um_clock.advance(seconds=60)
        actor = owner if i % 2 == 0 else admin
        um.organizations.update(actor.id, org.id, name=f"Name {i}")
    events = [e for e in _events(um) if e.organization_id == org.id]
    return Env(um, owner, password, org), admin, events


def _all_pages(um: UserManagement, actor: UUID, org_id: UUID, **query: Any) -> list[AuditEvent]:
    seen: list[AuditEvent] = []
    cursor = None
    for _ in range(1000):
        page = um.audit.list(actor, org_id, cursor=cursor, **query)
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("pagination never ended")


def test_list_newest_first_and_complete(trail: tuple[Env, User, list[AuditEvent]]) -> None:
    env, _, events = trail
    listed = env.um.audit.list(env.owner.id, env.org.id, limit=200).items
    assert [e.id for e in listed] == [e.id for e in reversed(events)]
    times = [e.occurred_at for e in listed]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize("limit", [1, 3, 7, 200])
def test_cursor_pagination_no_duplicates_or_gaps(
    trail: tuple[Env, User, list[AuditEvent]], limit: int
) -> None:
    env, _, events = trail
    pages = _all_pages(env.um, env.owner.id, env.org.id, limit=limit)
    assert [e.id for e in pages] == [e.id for e in reversed(events)]


def test_pagination_is_stable_while_new_events_arrive(
    trail: tuple[Env, User, list[AuditEvent]],
) -> None:
    env, _, events = trail
    first = env.um.audit.list(env.owner.id, env.org.id, limit=4)
    env.um.organizations.update(env.owner.id, env.org.id, name="Meanwhile")  # newer event
    rest: list[AuditEvent] = []
    cursor = first.next_cursor
    while cursor is not None:
        page = env.um.audit.list(env.owner.id, env.org.id, limit=4, cursor=cursor)
        rest += page.items
        cursor = page.next_cursor
    assert [e.id for e in first.items + rest] == [e.id for e in reversed(events)]


def test_filter_by_action_and_actor(trail: tuple[Env, User, list[AuditEvent]]) -> None:
    env, admin, events = trail
    um = env.um
    updated = um.audit.list(env.owner.id, env.org.id, action="organization.updated").items
    assert len(updated) == 10
    assert {e.action for e in updated} == {"organization.updated"}
    by_admin = _all_pages(um, env.owner.id, env.org.id, actor_filter=admin.id, limit=2)
    assert by_admin
    assert {e.actor_user_id for e in by_admin} == {admin.id}
    assert len(by_admin) == len([e for e in events if e.actor_user_id == admin.id])
    by_admin_text = um.audit.list(env.owner.id, env.org.id, actor_filter=str(admin.id)).items
    assert [e.id for e in by_admin_text] == [e.id for e in by_admin]
    both = um.audit.list(
        env.owner.id, env.org.id, action="organization.updated", actor_filter=admin.id
    ).items
    assert len(both) == 5
    assert um.audit.list(env.owner.id, env.org.id, action="no.such").items == []


def test_filter_by_time_window(trail: tuple[Env, User, list[AuditEvent]]) -> None:
    env, _, events = trail
    um = env.um
    updates = [e for e in events if e.action == "organization.updated"]
    since, until = updates[2].occurred_at, updates[6].occurred_at
    window = um.audit.list(env.owner.id, env.org.id, since=since, until=until).items
    assert [e.id for e in window] == [e.id for e in reversed(updates[2:6])]  # until exclusive
    as_text = um.audit.list(
        env.owner.id,
        env.org.id,
        since=since.isoformat().replace("+00:00", "Z"),
        until=until.astimezone(UTC).isoformat(),
    ).items
    assert [e.id for e in as_text] == [e.id for e in window]
    # another offset naming the same instant selects the same events
    shifted = since.astimezone(datetime.now(UTC).astimezone().tzinfo)
    assert um.audit.list(env.owner.id, env.org.id, since=shifted, until=until).items == window


@pytest.mark.parametrize(
    "query",
    [
        {"since": datetime(2026, 1, 1, 12, 0)},
        {"until": datetime(2026, 1, 1, 12, 0)},
        {"since": "2026-01-01T12:00:00"},
        {"since": "yesterday"},
        {"actor_filter": "not-a-uuid"},
        {"limit": 0},
        {"limit": 201},
        {"cursor": "!!!"},
        {"cursor": "abc"},
        {"cursor": "A" * 201},
        {"action": "x" * 101},
    ],
)
def test_bad_queries_are_validation_errors(
    trail: tuple[Env, User, list[AuditEvent]], query: dict[str, Any]
) -> None:
    env, _, _ = trail
    before = len(_events(env.um))
    with pytest.raises(ValidationError) as info:
        env.um.audit.list(env.owner.id, env.org.id, **query)
    assert info.value.code == "validation_error"
    assert len(_events(env.um)) == before


def test_list_requires_audit_read(trail: tuple[Env, User, list[AuditEvent]]) -> None:
    env, admin, _ = trail
    um = env.um
    assert um.audit.list(admin.id, env.org.id).items  # admin holds audit:read
    member = _join(um, env.owner, env.org.id)
    with pytest.raises(PermissionDenied):
        um.audit.list(member.id, env.org.id)
    auditor_role = um.roles.create(env.owner.id, env.org.id, "Auditor", ["audit:read"])
    um.members.update_roles(env.owner.id, env.org.id, member.id, [str(auditor_role.id)])
    assert um.audit.list(member.id, env.org.id).items
    outsider, _ = create_user(um)
    with pytest.raises(NotFound):
        um.audit.list(outsider.id, env.org.id)


def test_list_shows_only_this_orgs_events(trail: tuple[Env, User, list[AuditEvent]]) -> None:
    env, _, _ = trail
    other = env.um.organizations.create(env.owner.id, "Other")
    env.um.organizations.update(env.owner.id, other.id, name="Other 2")
    listed = _all_pages(env.um, env.owner.id, env.org.id, limit=50)
    assert listed
    assert all(e.organization_id == env.org.id for e in listed)
    other_listed = env.um.audit.list(env.owner.id, other.id).items
    assert {e.action for e in other_listed} == {"organization.created", "organization.updated"}
