"""Bad input anywhere in the core raises a typed error with a stable code and changes nothing.

Hypothesis feeds text, integers, None and huge strings to the public entry points.
Any exception must be a UserMgmtError (never TypeError, AttributeError, KeyError...),
and a rejected call must leave every table but the audit trail as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usermgmt.app import UserManagement
from usermgmt.errors import UserMgmtError
from usermgmt.models import User
from usermgmt.testing import create_user, make_um

FUZZ = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

huge = st.sampled_from(["x" * 5000, "é" * 3000, "a@" + "b" * 300 + ".com", "\x00" * 100])
junk = st.one_of(
    st.text(max_size=60),
    st.integers(),
    st.none(),
    huge,
    st.text(alphabet="\r\n\t\x00\u2028 {}\"'<>;:@.-_", max_size=30),
    st.booleans(),
    st.floats(allow_nan=True),
)
junk_list = st.one_of(junk, st.lists(junk, max_size=4))
junk_dict = st.one_of(junk, st.dictionaries(st.text(max_size=8), junk, max_size=3))


@dataclass
class World:
    um: UserManagement
    owner: User
    org_id: UUID


@pytest.fixture(scope="module")
def world() -> World:
    um = make_um()
    owner, _ = create_user(um, "fuzz-owner@example.com")
    org = um.organizations.create(owner.id, "Fuzz Org")
    return World(um, owner, org.id)


def _tables(um: UserManagement) -> dict[str, int]:
    counts = dict(um.backends.uow.store.counts())
    counts.pop("audit")  # failed logins and denials are rightly audited
    return counts


def _call(world: World, fn: Callable[[], Any]) -> None:
    """Run ``fn``: success, or a UserMgmtError that changed nothing."""
    before = _tables(world.um)
    error: UserMgmtError | None = None
    try:
        fn()
    except UserMgmtError as exc:
        error = exc
    if error is None:
        return
    assert isinstance(error.code, str)
    assert error.code
    assert error.to_dict()["code"] == error.code
    assert _tables(world.um) == before, f"{type(error).__name__} changed the store"


@FUZZ
@given(email=junk, password=junk, name=junk)
def test_fuzz_register(world: World, email: Any, password: Any, name: Any) -> None:
    _call(world, lambda: world.um.users.register(email, password, name=name))


@FUZZ
@given(email=junk, password=junk)
def test_fuzz_login(world: World, email: Any, password: Any) -> None:
    _call(world, lambda: world.um.auth.login(email, password))


@FUZZ
@given(email=junk, token=junk, password=junk)
def test_fuzz_forgot_reset_verify(world: World, email: Any, token: Any, password: Any) -> None:
    _call(world, lambda: world.um.users.request_password_reset(email))
    _call(world, lambda: world.um.users.reset_password(token, password))
    _call(world, lambda: world.um.users.verify_email(token))
    _call(world, lambda: world.um.auth.refresh(token))
    _call(world, lambda: world.um.invitations.accept(world.owner.id, token))


@FUZZ
@given(name=junk, slug=junk, metadata=junk_dict)
def test_fuzz_organization_create_update(world: World, name: Any, slug: Any, metadata: Any) -> None:
    um = world.um
    _call(
        world, lambda: um.organizations.create(world.owner.id, name, slug=slug, metadata=metadata)
    )
    _call(world, lambda: um.organizations.create(world.owner.id, name))
    _call(
        world,
        lambda: um.organizations.update(
            world.owner.id, world.org_id, name=name, slug=slug, metadata=metadata
        ),
    )
    _call(world, lambda: um.users.update_profile(world.owner.id, name=name, metadata=metadata))


@FUZZ
@given(email=junk, roles=junk_list)
def test_fuzz_invitation_create(world: World, email: Any, roles: Any) -> None:
    um = world.um
    _call(world, lambda: um.invitations.create(world.owner.id, world.org_id, email, roles=roles))
    _call(
        world, lambda: um.members.update_roles(world.owner.id, world.org_id, world.owner.id, roles)
    )


@FUZZ
@given(name=junk, permissions=junk_list, description=junk)
def test_fuzz_role_create(world: World, name: Any, permissions: Any, description: Any) -> None:
    um = world.um
    _call(
        world,
        lambda: um.roles.create(world.owner.id, world.org_id, name, permissions, description),
    )


@FUZZ
@given(action=junk, actor=junk, since=junk, until=junk, limit=junk, cursor=junk)
def test_fuzz_audit_list(
    world: World, action: Any, actor: Any, since: Any, until: Any, limit: Any, cursor: Any
) -> None:
    _call(
        world,
        lambda: world.um.audit.list(
            world.owner.id,
            world.org_id,
            action=action,
            actor_filter=actor,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        ),
    )


@FUZZ
@given(actor=junk, org=junk, target=junk)
def test_fuzz_ids(world: World, actor: Any, org: Any, target: Any) -> None:
    """Ids that are not UUIDs (an adapter passing a path segment through) are typed errors."""
    um = world.um
    _call(world, lambda: um.organizations.get(actor, org))
    _call(world, lambda: um.organizations.get(world.owner.id, org))
    _call(world, lambda: um.organizations.create(actor, "Fuzzed"))
    _call(world, lambda: um.members.get(world.owner.id, world.org_id, target))
    _call(world, lambda: um.members.remove(world.owner.id, world.org_id, target))
    _call(world, lambda: um.roles.get(world.owner.id, world.org_id, target))
    _call(world, lambda: um.roles.delete(world.owner.id, world.org_id, target))
    _call(world, lambda: um.invitations.revoke(world.owner.id, world.org_id, target))
    _call(world, lambda: um.authz.has_permission(actor, org, "organization:read"))
    _call(world, lambda: um.users.get(actor))


def test_fuzz_world_survived(world: World) -> None:
    """The fixture org and owner are intact after the fuzzing above."""
    eff = world.um.organizations.my_permissions(world.owner.id, world.org_id)
    assert "owner" in eff.roles
