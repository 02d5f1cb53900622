"""Authorization checks and the permission cache (R10, SEC-AC-05, F4)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest

from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.errors import BackendUnavailable, NotFound, PermissionDenied
from usermgmt.ids import new_id
from usermgmt.models import AuditEvent, Organization, RequestContext, User
from usermgmt.testing import create_user, extract_token

MEMBER_PERMS = frozenset({"organization:read", "member:read", "role:read"})


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


#: Tests of the cache itself: the others run both through the cache (as with a shared
#: database) and reading the memory database directly (what it does by default).
_CACHE_ONLY = frozenset(
    {
        "test_cache_entries_expire",
        "test_invalidation_happens_after_commit",
        "test_cache_keys_name_org_and_user",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.function.__name__ not in _CACHE_ONLY:
        metafunc.parametrize("reads", ["cache", "local"], indirect=True)


@pytest.fixture(autouse=True)
def reads(request: pytest.FixtureRequest, um: UserManagement) -> str:
    """``cache``: checks go through the permission cache; ``local``: they read the
    memory database directly, answers remembered per data version."""
    how: str = getattr(request, "param", "cache")
    um.authz.reads_locally = how == "local"
    return how


@pytest.fixture
def owner(make_user: Any) -> User:
    return make_user()[0]


@pytest.fixture
def org(um: UserManagement, owner: User) -> Organization:
    return um.organizations.create(owner.id, "Acme")


# --- basic API -------------------------------------------------------------------------------------


def test_has_permission_require_effective(
    um: UserManagement, owner: User, org: Organization
) -> None:
    member = _join(um, owner, org.id)
    assert um.authz.has_permission(member.id, org.id, "member:read")
    assert not um.authz.has_permission(member.id, org.id, "member:invite")
    assert not um.authz.has_permission(member.id, org.id, "no:such")
    eff = um.authz.require(member.id, org.id, "organization:read")
    assert (eff.organization_id, eff.user_id) == (org.id, member.id)
    assert eff.permissions == MEMBER_PERMS
    assert eff.roles == {"member"}
    assert um.authz.effective(member.id, org.id) == eff
    assert um.authz.require_member(member.id, org.id) == eff


def test_outsider_gets_not_found_like_a_missing_org(
    um: UserManagement, owner: User, org: Organization, make_user: Any
) -> None:
    outsider, _ = make_user()
    events = len(_events(um))
    with pytest.raises(NotFound) as existing:
        um.authz.require(outsider.id, org.id, "organization:read")
    with pytest.raises(NotFound) as missing:
        um.authz.require(outsider.id, new_id(), "organization:read")
    assert existing.value.resource == missing.value.resource == "organization"
    assert existing.value.to_dict() == missing.value.to_dict()
    assert um.authz.effective(outsider.id, org.id) is None
    assert not um.authz.has_permission(outsider.id, org.id, "organization:read")
    with pytest.raises(NotFound):
        um.authz.require_member(outsider.id, org.id)
    assert len(_events(um)) == events  # nothing about the outsider is written


def test_member_without_permission_is_denied_and_audited(
    um: UserManagement, owner: User, org: Organization
) -> None:
    member = _join(um, owner, org.id)
    ctx = RequestContext(ip="198.51.100.7", user_agent="pytest-agent", request_id="req-42")
    with pytest.raises(PermissionDenied) as info:
        um.authz.require(member.id, org.id, "member:invite", ctx)
    assert info.value.code == "permission_denied"
    denied = _events(um, "authorization.denied")
    assert len(denied) == 1
    event = denied[0]
    assert (event.actor_user_id, event.organization_id) == (member.id, org.id)
    assert event.metadata["permission"] == "member:invite"
    assert (event.ip, event.user_agent, event.request_id) == (
        "198.51.100.7",
        "pytest-agent",
        "req-42",
    )


# --- invalidation after every change -------------------------------------------------------------


def _warm(um: UserManagement, user_id: UUID, org_id: UUID) -> None:
    um.authz.has_permission(user_id, org_id, "organization:read")
    um.authz.has_permission(user_id, org_id, "organization:read")


def test_update_roles_is_seen_by_the_next_check(
    um: UserManagement, owner: User, org: Organization
) -> None:
    user = _join(um, owner, org.id, ["admin"])
    _warm(um, user.id, org.id)
    um.members.update_roles(owner.id, org.id, user.id, ["member"])
    assert not um.authz.has_permission(user.id, org.id, "member:invite")
    um.members.update_roles(owner.id, org.id, user.id, ["admin"])
    assert um.authz.has_permission(user.id, org.id, "member:invite")


def test_remove_and_leave_are_seen_by_the_next_check(
    um: UserManagement, owner: User, org: Organization
) -> None:
    removed = _join(um, owner, org.id)
    leaver = _join(um, owner, org.id)
    _warm(um, removed.id, org.id)
    _warm(um, leaver.id, org.id)
    um.members.remove(owner.id, org.id, removed.id)
    assert um.authz.effective(removed.id, org.id) is None
    um.members.leave(leaver.id, org.id)
    with pytest.raises(NotFound):
        um.authz.require(leaver.id, org.id, "organization:read")


def test_role_update_and_delete_are_seen_by_the_next_check(
    um: UserManagement, owner: User, org: Organization
) -> None:
    role = um.roles.create(owner.id, org.id, "Auditor", ["audit:read"])
    user = _join(um, owner, org.id, ["member", "Auditor"])
    assert um.authz.has_permission(user.id, org.id, "audit:read")
    um.roles.update(owner.id, org.id, role.id, permissions=[])
    assert not um.authz.has_permission(user.id, org.id, "audit:read")
    um.roles.update(owner.id, org.id, role.id, permissions=["audit:read", "member:invite"])
    assert um.authz.has_permission(user.id, org.id, "member:invite")
    um.members.update_roles(owner.id, org.id, user.id, ["member"])
    assert um.authz.effective(user.id, org.id).roles == {"member"}  # type: ignore[union-attr]
    um.roles.delete(owner.id, org.id, role.id)
    assert um.authz.effective(user.id, org.id).permissions == MEMBER_PERMS  # type: ignore[union-attr]


def test_invitation_accept_is_seen_by_the_next_check(
    um: UserManagement, owner: User, org: Organization, make_user: Any
) -> None:
    user, _ = make_user()
    assert um.authz.effective(user.id, org.id) is None  # "not a member" is cached
    um.invitations.create(owner.id, org.id, user.email, roles=["admin"])
    um.invitations.accept(user.id, extract_token(um.outbox.last(to=user.email)))
    assert um.authz.has_permission(user.id, org.id, "member:invite")


def test_org_delete_is_seen_by_the_next_check(
    um: UserManagement, owner: User, org: Organization
) -> None:
    user = _join(um, owner, org.id, ["admin"])
    _warm(um, user.id, org.id)
    _warm(um, owner.id, org.id)
    um.organizations.delete(owner.id, org.id)
    assert um.authz.effective(user.id, org.id) is None
    assert um.authz.effective(owner.id, org.id) is None


def test_cache_entries_expire(
    um: UserManagement, um_clock: FakeClock, owner: User, org: Organization
) -> None:
    user = _join(um, owner, org.id)
    _warm(um, user.id, org.id)
    store = um.backends.uow.store
    # change the store behind the service's back: only expiry can reveal it
    with store.lock:
        key = (org.id, user.id)
        membership = store.memberships.pop(store.membership_index.pop(key))
    assert um.authz.effective(user.id, org.id) is not None  # served from the cache
    um_clock.advance(seconds=301)
    assert um.authz.effective(user.id, org.id) is None
    assert membership.user_id == user.id


def test_invalidation_happens_after_commit(
    um: UserManagement, owner: User, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each invalidation runs when another thread can already read the committed change."""
    user = _join(um, owner, org.id, ["admin"])
    role = um.roles.create(owner.id, org.id, "Temp", ["audit:read"])
    cache = um.kernel.cache
    assert cache is not None
    original_delete = cache.delete
    seen: list[Any] = []

    def read_elsewhere() -> Any:
        box: list[Any] = []

        def reader() -> None:
            box.append(um.kernel.read(lambda uow: um.authz.compute(uow, user.id, org.id)))

        t = threading.Thread(target=reader)
        t.start()
        t.join(2)
        return box[0] if box else "BLOCKED"

    def spy(*keys: str) -> None:
        seen.append(read_elsewhere())
        original_delete(*keys)

    monkeypatch.setattr(cache, "delete", spy)
    um.members.update_roles(owner.id, org.id, user.id, ["member", "Temp"])
    assert seen[-1] != "BLOCKED"
    assert seen[-1][1] == {"member", "Temp"}
    um.roles.update(owner.id, org.id, role.id, permissions=[])
    assert seen[-1][0] == MEMBER_PERMS
    um.members.remove(owner.id, org.id, user.id)
    assert seen[-1] is None
    assert len(seen) == 3


# --- R10: reads racing a demotion -------------------------------------------------------------------


def _demote_while_reading(um: UserManagement, owner: User, user: User) -> list[str]:
    """Two threads read ``user``'s permission in a loop while ``owner`` demotes them;
    returns the reads that started after the demotion returned yet saw the old role."""
    org = um.organizations.create(owner.id, "Race")
    um.invitations.create(owner.id, org.id, user.email, roles=["admin"])
    um.invitations.accept(user.id, extract_token(um.outbox.last(to=user.email)))
    demoted = threading.Event()
    stop = threading.Event()
    barrier = threading.Barrier(3)
    reads_after = [0, 0]
    violations: list[str] = []

    def reader(slot: int) -> None:
        barrier.wait()
        while not stop.is_set():
            after = demoted.is_set()
            allowed = um.authz.has_permission(user.id, org.id, "member:invite")
            if after:
                reads_after[slot] += 1
                if allowed:
                    violations.append(f"stale read in {org.id}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    barrier.wait()
    time.sleep(0.002)  # let the readers fill the cache with the admin role
    um.members.update_roles(owner.id, org.id, user.id, ["member"])
    demoted.set()
    deadline = time.monotonic() + 10
    while min(reads_after) < 50 and time.monotonic() < deadline:
        time.sleep(0.001)
    stop.set()
    for t in threads:
        t.join(10)
    assert min(reads_after) >= 50, "readers stopped reading"
    assert not um.authz.has_permission(user.id, org.id, "member:invite")
    return violations


def test_no_read_after_demotion_sees_the_old_role(um: UserManagement, owner: User) -> None:
    """R10: after the demotion call returns, no read sees the old role (20 rounds)."""
    user, _ = create_user(um)
    violations: list[str] = []
    for _ in range(20):
        violations += _demote_while_reading(um, owner, user)
    assert violations == []


# --- keys include org and user ------------------------------------------------------------------------


def test_same_user_different_roles_in_two_orgs_no_cross_read(
    um: UserManagement, owner: User
) -> None:
    a = um.organizations.create(owner.id, "A")
    b = um.organizations.create(owner.id, "B")
    user, _ = create_user(um)
    for org_id, role in ((a.id, "admin"), (b.id, "member")):
        um.invitations.create(owner.id, org_id, user.email, roles=[role])
        um.invitations.accept(user.id, extract_token(um.outbox.last(to=user.email)))
    for _ in range(3):  # first read fills, the others hit the cache
        assert um.authz.has_permission(user.id, a.id, "member:invite")
        assert not um.authz.has_permission(user.id, b.id, "member:invite")
        assert um.authz.effective(user.id, a.id).roles == {"admin"}  # type: ignore[union-attr]
        assert um.authz.effective(user.id, b.id).roles == {"member"}  # type: ignore[union-attr]
        assert um.authz.effective(owner.id, b.id).roles == {"owner"}  # type: ignore[union-attr]
    # a change in one org leaves the other's answer alone
    um.members.update_roles(owner.id, b.id, user.id, ["admin"])
    um.members.update_roles(owner.id, a.id, user.id, ["member"])
    assert not um.authz.has_permission(user.id, a.id, "member:invite")
    assert um.authz.has_permission(user.id, b.id, "member:invite")


def test_cache_keys_name_org_and_user(um: UserManagement, owner: User, org: Organization) -> None:
    member = _join(um, owner, org.id)
    other = um.organizations.create(owner.id, "Other")
    cache = um.kernel.cache
    assert cache is not None
    for user_id in (owner.id, member.id):
        for org_id in (org.id, other.id):
            um.authz.effective(user_id, org_id)
    entry_keys = [k for k in cache._data if ":u:" in k]  # type: ignore[attr-defined]
    assert len(entry_keys) == 4
    for user_id in (owner.id, member.id):
        for org_id in (org.id, other.id):
            matching = [
                k
                for k in entry_keys
                if (str(org_id) in k or org_id.hex in k) and (str(user_id) in k or user_id.hex in k)
            ]
            assert len(matching) == 1


# --- F4: the cache failing never changes an answer ------------------------------------------------------


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise BackendUnavailable("cache down")


@pytest.mark.parametrize("broken", [("get_many",), ("get_many", "set", "delete"), ("set",)])
def test_cache_failure_falls_back_to_the_database(
    um: UserManagement,
    owner: User,
    org: Organization,
    monkeypatch: pytest.MonkeyPatch,
    broken: tuple[str, ...],
) -> None:
    user = _join(um, owner, org.id, ["admin"])
    outsider, _ = create_user(um)
    _warm(um, user.id, org.id)
    cache = um.kernel.cache
    for name in broken:
        monkeypatch.setattr(cache, name, _boom)

    assert um.authz.has_permission(user.id, org.id, "member:invite")
    assert um.authz.require(owner.id, org.id, "organization:delete").roles == {"owner"}
    assert um.authz.effective(outsider.id, org.id) is None
    with pytest.raises(NotFound):
        um.authz.require(outsider.id, org.id, "organization:read")
    with pytest.raises(PermissionDenied):
        um.authz.require(user.id, org.id, "organization:delete")
    um.members.update_roles(owner.id, org.id, user.id, ["member"])  # works with the cache down
    assert not um.authz.has_permission(user.id, org.id, "member:invite")
    assert um.organizations.get(user.id, org.id).id == org.id
    assert [m.user.id for m in um.members.list(owner.id, org.id).items] == [owner.id, user.id]


def test_invalidation_lost_during_cache_outage_does_not_serve_stale_permissions(
    um: UserManagement, owner: User, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = _join(um, owner, org.id, ["admin"])
    _warm(um, user.id, org.id)
    cache = um.kernel.cache
    assert cache is not None
    original: dict[str, Callable[..., Any]] = {
        name: getattr(cache, name) for name in ("get_many", "set", "delete")
    }
    for name in original:
        monkeypatch.setattr(cache, name, _boom)
    um.members.update_roles(owner.id, org.id, user.id, ["member"])
    assert not um.authz.has_permission(user.id, org.id, "member:invite")  # database answer
    for name, fn in original.items():  # the cache comes back with its old contents
        monkeypatch.setattr(cache, name, fn)
    assert not um.authz.has_permission(user.id, org.id, "member:invite")


@pytest.mark.parametrize("how", ["self", "admin"])
def test_deactivated_user_holds_nothing_even_with_a_warm_cache(
    um: UserManagement, owner: User, org: Organization, how: str
) -> None:
    user = _join(um, owner, org.id, ["admin"])
    _warm(um, user.id, org.id)
    assert um.authz.has_permission(user.id, org.id, "member:invite")
    if how == "self":
        um.users.deactivate(user.id)
    else:
        admin, _ = create_user(um, superuser=True)
        um.admin.update_user(admin.id, user.id, is_active=False)
    assert not um.authz.has_permission(user.id, org.id, "member:invite")
    assert um.authz.effective(user.id, org.id) is None
    with pytest.raises(NotFound):
        um.authz.require(user.id, org.id, "member:read")
    assert um.authz.has_permission(owner.id, org.id, "member:invite")  # others unaffected
