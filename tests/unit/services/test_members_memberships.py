"""Memberships: role changes, removal, leaving, last-owner protection, escalation, races (R2)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest

from usermgmt.app import UserManagement
from usermgmt.errors import (
    LastOwner,
    NotFound,
    PermissionDenied,
    UserMgmtError,
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
    _invite_and_accept(um, inviter, org_id, user, roles)
    return user


def _invite_and_accept(
    um: UserManagement, inviter: User, org_id: UUID, user: User, roles: list[str] | None
) -> None:
    um.invitations.create(inviter.id, org_id, user.email, roles=roles)
    um.invitations.accept(user.id, extract_token(um.outbox.last(to=user.email)))


def _roles(um: UserManagement, org_id: UUID, user_id: UUID) -> set[str] | None:
    eff = um.authz.effective(user_id, org_id)
    return None if eff is None else set(eff.roles)


def _owner_count(um: UserManagement, org_id: UUID) -> int:
    store = um.backends.uow.store
    with store.lock:
        owner_role = next(
            r for r in store.roles.values() if r.organization_id == org_id and r.name == "owner"
        )
        return sum(
            1
            for m in store.memberships.values()
            if m.organization_id == org_id and owner_role.id in m.role_ids
        )


def _membership_snapshot(um: UserManagement, org_id: UUID) -> dict[UUID, Any]:
    store = um.backends.uow.store
    with store.lock:
        return {m.user_id: m for m in store.memberships.values() if m.organization_id == org_id}


@pytest.fixture
def owner(make_user: Any) -> User:
    return make_user()[0]


@pytest.fixture
def org(um: UserManagement, owner: User) -> Organization:
    return um.organizations.create(owner.id, "Acme")


# --- update_roles ---------------------------------------------------------------------------


def test_update_roles_by_name(um: UserManagement, owner: User, org: Organization) -> None:
    user = _join(um, owner, org.id)
    assert um.authz.has_permission(user.id, org.id, "member:read")  # cache warm
    assert not um.authz.has_permission(user.id, org.id, "member:invite")

    view = um.members.update_roles(owner.id, org.id, user.id, ["admin"])

    assert {r.name for r in view.roles} == {"admin"}
    assert um.authz.has_permission(user.id, org.id, "member:invite")
    assert um.members.get(owner.id, org.id, user.id).membership.version == 2
    events = _events(um, "member.roles_updated")
    assert len(events) == 1
    assert events[0].target_id == str(user.id)
    assert events[0].metadata["roles"] == ["admin"]


def test_update_roles_by_id_and_mixed(um: UserManagement, owner: User, org: Organization) -> None:
    user = _join(um, owner, org.id)
    roles = {r.name: r for r in um.roles.list(owner.id, org.id)}
    custom = um.roles.create(owner.id, org.id, "Auditor", ["audit:read"])

    um.members.update_roles(owner.id, org.id, user.id, [str(roles["admin"].id)])
    assert _roles(um, org.id, user.id) == {"admin"}
    um.members.update_roles(owner.id, org.id, user.id, ["member", str(custom.id)])
    assert _roles(um, org.id, user.id) == {"member", "Auditor"}
    assert um.authz.has_permission(user.id, org.id, "audit:read")


def test_update_roles_same_roles_writes_no_event(
    um: UserManagement, owner: User, org: Organization
) -> None:
    user = _join(um, owner, org.id)
    um.members.update_roles(owner.id, org.id, user.id, ["member"])
    assert _events(um, "member.roles_updated") == []


@pytest.mark.parametrize(
    "roles",
    [["nope"], ["admin", "nope"], ["00000000-0000-7000-8000-000000000000"], []],
)
def test_update_roles_unknown_role_changes_nothing(
    um: UserManagement, owner: User, org: Organization, roles: list[str]
) -> None:
    user = _join(um, owner, org.id)
    before = _membership_snapshot(um, org.id)
    events = len(_events(um))
    with pytest.raises(ValidationError) as info:
        um.members.update_roles(owner.id, org.id, user.id, roles)
    assert info.value.code == "validation_error"
    assert _membership_snapshot(um, org.id) == before
    assert len(_events(um)) == events
    assert _roles(um, org.id, user.id) == {"member"}


def test_update_roles_of_another_orgs_role_id_is_unknown(
    um: UserManagement, owner: User, org: Organization
) -> None:
    other = um.organizations.create(owner.id, "Other")
    other_admin = next(r for r in um.roles.list(owner.id, other.id) if r.name == "admin")
    user = _join(um, owner, org.id)
    with pytest.raises(ValidationError):
        um.members.update_roles(owner.id, org.id, user.id, [str(other_admin.id)])
    assert _roles(um, org.id, user.id) == {"member"}


def test_update_roles_requires_member_update(
    um: UserManagement, owner: User, org: Organization
) -> None:
    member = _join(um, owner, org.id)
    target = _join(um, owner, org.id)
    with pytest.raises(PermissionDenied):
        um.members.update_roles(member.id, org.id, target.id, ["admin"])
    assert _roles(um, org.id, target.id) == {"member"}
    with pytest.raises(PermissionDenied):  # nor for themselves
        um.members.update_roles(member.id, org.id, member.id, ["admin"])
    assert _roles(um, org.id, member.id) == {"member"}


def test_update_roles_of_non_member_is_not_found(
    um: UserManagement, owner: User, org: Organization, make_user: Any
) -> None:
    stranger, _ = make_user()
    with pytest.raises(NotFound):
        um.members.update_roles(owner.id, org.id, stranger.id, ["member"])
    assert um.authz.effective(stranger.id, org.id) is None


# --- remove and leave ------------------------------------------------------------------------


def test_remove_member(um: UserManagement, owner: User, org: Organization) -> None:
    user = _join(um, owner, org.id, ["admin"])
    assert um.authz.has_permission(user.id, org.id, "member:read")
    um.members.remove(owner.id, org.id, user.id)
    assert um.authz.effective(user.id, org.id) is None
    with pytest.raises(NotFound):
        um.organizations.get(user.id, org.id)
    with pytest.raises(NotFound):
        um.members.get(owner.id, org.id, user.id)
    events = _events(um, "member.removed")
    assert len(events) == 1
    assert (events[0].actor_user_id, events[0].target_id) == (owner.id, str(user.id))


def test_remove_requires_member_remove(um: UserManagement, owner: User, org: Organization) -> None:
    member = _join(um, owner, org.id)
    other = _join(um, owner, org.id)
    with pytest.raises(PermissionDenied):
        um.members.remove(member.id, org.id, other.id)
    assert _roles(um, org.id, other.id) == {"member"}


def test_remove_unknown_member_is_not_found(
    um: UserManagement, owner: User, org: Organization, make_user: Any
) -> None:
    stranger, _ = make_user()
    with pytest.raises(NotFound):
        um.members.remove(owner.id, org.id, stranger.id)
    assert _events(um, "member.removed") == []


def test_leave(um: UserManagement, owner: User, org: Organization, make_user: Any) -> None:
    user = _join(um, owner, org.id, ["admin"])
    assert um.authz.has_permission(user.id, org.id, "member:read")
    um.members.leave(user.id, org.id)
    assert um.authz.effective(user.id, org.id) is None
    assert um.organizations.list_for_user(user.id) == []
    events = _events(um, "member.left")
    assert len(events) == 1
    assert (events[0].actor_user_id, events[0].target_id) == (user.id, str(user.id))
    with pytest.raises(NotFound):  # not a member any more
        um.members.leave(user.id, org.id)
    stranger, _ = make_user()
    with pytest.raises(NotFound):
        um.members.leave(stranger.id, org.id)


# --- last owner -----------------------------------------------------------------------------


def test_sole_owner_cannot_demote_self(um: UserManagement, owner: User, org: Organization) -> None:
    with pytest.raises(LastOwner) as info:
        um.members.update_roles(owner.id, org.id, owner.id, ["admin"])
    assert info.value.code == "last_owner"
    assert _roles(um, org.id, owner.id) == {"owner"}


def test_sole_owner_cannot_leave_or_remove_self(
    um: UserManagement, owner: User, org: Organization
) -> None:
    with pytest.raises(LastOwner):
        um.members.leave(owner.id, org.id)
    with pytest.raises(LastOwner):
        um.members.remove(owner.id, org.id, owner.id)
    assert _roles(um, org.id, owner.id) == {"owner"}
    assert _events(um, "member.left") == _events(um, "member.removed") == []


def test_owner_can_step_down_when_another_owner_exists(
    um: UserManagement, owner: User, org: Organization
) -> None:
    second = _join(um, owner, org.id, ["owner"])
    um.members.update_roles(owner.id, org.id, owner.id, ["admin"])
    assert _roles(um, org.id, owner.id) == {"admin"}
    with pytest.raises(LastOwner):  # now second is the last owner
        um.members.leave(second.id, org.id)
    with pytest.raises(LastOwner):
        um.members.update_roles(second.id, org.id, second.id, ["member"])
    assert _owner_count(um, org.id) == 1


def test_keeping_owner_while_adding_roles_is_allowed(
    um: UserManagement, owner: User, org: Organization
) -> None:
    um.members.update_roles(owner.id, org.id, owner.id, ["owner", "admin"])
    assert _roles(um, org.id, owner.id) == {"owner", "admin"}


# --- privilege escalation ---------------------------------------------------------------------


def test_admin_cannot_grant_owner(um: UserManagement, owner: User, org: Organization) -> None:
    admin = _join(um, owner, org.id, ["admin"])
    member = _join(um, owner, org.id)
    for target in (member, admin):
        with pytest.raises(PermissionDenied):
            um.members.update_roles(admin.id, org.id, target.id, ["owner"])
        with pytest.raises(PermissionDenied):
            um.members.update_roles(admin.id, org.id, target.id, ["admin", "owner"])
    assert _roles(um, org.id, member.id) == {"member"}
    assert _roles(um, org.id, admin.id) == {"admin"}
    with pytest.raises(PermissionDenied):
        um.invitations.create(admin.id, org.id, "newcomer@example.com", roles=["owner"])
    invited = {i.email for i in um.invitations.list(owner.id, org.id).items}
    assert "newcomer@example.com" not in invited


def test_admin_cannot_remove_owner_role_or_owner(
    um: UserManagement, owner: User, org: Organization
) -> None:
    second_owner = _join(um, owner, org.id, ["owner"])
    admin = _join(um, owner, org.id, ["admin"])
    with pytest.raises(PermissionDenied):
        um.members.update_roles(admin.id, org.id, second_owner.id, ["member"])
    with pytest.raises(PermissionDenied):
        um.members.remove(admin.id, org.id, second_owner.id)
    assert _roles(um, org.id, second_owner.id) == {"owner"}
    assert _owner_count(um, org.id) == 2


def test_admin_can_manage_members_within_own_permissions(
    um: UserManagement, owner: User, org: Organization
) -> None:
    admin = _join(um, owner, org.id, ["admin"])
    member = _join(um, owner, org.id)
    um.members.update_roles(admin.id, org.id, member.id, ["admin"])
    assert _roles(um, org.id, member.id) == {"admin"}
    um.members.remove(admin.id, org.id, member.id)
    assert um.authz.effective(member.id, org.id) is None


def test_admin_cannot_create_role_with_permission_they_lack(
    um: UserManagement, owner: User, org: Organization
) -> None:
    admin = _join(um, owner, org.id, ["admin"])
    with pytest.raises(PermissionDenied):
        um.roles.create(admin.id, org.id, "Destroyer", ["organization:delete"])
    assert "Destroyer" not in {r.name for r in um.roles.list(owner.id, org.id)}
    assert _events(um, "role.created") == []


def test_admin_cannot_touch_role_holding_permissions_they_lack(
    um: UserManagement, owner: User, org: Organization
) -> None:
    admin = _join(um, owner, org.id, ["admin"])
    strong = um.roles.create(owner.id, org.id, "Strong", ["organization:delete", "member:read"])
    holder = _join(um, owner, org.id, ["Strong"])
    with pytest.raises(PermissionDenied):
        um.roles.update(admin.id, org.id, strong.id, permissions=["member:read"])
    with pytest.raises(PermissionDenied):
        um.roles.update(admin.id, org.id, strong.id, name="Weak")
    with pytest.raises(PermissionDenied):
        um.roles.delete(admin.id, org.id, strong.id)
    with pytest.raises(PermissionDenied):  # nor take it away from someone
        um.members.update_roles(admin.id, org.id, holder.id, ["member"])
    with pytest.raises(PermissionDenied):  # nor remove its holder
        um.members.remove(admin.id, org.id, holder.id)
    weak = um.roles.create(admin.id, org.id, "Weak", ["member:read"])
    with pytest.raises(PermissionDenied):  # nor add permissions they lack to a weaker role
        um.roles.update(admin.id, org.id, weak.id, permissions=["organization:delete"])
    assert um.roles.get(owner.id, org.id, strong.id).permissions == {
        "organization:delete",
        "member:read",
    }
    assert um.roles.get(owner.id, org.id, weak.id).permissions == {"member:read"}
    assert _roles(um, org.id, holder.id) == {"Strong"}


# --- R2: concurrent last-owner races ------------------------------------------------------------


def _run_together(calls: list[Callable[[], object]]) -> list[BaseException | None]:
    """Run the calls in threads released together by a Barrier; each one's exception or None."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[BaseException | None] = [None] * len(calls)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            calls[i]()
        except BaseException as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return outcomes


@pytest.fixture
def three_users(um: UserManagement) -> list[User]:
    return [create_user(um)[0] for _ in range(3)]


def _org_with_owners(um: UserManagement, owners: list[User]) -> Organization:
    org = um.organizations.create(owners[0].id, "Race")
    for user in owners[1:]:
        _invite_and_accept(um, owners[0], org.id, user, ["owner"])
    return org


def test_two_owners_remove_each_other_concurrently(
    um: UserManagement, three_users: list[User]
) -> None:
    a, b = three_users[:2]
    for _ in range(25):
        org = _org_with_owners(um, [a, b])
        outcomes = _run_together(
            [
                lambda org=org: um.members.remove(a.id, org.id, b.id),
                lambda org=org: um.members.remove(b.id, org.id, a.id),
            ]
        )
        failures = [o for o in outcomes if o is not None]
        assert len(failures) == 1, outcomes
        assert isinstance(failures[0], UserMgmtError), failures[0]
        assert isinstance(failures[0], NotFound | LastOwner), failures[0]
        assert _owner_count(um, org.id) == 1
        assert len(_membership_snapshot(um, org.id)) == 1
        removed = [e for e in _events(um, "member.removed") if e.organization_id == org.id]
        assert len(removed) == 1


def test_two_owners_leave_concurrently(um: UserManagement, three_users: list[User]) -> None:
    a, b = three_users[:2]
    for _ in range(25):
        org = _org_with_owners(um, [a, b])
        outcomes = _run_together(
            [
                lambda org=org: um.members.leave(a.id, org.id),
                lambda org=org: um.members.leave(b.id, org.id),
            ]
        )
        failures = [o for o in outcomes if o is not None]
        assert len(failures) == 1, outcomes
        assert isinstance(failures[0], LastOwner), outcomes
        assert _owner_count(um, org.id) == 1


def test_randomised_concurrent_demote_leave_remove_keeps_an_owner(
    um: UserManagement, three_users: list[User]
) -> None:
    rng = random.Random(20260101)
    unexpected: list[BaseException] = []
    for _ in range(100):
        owners = three_users[: rng.choice((2, 3))]
        org = _org_with_owners(um, owners)
        calls: list[Callable[[], object]] = []
        for actor in owners:
            target = rng.choice(owners)
            kind = rng.choice(("demote", "leave", "remove"))
            if kind == "demote":
                role = rng.choice(("admin", "member"))
                calls.append(
                    lambda a=actor, t=target, r=role, o=org: um.members.update_roles(
                        a.id, o.id, t.id, [r]
                    )
                )
            elif kind == "leave":
                calls.append(lambda a=actor, o=org: um.members.leave(a.id, o.id))
            else:
                calls.append(lambda a=actor, t=target, o=org: um.members.remove(a.id, o.id, t.id))
        outcomes = _run_together(calls)
        unexpected += [o for o in outcomes if o is not None and not isinstance(o, UserMgmtError)]
        assert _owner_count(um, org.id) >= 1
        # the cache agrees with the store for every participant
        snapshot = _membership_snapshot(um, org.id)
        for user in owners:
            assert (um.authz.effective(user.id, org.id) is None) == (user.id not in snapshot)
    assert unexpected == []
