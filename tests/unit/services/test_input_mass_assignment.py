"""SEC-AC-03: update schemas are allowlists; unknown or privileged fields change nothing."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from usermgmt import schemas
from usermgmt.app import UserManagement
from usermgmt.errors import PermissionDenied, ValidationError
from usermgmt.models import Organization, User
from usermgmt.schemas import parse
from usermgmt.testing import create_user


def _snapshot(um: UserManagement) -> dict[str, Any]:
    store = um.backends.uow.store
    with store.lock:
        return copy.deepcopy({k: v for k, v in vars(store).items() if isinstance(v, dict)})


@pytest.fixture
def user(um: UserManagement) -> User:
    return create_user(um, name="Plain")[0]


@pytest.fixture
def org(um: UserManagement, user: User) -> Organization:
    return um.organizations.create(user.id, "Acme", metadata={"plan": "free"})


PRIVILEGED_USER_FIELDS: list[dict[str, Any]] = [
    {"is_superuser": True},
    {"is_verified": True},
    {"is_active": False},
    {"must_reset_password": True},
    {"email": "other@example.com"},
    {"password_hash": "$argon2id$v=19$m=1,t=1,p=1$x$y"},
    {"hashed_password": "x"},
    {"id": "00000000-0000-7000-8000-000000000000"},
    {"created_at": "2020-01-01T00:00:00Z"},
    {"role": "owner"},
    {"org_id": "00000000-0000-7000-8000-000000000000"},
    {"name": "Allowed", "is_superuser": True},  # one bad field spoils the whole update
    {"metadata": {"a": 1}, "email_verified_at": "2020-01-01T00:00:00Z"},
]


@pytest.mark.parametrize("changes", PRIVILEGED_USER_FIELDS)
def test_mass_assignment_update_profile(
    um: UserManagement, user: User, changes: dict[str, Any]
) -> None:
    before = _snapshot(um)
    with pytest.raises(ValidationError) as info:
        um.users.update_profile(user.id, **changes)
    assert info.value.code == "validation_error"
    assert _snapshot(um) == before
    stored = um.users.get(user.id)
    assert (stored.is_superuser, stored.name, stored.email) == (False, "Plain", user.email)


def test_update_profile_allowlisted_fields_work(um: UserManagement, user: User) -> None:
    updated = um.users.update_profile(user.id, name="New Name", metadata={"theme": "dark"})
    assert (updated.name, updated.metadata) == ("New Name", {"theme": "dark"})
    assert not updated.is_superuser
    assert updated.is_verified


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "00000000-0000-7000-8000-000000000000"},
        {"created_at": "2020-01-01T00:00:00Z"},
        {"owner_id": "x"},
        {"is_system": True},
        {"name": "Fine", "org_id": "00000000-0000-7000-8000-000000000000"},
        {"slug": "fine", "members": []},
    ],
)
def test_mass_assignment_organization_update(
    um: UserManagement, user: User, org: Organization, changes: dict[str, Any]
) -> None:
    before = _snapshot(um)
    with pytest.raises(ValidationError):
        um.organizations.update(user.id, org.id, **changes)
    assert _snapshot(um) == before
    assert um.organizations.get(user.id, org.id) == org


def test_admin_api_refuses_non_superusers(um: UserManagement, user: User) -> None:
    victim, _ = create_user(um)
    before = _snapshot(um)
    with pytest.raises(PermissionDenied):
        um.admin.update_user(user.id, user.id, is_superuser=True)
    with pytest.raises(PermissionDenied):
        um.admin.update_user(user.id, victim.id, is_active=False)
    with pytest.raises(PermissionDenied):
        um.admin.list_users(user.id)
    assert _snapshot(um) == before
    assert not um.users.get(user.id).is_superuser


@pytest.mark.parametrize(
    ("model", "valid"),
    [
        (schemas.RegisterIn, {"email": "a@example.com", "password": "x" * 20}),
        (schemas.ProfileUpdateIn, {"name": "A"}),
        (schemas.OrganizationCreateIn, {"name": "Acme"}),
        (schemas.OrganizationUpdateIn, {"name": "Acme"}),
        (schemas.InvitationCreateIn, {"email": "a@example.com"}),
        (schemas.MemberRolesIn, {"roles": ["member"]}),
        (schemas.TokenIn, {"token": "t" * 43}),
        (schemas.RoleCreateIn, {"name": "Billing"}),
        (schemas.RoleUpdateIn, {"name": "Billing"}),
        (schemas.ChangePasswordIn, {"current_password": "a", "new_password": "b"}),
    ],
)
@pytest.mark.parametrize(
    "extra",
    [
        {"is_superuser": True},
        {"is_verified": True},
        {"role": "owner"},
        {"org_id": "x"},
        {"organization_id": "x"},
        {"hashed_password": "x"},
        {"password_hash": "x"},
    ],
)
def test_request_schemas_are_allowlists(
    model: type[Any], valid: dict[str, Any], extra: dict[str, Any]
) -> None:
    parse(model, valid)  # the valid body alone is accepted
    with pytest.raises(ValidationError) as info:
        parse(model, {**valid, **extra})
    # the error names the field but never echoes the value
    assert next(iter(extra)) in str(info.value.to_dict())
    assert "x" * 20 not in str(info.value.to_dict())
