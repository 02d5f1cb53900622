"""Roles: custom role CRUD, immutable system roles, role in use, catalogue."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from usermgmt.app import UserManagement
from usermgmt.errors import (
    NotFound,
    PermissionDenied,
    RoleInUse,
    RoleNameTaken,
    SystemRole,
    ValidationError,
)
from usermgmt.models import AuditEvent, Organization, User
from usermgmt.testing import create_user, extract_token


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


def _roles_by_name(um: UserManagement, owner: User, org_id: UUID) -> dict[str, Any]:
    return {r.name: r for r in um.roles.list(owner.id, org_id)}


@pytest.fixture
def owner(make_user: Any) -> User:
    return make_user()[0]


@pytest.fixture
def org(um: UserManagement, owner: User) -> Organization:
    return um.organizations.create(owner.id, "Acme")


# --- CRUD -----------------------------------------------------------------------------------------


def test_custom_role_create_read_update_delete(
    um: UserManagement, owner: User, org: Organization
) -> None:
    role = um.roles.create(
        owner.id, org.id, "Billing", ["organization:read", "audit:read"], "Sees invoices"
    )
    assert (role.name, role.description, role.is_system) == ("Billing", "Sees invoices", False)
    assert role.permissions == {"organization:read", "audit:read"}
    assert um.roles.get(owner.id, org.id, role.id) == role
    assert "Billing" in _roles_by_name(um, owner, org.id)

    updated = um.roles.update(
        owner.id, org.id, role.id, name="Finance", permissions=["member:read"]
    )
    assert (updated.name, updated.permissions, updated.description) == (
        "Finance",
        {"member:read"},
        "Sees invoices",
    )
    assert um.roles.get(owner.id, org.id, role.id).name == "Finance"
    um.roles.update(owner.id, org.id, role.id, description="Money")
    assert um.roles.get(owner.id, org.id, role.id).permissions == {"member:read"}

    um.roles.delete(owner.id, org.id, role.id)
    with pytest.raises(NotFound):
        um.roles.get(owner.id, org.id, role.id)
    assert set(_roles_by_name(um, owner, org.id)) == {"owner", "admin", "member"}
    assert [len(_events(um, a)) for a in ("role.created", "role.updated", "role.deleted")] == [
        1,
        2,
        1,
    ]


def test_role_update_changes_holders_permissions_at_once(
    um: UserManagement, owner: User, org: Organization
) -> None:
    role = um.roles.create(owner.id, org.id, "Reader", ["organization:read"])
    holder = _join(um, owner, org.id, ["Reader"])
    assert not um.authz.has_permission(holder.id, org.id, "audit:read")  # cache warm
    um.roles.update(owner.id, org.id, role.id, permissions=["organization:read", "audit:read"])
    assert um.authz.has_permission(holder.id, org.id, "audit:read")
    um.roles.update(owner.id, org.id, role.id, permissions=[])
    assert um.authz.effective(holder.id, org.id).permissions == frozenset()  # type: ignore[union-attr]


def test_role_management_requires_role_manage(
    um: UserManagement, owner: User, org: Organization
) -> None:
    member = _join(um, owner, org.id)
    role = um.roles.create(owner.id, org.id, "Reader", ["organization:read"])
    assert {r.name for r in um.roles.list(member.id, org.id)} >= {"Reader"}  # role:read
    with pytest.raises(PermissionDenied):
        um.roles.create(member.id, org.id, "Mine", [])
    with pytest.raises(PermissionDenied):
        um.roles.update(member.id, org.id, role.id, name="Hijacked")
    with pytest.raises(PermissionDenied):
        um.roles.delete(member.id, org.id, role.id)
    assert um.roles.get(owner.id, org.id, role.id).name == "Reader"


# --- system roles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["owner", "admin", "member"])
def test_system_roles_are_immutable(
    um: UserManagement, owner: User, org: Organization, name: str
) -> None:
    role = _roles_by_name(um, owner, org.id)[name]
    before = um.roles.get(owner.id, org.id, role.id)
    with pytest.raises(SystemRole) as info:
        um.roles.update(owner.id, org.id, role.id, name="renamed")
    assert info.value.code == "system_role"
    with pytest.raises(SystemRole):
        um.roles.update(owner.id, org.id, role.id, permissions=["organization:read"])
    with pytest.raises(SystemRole):
        um.roles.delete(owner.id, org.id, role.id)
    assert um.roles.get(owner.id, org.id, role.id) == before
    assert _events(um, "role.updated") == _events(um, "role.deleted") == []


# --- in use, names, permissions ----------------------------------------------------------------------


def test_role_in_use_by_member(um: UserManagement, owner: User, org: Organization) -> None:
    role = um.roles.create(owner.id, org.id, "Helper", ["member:read"])
    holder = _join(um, owner, org.id, ["member", "Helper"])
    with pytest.raises(RoleInUse) as info:
        um.roles.delete(owner.id, org.id, role.id)
    assert info.value.code == "role_in_use"
    assert um.roles.get(owner.id, org.id, role.id).id == role.id
    um.members.update_roles(owner.id, org.id, holder.id, ["member"])
    um.roles.delete(owner.id, org.id, role.id)
    with pytest.raises(NotFound):
        um.roles.get(owner.id, org.id, role.id)


def test_role_in_use_by_pending_invitation(
    um: UserManagement, owner: User, org: Organization
) -> None:
    role = um.roles.create(owner.id, org.id, "Helper", ["member:read"])
    invitation = um.invitations.create(owner.id, org.id, "later@example.com", roles=["Helper"])
    with pytest.raises(RoleInUse):
        um.roles.delete(owner.id, org.id, role.id)
    um.invitations.revoke(owner.id, org.id, invitation.id)
    um.roles.delete(owner.id, org.id, role.id)
    assert "Helper" not in _roles_by_name(um, owner, org.id)


def test_role_in_other_org_does_not_block_delete(
    um: UserManagement, owner: User, org: Organization
) -> None:
    other = um.organizations.create(owner.id, "Other")
    mine = um.roles.create(owner.id, org.id, "Helper", ["member:read"])
    um.roles.create(owner.id, other.id, "Helper", ["member:read"])
    _join(um, owner, other.id, ["Helper"])
    um.roles.delete(owner.id, org.id, mine.id)
    assert "Helper" in _roles_by_name(um, owner, other.id)


@pytest.mark.parametrize("name", ["owner", "admin", "member", "Billing"])
def test_role_name_taken(um: UserManagement, owner: User, org: Organization, name: str) -> None:
    um.roles.create(owner.id, org.id, "Billing", [])
    before = um.backends.uow.store.counts()
    with pytest.raises(RoleNameTaken) as info:
        um.roles.create(owner.id, org.id, name, [])
    assert info.value.code == "role_name_taken"
    assert um.backends.uow.store.counts() == before


def test_rename_to_taken_name(um: UserManagement, owner: User, org: Organization) -> None:
    um.roles.create(owner.id, org.id, "Billing", [])
    other = um.roles.create(owner.id, org.id, "Support", [])
    with pytest.raises(RoleNameTaken):
        um.roles.update(owner.id, org.id, other.id, name="Billing")
    with pytest.raises(RoleNameTaken):
        um.roles.update(owner.id, org.id, other.id, name="owner")
    assert um.roles.get(owner.id, org.id, other.id).name == "Support"


def test_same_role_name_allowed_in_two_orgs(
    um: UserManagement, owner: User, org: Organization
) -> None:
    other = um.organizations.create(owner.id, "Other")
    a = um.roles.create(owner.id, org.id, "Billing", [])
    b = um.roles.create(owner.id, other.id, "Billing", [])
    assert a.id != b.id


@pytest.mark.parametrize(
    "permissions",
    [["project:read"], ["organization:read", "nothing:here"], ["Not A Permission"], ["a"]],
)
def test_unknown_permission_is_a_validation_error(
    um: UserManagement, owner: User, org: Organization, permissions: list[str]
) -> None:
    role = um.roles.create(owner.id, org.id, "Existing", ["member:read"])
    before = um.backends.uow.store.counts()
    with pytest.raises(ValidationError):
        um.roles.create(owner.id, org.id, "New", permissions)
    with pytest.raises(ValidationError):
        um.roles.update(owner.id, org.id, role.id, permissions=permissions)
    assert um.backends.uow.store.counts() == before
    assert um.roles.get(owner.id, org.id, role.id).permissions == {"member:read"}


def test_registered_permission_can_be_granted_by_custom_role(
    um: UserManagement, owner: User, org: Organization
) -> None:
    um.register_permission("project:read", "Read projects")
    role = um.roles.create(owner.id, org.id, "Viewer", ["project:read"])
    holder = _join(um, owner, org.id, ["Viewer"])
    assert role.permissions == {"project:read"}
    assert um.authz.has_permission(holder.id, org.id, "project:read")


@pytest.mark.parametrize("name", ["", " leading", "x" * 65, "bad/name", "new\nline", None, 7])
def test_invalid_role_name(um: UserManagement, owner: User, org: Organization, name: Any) -> None:
    before = um.backends.uow.store.counts()
    with pytest.raises(ValidationError):
        um.roles.create(owner.id, org.id, name, [])
    assert um.backends.uow.store.counts() == before


def test_catalogue_includes_system_and_registered_permissions(um: UserManagement) -> None:
    um.register_permission("project:read", "Read projects")
    um.register_permission("project:write")
    catalogue = {p.name: p for p in um.roles.catalogue()}
    assert {
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
        "project:read",
        "project:write",
    } == set(catalogue)
    assert catalogue["organization:delete"].is_system
    assert not catalogue["project:read"].is_system
    assert catalogue["project:read"].description == "Read projects"
    names = [p.name for p in um.roles.catalogue()]
    assert names == sorted(names)


def test_register_malformed_permission_is_refused(um: UserManagement) -> None:
    for bad in ("Project:Read", "project", "project:", ":read", "a:b:c", "pro ject:read"):
        with pytest.raises(ValidationError):
            um.register_permission(bad)
    assert len(um.roles.catalogue()) == 10
