"""Checks on the memory database, read directly: answers remembered per data version, and
authentication asking both the revocation store and the database (the behaviour of
every change is in test_authz_cache.py, which runs it this way too)."""

from __future__ import annotations

from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.errors import InvalidToken, TokenExpired, TokenRevoked
from usermgmt.models import Organization, User
from usermgmt.testing import create_user, extract_token


@pytest.fixture
def owner(make_user: Any) -> User:
    return make_user()[0]


@pytest.fixture
def org(um: UserManagement, owner: User) -> Organization:
    return um.organizations.create(owner.id, "Acme")


def _count_reads(um: UserManagement, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    factory = um.backends.uow
    reads = [0]
    original = factory.member_roles_at

    def counted(*args: Any) -> Any:
        reads[0] += 1
        return original(*args)

    monkeypatch.setattr(factory, "member_roles_at", counted)
    return reads


def test_the_memory_database_is_read_directly_not_the_cache(
    um: UserManagement, owner: User, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert um.authz.reads_locally
    cache = um.kernel.cache
    assert cache is not None

    def untouchable(*args: Any) -> Any:
        raise AssertionError("the cache was read")

    monkeypatch.setattr(cache, "get_many", untouchable)
    assert um.authz.require(owner.id, org.id, "organization:delete").roles == {"owner"}


def test_an_answer_is_remembered_until_anything_changes(
    um: UserManagement, owner: User, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _count_reads(um, monkeypatch)
    first = um.authz.effective(owner.id, org.id)
    assert um.authz.effective(owner.id, org.id) is first
    assert um.authz.has_permission(owner.id, org.id, "member:invite")
    assert reads == [1]
    um.organizations.create(owner.id, "Unrelated")  # any commit: read again
    assert um.authz.effective(owner.id, org.id) == first
    assert reads == [2]


def test_a_demotion_is_seen_by_the_next_check(
    um: UserManagement, owner: User, org: Organization, make_user: Any
) -> None:
    user, _ = make_user()
    um.invitations.create(owner.id, org.id, user.email, roles=["admin"])
    um.invitations.accept(user.id, extract_token(um.outbox.last(to=user.email)))
    for _ in range(3):
        assert um.authz.has_permission(user.id, org.id, "member:invite")
    um.members.update_roles(owner.id, org.id, user.id, ["member"])
    assert not um.authz.has_permission(user.id, org.id, "member:invite")


def test_a_new_catalogue_permission_is_seen_at_once(
    um: UserManagement, owner: User, org: Organization
) -> None:
    assert not um.authz.has_permission(owner.id, org.id, "report:export")
    um.register_permission("report:export", "Export reports")
    assert um.authz.has_permission(owner.id, org.id, "report:export")  # owner: everything


def test_an_uncommitted_answer_is_not_remembered(
    um: UserManagement, owner: User, org: Organization, make_user: Any
) -> None:
    """A check inside an open unit of work sees its writes; once rolled back they are
    gone for the next check."""
    user, _ = make_user()
    owner_membership = um.kernel.read(lambda uow: uow.memberships.get(org.id, owner.id))
    assert owner_membership is not None

    class Rollback(Exception):
        pass

    def body(uow: Any) -> None:
        uow.memberships.add(
            type(owner_membership)(
                id=user.id,
                organization_id=org.id,
                user_id=user.id,
                role_ids=owner_membership.role_ids,
                joined_at=owner_membership.joined_at,
                updated_at=owner_membership.updated_at,
            )
        )
        assert um.authz.has_permission(user.id, org.id, "organization:delete")
        raise Rollback

    with pytest.raises(Rollback):
        um.kernel.write(body)
    assert um.authz.effective(user.id, org.id) is None


def _login(um: UserManagement) -> tuple[User, str, Any]:
    user, password = create_user(um)
    pair = um.auth.login(email=user.email, password=password)
    return user, pair.access_token, pair.session_id


def test_a_revocation_in_the_database_alone_is_enough(um: UserManagement) -> None:
    user, token, session_id = _login(um)
    assert um.auth.authenticate(token).id == user.id
    um.auth.logout(user.id, session_id)
    store = um.kernel.revocations
    assert store is not None
    store.clear()  # only the database knows now
    with pytest.raises(TokenRevoked):
        um.auth.authenticate(token)


def test_a_revocation_in_the_store_alone_is_enough(um: UserManagement) -> None:
    """Several processes may share a revocation store while each has its own memory
    database: what the store knows counts."""
    user, token, session_id = _login(um)
    assert um.auth.authenticate(token).id == user.id
    store = um.kernel.revocations
    assert store is not None
    store.revoke([session_id], 3600)
    with pytest.raises(TokenRevoked):
        um.auth.authenticate(token)


def test_an_authenticated_user_is_a_copy(um: UserManagement) -> None:
    user, token, _ = _login(um)
    found = um.auth.authenticate(token)
    found.metadata["mutated"] = True
    assert um.auth.authenticate(token).metadata == {}
    assert um.users.get(user.id).metadata == {}


class _SharedCache:
    """A cache other processes would share (no ``process_local``): the memory cache's
    methods, counted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = 0

    def get(self, key: str) -> str | None:
        return self.inner.get(key)  # type: ignore[no-any-return]

    def get_many(self, keys: Any) -> list[str | None]:
        self.reads += 1
        return self.inner.get_many(keys)  # type: ignore[no-any-return]

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self.inner.set(key, value, ttl)

    def delete(self, *keys: str) -> None:
        self.inner.delete(*keys)


def test_a_shared_cache_is_still_used_with_the_memory_database(
    um: UserManagement, owner: User, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory database with Redis: the checks go through the cache as before."""
    shared = _SharedCache(um.kernel.cache)
    monkeypatch.setattr(um.kernel, "cache", shared)
    um.authz.reads_locally = True  # decided again: not with this cache
    assert not um.authz.reads_locally
    assert um.authz.has_permission(owner.id, org.id, "member:invite")
    assert shared.reads == 1


def test_a_remembered_answer_is_not_served_inside_an_open_unit_of_work(
    um: UserManagement, owner: User, org: Organization, make_user: Any
) -> None:
    """Remembered before, then the thread's own unit of work removes the member: a check
    in that unit of work sees the removal (as a read there does), not the old answer."""
    user, _ = make_user()
    um.invitations.create(owner.id, org.id, user.email, roles=["admin"])
    um.invitations.accept(user.id, extract_token(um.outbox.last(to=user.email)))
    assert um.authz.has_permission(user.id, org.id, "member:invite")  # remembered

    class Rollback(Exception):
        pass

    seen: list[bool] = []

    def body(uow: Any) -> None:
        uow.memberships.delete(org.id, user.id)
        assert uow.memberships.get(org.id, user.id) is None
        seen.append(um.authz.has_permission(user.id, org.id, "member:invite"))
        seen.append(um.authz.effective(user.id, org.id) is None)
        raise Rollback

    with pytest.raises(Rollback):
        um.kernel.write(body)
    assert seen == [False, True]
    assert um.authz.has_permission(user.id, org.id, "member:invite")  # rolled back


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_another_threads_open_transaction_is_never_seen_its_commit_at_once(
    um: UserManagement, owner: User, org: Organization, make_user: Any, outcome: str
) -> None:
    import threading

    user, _ = make_user()
    um.invitations.create(owner.id, org.id, user.email, roles=["admin"])
    um.invitations.accept(user.id, extract_token(um.outbox.last(to=user.email)))
    assert um.authz.has_permission(user.id, org.id, "member:invite")  # remembered
    removed, finish = threading.Event(), threading.Event()

    def writer() -> None:
        with um.backends.uow() as uow:
            uow.memberships.delete(org.id, user.id)
            removed.set()
            finish.wait(10)
            if outcome == "commit":
                uow.commit()

    thread = threading.Thread(target=writer)
    thread.start()
    assert removed.wait(10)
    # uncommitted elsewhere: the committed answer (remembered, no wait for the lock)
    assert um.authz.has_permission(user.id, org.id, "member:invite")
    finish.set()
    thread.join(10)
    assert um.authz.has_permission(user.id, org.id, "member:invite") is (outcome == "rollback")


# --- the caller of a token, remembered per data version ------------------------------------


def _count_session_reads(um: UserManagement, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    factory = um.backends.uow
    reads = [0]
    original = factory.live_session_user_at

    def counted(*args: Any) -> Any:
        reads[0] += 1
        return original(*args)

    monkeypatch.setattr(factory, "live_session_user_at", counted)
    return reads


def test_the_caller_of_a_token_is_remembered_until_anything_changes(
    um: UserManagement, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, token, _ = _login(um)
    reads = _count_session_reads(um, monkeypatch)
    first = um.auth.authenticate(token)
    second = um.auth.authenticate(token)
    assert reads == [1]
    assert second == first
    assert second is not first  # each caller its own copy
    assert second.metadata is not first.metadata
    um.users.update_profile(user.id, name="Renamed")  # a commit: read again
    assert um.auth.authenticate(token).name == "Renamed"
    assert reads == [2]


def test_the_tokens_of_one_user_do_not_each_keep_a_copy_of_the_user(
    um: UserManagement,
) -> None:
    """What is remembered per token stays small: a user with large metadata (16 KB of
    JSON may be ~300 KB of Python objects) holding many tokens (every login and refresh
    makes one) is kept once, not once per token, so one account cannot fill the
    process's memory. Each caller still gets an independent, up-to-date copy."""
    import gc
    import tracemalloc

    user, password = create_user(um)
    um.users.update_profile(user.id, metadata={"a": [[] for _ in range(5000)]})
    tokens = [um.auth.login(email=user.email, password=password).access_token for _ in range(60)]
    gc.collect()
    tracemalloc.start()
    try:
        callers = [um.auth.authenticate(token) for token in tokens]
        del callers
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one copy of the user is ~0.35 MB: one per token would be ~20 MB
    assert retained < 3_000_000, retained
    first, second = um.auth.authenticate(tokens[0]), um.auth.authenticate(tokens[1])
    assert first == second
    assert first is not second
    first.metadata["a"].append("mine")  # a caller's copy is its own
    assert len(um.auth.authenticate(tokens[1]).metadata["a"]) == 5000
    um.users.update_profile(user.id, name="Renamed")
    assert {um.auth.authenticate(token).name for token in tokens} == {"Renamed"}


def test_a_deactivation_is_seen_by_the_next_authentication(um: UserManagement) -> None:
    user, token, _ = _login(um)
    for _ in range(3):
        assert um.auth.authenticate(token).id == user.id
    um.users.deactivate(user.id)
    store = um.kernel.revocations
    assert store is not None
    store.clear()  # only the database knows: the user is inactive, the session revoked
    with pytest.raises(InvalidToken):
        um.auth.authenticate(token)


def test_a_remembered_caller_expires_with_the_token(
    um: UserManagement, um_clock: FakeClock
) -> None:
    _, token, _ = _login(um)
    um.auth.authenticate(token)
    um.auth.authenticate(token)
    um_clock.advance(seconds=um.settings.access_token_ttl_seconds + 120)
    with pytest.raises(TokenExpired):
        um.auth.authenticate(token)


def test_a_remembered_caller_is_not_served_inside_an_open_unit_of_work(
    um: UserManagement,
) -> None:
    """The thread's own unit of work revokes the session: an authentication there sees
    it; once rolled back, the session is alive again."""
    user, token, session_id = _login(um)
    um.auth.authenticate(token)  # remembered
    store = um.kernel.revocations
    assert store is not None

    class Rollback(Exception):
        pass

    def body(uow: Any) -> None:
        uow.sessions.revoke(session_id, um.kernel.now(), "logout")
        with pytest.raises(TokenRevoked):
            um.auth.authenticate(token)
        raise Rollback

    with pytest.raises(Rollback):
        um.kernel.write(body)
    assert um.auth.authenticate(token).id == user.id


def test_the_answers_of_two_stores_never_mix(make_user: Any) -> None:
    """Each memory store's data versions are its own: an answer remembered from one store
    is never taken for one of another store at the same count of changes."""
    from usermgmt.backends.memory import MemoryStore

    first, second = MemoryStore(), MemoryStore()
    assert first.version != second.version


def test_ids_of_another_kind_are_answered_not_remembered(
    um: UserManagement, owner: User, org: Organization
) -> None:
    assert um.authz.effective(str(owner.id), str(org.id)) is None  # type: ignore[arg-type]
    assert um.authz.effective(owner.id, org.id) is not None
    assert um.authz.effective(str(owner.id), str(org.id)) is None  # type: ignore[arg-type]
