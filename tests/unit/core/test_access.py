"""``Access``: the effective permissions of a permission check, with the caller."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from usermgmt.models import _ACCESS_FIELDS, Access, EffectivePermissions, User


def _user() -> User:
    now = datetime.now(UTC)
    return User(id=uuid4(), email="ada@example.com", created_at=now, updated_at=now)


def test_of_builds_what_the_dataclass_constructor_builds():
    user = _user()
    effective = EffectivePermissions(
        organization_id=uuid4(),
        user_id=user.id,
        permissions=frozenset({"project:read"}),
        roles=frozenset({"member"}),
    )

    access = Access.of(effective, user)

    assert tuple(f.name for f in dataclasses.fields(Access)) == _ACCESS_FIELDS
    assert access == Access(
        organization_id=effective.organization_id,
        user_id=user.id,
        permissions=effective.permissions,
        roles=effective.roles,
        user=user,
    )
    assert isinstance(access, EffectivePermissions)
    with pytest.raises(dataclasses.FrozenInstanceError):
        access.user = _user()  # type: ignore[misc]


def test_of_refuses_another_users_permissions():
    effective = EffectivePermissions(
        organization_id=uuid4(), user_id=uuid4(), permissions=frozenset(), roles=frozenset()
    )
    with pytest.raises(ValueError, match="not this user"):
        Access.of(effective, _user())


def test_of_builds_an_instance_of_a_subclass_with_its_own_fields():
    @dataclasses.dataclass(frozen=True, slots=True)
    class Tagged(Access):
        tag: str = "default"

    user = _user()
    effective = EffectivePermissions(
        organization_id=uuid4(), user_id=user.id, permissions=frozenset(), roles=frozenset()
    )
    access = Tagged.of(effective, user)
    assert type(access) is Tagged
    assert access.tag == "default"
    assert access.user is user
    assert type(Access.of(effective, user)) is Access
