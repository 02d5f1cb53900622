"""SEC-AC-02: a generated cross-tenant matrix over every org-scoped service method.

Orgs A and B each have an owner, a member, a custom role and a pending invitation.
A's owner calls every method that takes an ``organization_id`` with B's organization
id, and with A's organization id but B's resource ids. Each call must raise NotFound
and change nothing anywhere (not even an audit row). The list of methods is found by
introspection, so a new org-scoped method fails this test until it is covered.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest

from usermgmt.app import UserManagement
from usermgmt.errors import NotFound, ValidationError
from usermgmt.models import User
from usermgmt.testing import create_user, extract_token, make_um

SERVICES = ("organizations", "members", "invitations", "roles", "audit", "authz")
# internal helpers of the authorization service that take no user input
NOT_ENDPOINTS = {("authz", "compute"), ("authz", "invalidate")}
# answer "no" instead of raising: checked separately below
PREDICATES = {("authz", "effective"), ("authz", "has_permission")}
# every method the issue names; introspection must find at least these
REQUIRED = {
    ("organizations", "get"),
    ("organizations", "update"),
    ("organizations", "delete"),
    ("organizations", "my_permissions"),
    ("members", "list"),
    ("members", "get"),
    ("members", "update_roles"),
    ("members", "remove"),
    ("invitations", "create"),
    ("invitations", "list"),
    ("invitations", "revoke"),
    ("roles", "list"),
    ("roles", "get"),
    ("roles", "create"),
    ("roles", "update"),
    ("roles", "delete"),
    ("audit", "list"),
    ("authz", "require"),
}


@dataclass
class Tenant:
    org_id: UUID
    owner: User
    member: User
    role_id: UUID
    invitation_id: UUID


@dataclass
class World:
    um: UserManagement
    a: Tenant
    b: Tenant


def _tenant(um: UserManagement, name: str) -> Tenant:
    owner, _ = create_user(um, name=f"{name} owner")
    member, _ = create_user(um, name=f"{name} member")
    org = um.organizations.create(owner.id, f"Org {name}")
    role = um.roles.create(owner.id, org.id, "Custom", ["member:read"])
    um.invitations.create(owner.id, org.id, member.email, roles=["member"])
    um.invitations.accept(member.id, extract_token(um.outbox.last(to=member.email)))
    pending = um.invitations.create(owner.id, org.id, f"pending-{name}@example.com")
    return Tenant(org.id, owner, member, role.id, pending.id)


@pytest.fixture(scope="module")
def world() -> World:
    um = make_um()
    return World(um, _tenant(um, "a"), _tenant(um, "b"))


def _snapshot(um: UserManagement) -> dict[str, Any]:
    store = um.backends.uow.store
    with store.lock:
        return copy.deepcopy({k: v for k, v in vars(store).items() if isinstance(v, dict)})


def _org_scoped_methods(um: UserManagement) -> list[tuple[str, str]]:
    found = []
    for service in SERVICES:
        obj = getattr(um, service)
        for name, fn in inspect.getmembers(obj, inspect.ismethod):
            if name.startswith("_") or (service, name) in NOT_ENDPOINTS:
                continue
            if "organization_id" in inspect.signature(fn).parameters:
                found.append((service, name))
    return sorted(found)


def _call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call ``fn`` with ``kwargs``, passing positional-only parameters by position."""
    positional = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.POSITIONAL_ONLY and p.name in kwargs
    ]
    rest = {k: v for k, v in kwargs.items() if k not in positional}
    return fn(*(kwargs[name] for name in positional), **rest)


def _arguments(fn: Callable[..., Any], actor: UUID, org_id: UUID, victim: Tenant) -> dict[str, Any]:
    """Keyword arguments for ``fn``: ``actor`` acts, ``org_id`` is the organization,
    every other id is one of ``victim``'s resources, and the rest are valid values."""
    params = list(inspect.signature(fn).parameters.values())
    values: dict[str, Any] = {}
    for index, p in enumerate(params):
        if p.kind is p.VAR_KEYWORD:  # organizations.update(**changes): a real change
            values.setdefault("name", "Renamed")
            continue
        if p.kind is p.VAR_POSITIONAL or p.name == "changes":
            continue
        if index == 0:  # the acting user, whatever the parameter is called
            values[p.name] = actor
        elif p.name == "organization_id":
            values[p.name] = org_id
        elif p.name == "user_id":
            values[p.name] = victim.member.id
        elif p.name == "role_id":
            values[p.name] = victim.role_id
        elif p.name == "invitation_id":
            values[p.name] = victim.invitation_id
        elif p.name == "roles":
            values[p.name] = ["member"]
        elif p.name == "name":
            values[p.name] = "Renamed"
        elif p.name == "email":
            values[p.name] = "someone-new@example.com"
        elif p.name == "permission":
            values[p.name] = "member:read"
        elif p.name == "permissions":
            values[p.name] = ["member:read"]
        elif p.default is inspect.Parameter.empty:
            raise AssertionError(f"no test value for required parameter {p.name!r} of {fn}")
    return values


def _cases(world: World) -> list[tuple[str, Callable[[], Any]]]:
    um, a, b = world.um, world.a, world.b
    cases: list[tuple[str, Callable[[], Any]]] = []
    for service, name in _org_scoped_methods(um):
        if (service, name) in PREDICATES:
            continue
        fn = getattr(getattr(um, service), name)
        kwargs = _arguments(fn, a.owner.id, b.org_id, b)
        cases.append((f"{service}.{name}[B org]", lambda fn=fn, kw=kwargs: _call(fn, kw)))
        resource_params = {"user_id", "role_id", "invitation_id"} & set(
            list(inspect.signature(fn).parameters)[1:]
        )
        if resource_params:
            kwargs = _arguments(fn, a.owner.id, a.org_id, b)
            cases.append(
                (f"{service}.{name}[A org, B ids]", lambda fn=fn, kw=kwargs: _call(fn, kw))
            )
            if "user_id" in resource_params:  # B's owner is as foreign as B's member
                kwargs = {**kwargs, "user_id": b.owner.id}
                cases.append(
                    (f"{service}.{name}[A org, B owner]", lambda fn=fn, kw=kwargs: _call(fn, kw))
                )
    return cases


def test_matrix_covers_every_org_scoped_method(world: World) -> None:
    found = set(_org_scoped_methods(world.um))
    assert found >= REQUIRED, REQUIRED - found
    covered = {tuple(label.split("[")[0].split(".")) for label, _ in _cases(world)}
    assert covered | PREDICATES == found


def test_cross_tenant_matrix(world: World) -> None:
    um = world.um
    cases = _cases(world)
    assert len(cases) >= 25
    before = _snapshot(um)
    leaked: list[str] = []
    for label, call in cases:
        try:
            result = call()
        except NotFound:
            continue
        except Exception as exc:
            leaked.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            leaked.append(f"{label}: returned {result!r:.200}")
    assert leaked == []
    assert _snapshot(um) == before  # nothing changed, not even an audit row


def test_cross_tenant_predicates_answer_no(world: World) -> None:
    um, a, b = world.um, world.a, world.b
    assert um.authz.effective(a.owner.id, b.org_id) is None
    assert not um.authz.has_permission(a.owner.id, b.org_id, "organization:read")
    assert um.authz.effective(b.member.id, a.org_id) is None


def test_the_matrix_actor_is_not_simply_powerless(world: World) -> None:
    """The same calls against A's own resources succeed, so NotFound above means isolation."""
    um, a = world.um, world.a
    assert um.organizations.get(a.owner.id, a.org_id).id == a.org_id
    assert um.members.get(a.owner.id, a.org_id, a.member.id).user.id == a.member.id
    assert um.roles.get(a.owner.id, a.org_id, a.role_id).id == a.role_id
    assert {i.id for i in um.invitations.list(a.owner.id, a.org_id).items} >= {a.invitation_id}


def test_lists_in_a_never_contain_b_data(world: World) -> None:
    um, a, b = world.um, world.a, world.b
    members = {m.user.id for m in um.members.list(a.owner.id, a.org_id, limit=200).items}
    assert members == {a.owner.id, a.member.id}
    roles = um.roles.list(a.owner.id, a.org_id)
    assert all(r.organization_id == a.org_id for r in roles)
    assert b.role_id not in {r.id for r in roles}
    invitations = um.invitations.list(a.owner.id, a.org_id, limit=200).items
    assert all(i.organization_id == a.org_id for i in invitations)
    events = um.audit.list(a.owner.id, a.org_id, limit=200).items
    assert events
    assert all(e.organization_id == a.org_id for e in events)
    # filtering A's trail by B's owner finds nothing of B
    assert um.audit.list(a.owner.id, a.org_id, actor_filter=b.owner.id).items == []
    assert [o.organization.id for o in um.organizations.list_for_user(a.owner.id)] == [a.org_id]


def test_b_role_ids_are_unknown_roles_in_a(world: World) -> None:
    """B's role id given as a role *value* in A is an unknown role: a validation error."""
    um, a, b = world.um, world.a, world.b
    before = _snapshot(um)
    with pytest.raises(ValidationError):
        um.members.update_roles(a.owner.id, a.org_id, a.member.id, [str(b.role_id)])
    with pytest.raises(ValidationError):
        um.invitations.create(a.owner.id, a.org_id, "new@example.com", roles=[str(b.role_id)])
    b_admin = next(r for r in um.roles.list(b.owner.id, b.org_id) if r.name == "admin")
    with pytest.raises(ValidationError):
        um.members.update_roles(a.owner.id, a.org_id, a.member.id, [str(b_admin.id)])
    assert _snapshot(um) == before


def test_member_of_both_orgs_cannot_cross_with_their_other_role() -> None:
    """A's owner is made admin of B: acting in B on A's resources is still NotFound."""
    probe = make_um()
    pa, pb = _tenant(probe, "pa"), _tenant(probe, "pb")
    probe.invitations.create(pb.owner.id, pb.org_id, pa.owner.email, roles=["admin"])
    probe.invitations.accept(pa.owner.id, extract_token(probe.outbox.last(to=pa.owner.email)))
    before = _snapshot(probe)
    for call in (
        lambda: probe.roles.delete(pa.owner.id, pb.org_id, pa.role_id),
        lambda: probe.roles.update(pa.owner.id, pb.org_id, pa.role_id, name="x"),
        lambda: probe.invitations.revoke(pa.owner.id, pb.org_id, pa.invitation_id),
        lambda: probe.members.remove(pa.owner.id, pb.org_id, pa.member.id),
        lambda: probe.members.update_roles(pa.owner.id, pb.org_id, pa.member.id, ["member"]),
    ):
        with pytest.raises(NotFound):
            call()
    assert _snapshot(probe) == before
