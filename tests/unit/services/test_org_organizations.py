"""Organizations: creation with system roles, slugs, permission checks, deletion, listing."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from usermgmt.app import UserManagement
from usermgmt.errors import NotFound, OneTimeTokenError, PermissionDenied, SlugTaken
from usermgmt.models import AuditEvent, User
from usermgmt.testing import create_user, extract_token

# SPEC §3, spelled out literally so a change in the code cannot silently move the goalposts.
ALL_SYSTEM = frozenset(
    {
        "organization:read",
        "organization:update",
        "organization:delete",
        "member:read",
        "member:invite",
        "member:update",
        "member:remove",
        "role:read",
        "role:manage",
        "audit:read",
    }
)
ADMIN_PERMS = ALL_SYSTEM - {"organization:delete"}
MEMBER_PERMS = frozenset({"organization:read", "member:read", "role:read"})


def _events(um: UserManagement, action: str | None = None) -> list[AuditEvent]:
    store = um.backends.uow.store
    with store.lock:
        found = sorted(store.audit.values(), key=lambda e: e.id)
    return [e for e in found if action is None or e.action == action]


def _join(um: UserManagement, owner: User, org_id: UUID, roles: list[str] | None = None) -> User:
    """A new verified user who joined ``org_id`` through an invitation with ``roles``."""
    user, _ = create_user(um)
    um.invitations.create(owner.id, org_id, user.email, roles=roles)
    um.invitations.accept(user.id, extract_token(um.outbox.last(to=user.email)))
    return user


@pytest.fixture
def owner(make_user: Any) -> User:
    user, _ = make_user()
    return user


# --- creation ---------------------------------------------------------------------------


def test_create_makes_caller_owner_with_three_system_roles(um: UserManagement, owner: User) -> None:
    org = um.organizations.create(owner.id, "Acme Inc")

    eff = um.organizations.my_permissions(owner.id, org.id)
    assert eff.roles == {"owner"}
    assert eff.permissions == ALL_SYSTEM
    roles = {r.name: r for r in um.roles.list(owner.id, org.id)}
    assert set(roles) == {"owner", "admin", "member"}
    assert all(r.is_system for r in roles.values())
    assert all(r.organization_id == org.id for r in roles.values())
    assert roles["owner"].permissions == ALL_SYSTEM
    assert roles["admin"].permissions == ADMIN_PERMS
    assert roles["member"].permissions == MEMBER_PERMS
    assert len(_events(um, "organization.created")) == 1


def test_system_role_holders_get_exactly_their_permission_sets(
    um: UserManagement, owner: User
) -> None:
    org = um.organizations.create(owner.id, "Acme")
    admin = _join(um, owner, org.id, ["admin"])
    member = _join(um, owner, org.id, ["member"])

    assert um.authz.effective(admin.id, org.id).permissions == ADMIN_PERMS  # type: ignore[union-attr]
    assert um.authz.effective(member.id, org.id).permissions == MEMBER_PERMS  # type: ignore[union-attr]
    assert not um.authz.has_permission(admin.id, org.id, "organization:delete")


def test_registered_permission_held_by_owner_and_admin_at_once_not_member(
    um: UserManagement, owner: User
) -> None:
    org = um.organizations.create(owner.id, "Acme")
    admin = _join(um, owner, org.id, ["admin"])
    member = _join(um, owner, org.id, ["member"])

    um.register_permission("project:read")

    assert um.authz.has_permission(owner.id, org.id, "project:read")
    assert um.authz.has_permission(admin.id, org.id, "project:read")
    assert not um.authz.has_permission(member.id, org.id, "project:read")
    assert "project:read" in {p.name for p in um.roles.catalogue()}
    # the role listing tells the same story as the checks
    roles = {r.name: r for r in um.roles.list(owner.id, org.id)}
    assert roles["owner"].permissions == ALL_SYSTEM | {"project:read"}
    assert roles["admin"].permissions == ADMIN_PERMS | {"project:read"}
    assert roles["member"].permissions == MEMBER_PERMS
    assert "project:read" in um.roles.get(owner.id, org.id, roles["admin"].id).permissions
    # and an org created afterwards stores it from the start
    later = um.organizations.create(owner.id, "Later")
    assert um.organizations.my_permissions(owner.id, later.id).permissions == ALL_SYSTEM | {
        "project:read"
    }


def test_registered_permission_held_at_once_even_with_a_warm_cache(
    um: UserManagement, owner: User
) -> None:
    org = um.organizations.create(owner.id, "Acme")
    admin = _join(um, owner, org.id, ["admin"])
    assert not um.authz.has_permission(owner.id, org.id, "project:read")  # warms the cache
    assert not um.authz.has_permission(admin.id, org.id, "project:read")

    um.register_permission("project:read")

    assert um.authz.has_permission(owner.id, org.id, "project:read")
    assert um.authz.has_permission(admin.id, org.id, "project:read")


def test_created_org_carries_name_and_metadata(um: UserManagement, owner: User) -> None:
    org = um.organizations.create(owner.id, "  Acme  ", metadata={"plan": "pro"})
    fetched = um.organizations.get(owner.id, org.id)
    assert fetched.name == "Acme"
    assert fetched.metadata == {"plan": "pro"}
    assert fetched.created_at.utcoffset() is not None


def test_create_by_unknown_user_is_refused_and_creates_nothing(um: UserManagement) -> None:
    from usermgmt.ids import new_id

    before = um.backends.uow.store.counts()
    with pytest.raises(NotFound):
        um.organizations.create(new_id(), "Ghost Org")
    assert um.backends.uow.store.counts() == before


# --- slugs ------------------------------------------------------------------------------


def test_generated_slug_from_name(um: UserManagement, owner: User) -> None:
    assert um.organizations.create(owner.id, "Acme Inc.").slug == "acme-inc"
    assert um.organizations.create(owner.id, "Ünïcödé Çorp").slug == "unicode-corp"
    assert um.organizations.create(owner.id, "!!!").slug == "org"


def test_generated_slug_collision_gets_a_suffix(um: UserManagement, owner: User) -> None:
    first = um.organizations.create(owner.id, "Acme Inc")
    second = um.organizations.create(owner.id, "Acme Inc")
    third = um.organizations.create(owner.id, "acme inc")
    assert first.slug == "acme-inc"
    assert second.slug.startswith("acme-inc-")
    assert len(second.slug) > len("acme-inc-")
    assert len({first.slug, second.slug, third.slug}) == 3


def test_explicit_duplicate_slug_is_taken_and_creates_nothing(
    um: UserManagement, owner: User
) -> None:
    um.organizations.create(owner.id, "Acme", slug="acme")
    before = um.backends.uow.store.counts()
    with pytest.raises(SlugTaken) as info:
        um.organizations.create(owner.id, "Other", slug="acme")
    assert info.value.code == "slug_taken"
    assert um.backends.uow.store.counts() == before


def test_update_to_a_taken_slug_is_refused(um: UserManagement, owner: User) -> None:
    um.organizations.create(owner.id, "Acme", slug="acme")
    other = um.organizations.create(owner.id, "Other", slug="other")
    with pytest.raises(SlugTaken):
        um.organizations.update(owner.id, other.id, slug="acme")
    assert um.organizations.get(owner.id, other.id).slug == "other"


# --- get / update / delete permission checks ---------------------------------------------


def test_get_requires_membership(um: UserManagement, owner: User, make_user: Any) -> None:
    org = um.organizations.create(owner.id, "Acme")
    member = _join(um, owner, org.id, ["member"])
    outsider, _ = make_user()
    assert um.organizations.get(member.id, org.id).id == org.id
    with pytest.raises(NotFound):
        um.organizations.get(outsider.id, org.id)


def test_update_requires_organization_update(um: UserManagement, owner: User) -> None:
    org = um.organizations.create(owner.id, "Acme")
    admin = _join(um, owner, org.id, ["admin"])
    member = _join(um, owner, org.id, ["member"])

    with pytest.raises(PermissionDenied):
        um.organizations.update(member.id, org.id, name="Hijacked")
    assert um.organizations.get(owner.id, org.id).name == "Acme"

    updated = um.organizations.update(admin.id, org.id, name="Acme 2", metadata={"k": 1})
    assert (updated.name, updated.metadata, updated.slug) == ("Acme 2", {"k": 1}, org.slug)
    assert um.organizations.get(member.id, org.id).name == "Acme 2"
    events = _events(um, "organization.updated")
    assert len(events) == 1
    assert events[0].actor_user_id == admin.id
    assert events[0].metadata["fields"] == ["metadata", "name"]


def test_update_with_no_changes_writes_nothing(um: UserManagement, owner: User) -> None:
    org = um.organizations.create(owner.id, "Acme")
    assert um.organizations.update(owner.id, org.id) == org
    assert _events(um, "organization.updated") == []


def test_delete_requires_organization_delete(um: UserManagement, owner: User) -> None:
    org = um.organizations.create(owner.id, "Acme")
    admin = _join(um, owner, org.id, ["admin"])
    member = _join(um, owner, org.id, ["member"])
    for who in (admin, member):
        with pytest.raises(PermissionDenied):
            um.organizations.delete(who.id, org.id)
    assert um.organizations.get(owner.id, org.id).id == org.id
    assert len(_events(um, "authorization.denied")) == 2


def test_delete_cascades_and_keeps_audit_trail(um: UserManagement, owner: User) -> None:
    org = um.organizations.create(owner.id, "Acme")
    member = _join(um, owner, org.id, ["member"])
    custom = um.roles.create(owner.id, org.id, "Billing", ["organization:read"])
    invitee, _ = create_user(um)
    um.invitations.create(owner.id, org.id, invitee.email, roles=["Billing"])
    token = extract_token(um.outbox.last(to=invitee.email))
    assert um.authz.has_permission(member.id, org.id, "member:read")  # cached before delete
    events_before = len(_events(um))

    um.organizations.delete(owner.id, org.id)

    for who in (owner, member):
        with pytest.raises(NotFound):
            um.organizations.get(who.id, org.id)
        assert not um.authz.has_permission(who.id, org.id, "organization:read")
        assert um.organizations.list_for_user(who.id) == []
    with pytest.raises(OneTimeTokenError):
        um.invitations.accept(invitee.id, token)
    store = um.backends.uow.store
    assert not any(r.organization_id == org.id for r in store.roles.values())
    assert custom.id not in store.roles
    assert not any(m.organization_id == org.id for m in store.memberships.values())
    assert not any(i.organization_id == org.id for i in store.invitations.values())
    # the trail survives, plus exactly one deletion event
    org_events = [e for e in _events(um) if e.organization_id == org.id]
    assert len(_events(um)) == events_before + 1
    assert {"organization.created", "invitation.accepted", "role.created"} <= {
        e.action for e in org_events
    }
    deleted = _events(um, "organization.deleted")
    assert len(deleted) == 1
    assert deleted[0].target_id == str(org.id)
    # the slug is free again
    assert um.organizations.create(owner.id, "Again", slug=org.slug).slug == org.slug


def test_deleted_org_cannot_be_deleted_twice(um: UserManagement, owner: User) -> None:
    org = um.organizations.create(owner.id, "Acme")
    um.organizations.delete(owner.id, org.id)
    with pytest.raises(NotFound):
        um.organizations.delete(owner.id, org.id)
    assert len(_events(um, "organization.deleted")) == 1


# --- listing and my_permissions ---------------------------------------------------------------


def test_list_for_user_shows_own_orgs_with_own_roles(
    um: UserManagement, owner: User, make_user: Any
) -> None:
    a = um.organizations.create(owner.id, "A")
    b = um.organizations.create(owner.id, "B")
    member = _join(um, owner, b.id, ["admin", "member"])
    stranger, _ = make_user()
    um.organizations.create(stranger.id, "C")

    mine = {item.organization.id: item for item in um.organizations.list_for_user(owner.id)}
    assert set(mine) == {a.id, b.id}
    assert {r.name for r in mine[a.id].roles} == {"owner"}

    theirs = um.organizations.list_for_user(member.id)
    assert [item.organization.id for item in theirs] == [b.id]
    assert {r.name for r in theirs[0].roles} == {"admin", "member"}
    assert theirs[0].membership.user_id == member.id


def test_my_permissions_union_of_roles_and_outsider_not_found(
    um: UserManagement, owner: User, make_user: Any
) -> None:
    org = um.organizations.create(owner.id, "Acme")
    um.roles.create(owner.id, org.id, "Auditor", ["audit:read"])
    user = _join(um, owner, org.id, ["member", "Auditor"])
    eff = um.organizations.my_permissions(user.id, org.id)
    assert eff.roles == {"member", "Auditor"}
    assert eff.permissions == MEMBER_PERMS | {"audit:read"}
    assert eff.organization_id == org.id
    assert eff.user_id == user.id
    outsider, _ = make_user()
    with pytest.raises(NotFound):
        um.organizations.my_permissions(outsider.id, org.id)
