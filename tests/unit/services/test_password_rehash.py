"""Hash upgrades on login and legacy bcrypt handling (SEC-PW-03, SEC-PW-09, SEC-PW-10)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import argon2
import bcrypt
import pytest

from usermgmt.app import UserManagement
from usermgmt.errors import InvalidCredentials

CURRENT_PREFIX = "$argon2id$v=19$m=1024,t=1,p=1$"  # Settings.for_tests()


def _seed_hash(um: UserManagement, user_id: Any, password_hash: str) -> None:
    def body(uow: Any) -> None:
        uow.users.update(replace(uow.users.get(user_id), password_hash=password_hash))

    um.kernel.write(body)


def _stored_hash(um: UserManagement, user_id: Any) -> str:
    return str(um.users.get(user_id).password_hash)


def _legacy_hashes(password: str) -> dict[str, str]:
    return {
        "bcrypt": bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode(),
        "argon2id_low_memory": argon2.PasswordHasher(
            time_cost=1, memory_cost=256, parallelism=1
        ).hash(password),
        "argon2id_more_lanes": argon2.PasswordHasher(
            time_cost=1, memory_cost=1024, parallelism=2
        ).hash(password),
        "argon2i": argon2.PasswordHasher(
            time_cost=1, memory_cost=1024, parallelism=1, type=argon2.Type.I
        ).hash(password),
    }


@pytest.mark.parametrize("kind", list(_legacy_hashes("x")))
def test_password_rehash_on_login(
    kind: str, um: UserManagement, make_user: Any, auth_audit: Any
) -> None:
    """SEC-PW-10: a legacy (bcrypt) or outdated (argon2 with other parameters) hash is replaced
    by an argon2id hash with the current parameters on the next successful login."""
    user, password = make_user()
    legacy = _legacy_hashes(password)[kind]
    _seed_hash(um, user.id, legacy)
    assert um.hasher.needs_rehash(legacy)

    um.auth.login(user.email, password)

    upgraded = _stored_hash(um, user.id)
    assert upgraded != legacy
    assert upgraded.startswith(CURRENT_PREFIX)
    assert not um.hasher.needs_rehash(upgraded)
    assert um.hasher.verify(password, upgraded)
    # The upgrade is audited once; the next login leaves the (current) hash alone.
    um.auth.login(user.email, password)
    assert _stored_hash(um, user.id) == upgraded
    assert [e.metadata.get("rehashed") for e in auth_audit(um, "user.login")] == [True, None]


def test_password_no_rehash_on_failed_login(um: UserManagement, make_user: Any) -> None:
    """SEC-PW-10: only a *successful* login rewrites the hash."""
    user, password = make_user()
    legacy = _legacy_hashes(password)["bcrypt"]
    _seed_hash(um, user.id, legacy)
    with pytest.raises(InvalidCredentials):
        um.auth.login(user.email, "not-" + password)
    assert _stored_hash(um, user.id) == legacy


def test_password_bcrypt_legacy_hash_is_never_truncated(um: UserManagement, make_user: Any) -> None:
    """SEC-PW-03 / SEC-PW-11: bcrypt compares only 72 bytes; a longer password must not match
    a legacy bcrypt hash of its first 72 bytes."""
    user, _ = make_user()
    password = "correct-horse-" + "b" * 58  # exactly 72 bytes
    assert len(password.encode()) == 72
    _seed_hash(um, user.id, bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode())

    for attempt in (password + "x", password + "\u00e9", password[:-1], password.upper()):
        with pytest.raises(InvalidCredentials):
            um.auth.login(user.email, attempt)
    assert um.auth.login(user.email, password).session_id


def test_password_hashes_are_salted_argon2id(um: UserManagement, make_user: Any) -> None:
    """SEC-PW-09: argon2id PHC strings with the configured parameters and a unique salt."""
    password = "same-password-for-both-users"
    first, _ = make_user(password=password)
    second, _ = make_user(password=password)
    hashes = [_stored_hash(um, first.id), _stored_hash(um, second.id)]
    assert all(h.startswith(CURRENT_PREFIX) for h in hashes)
    assert hashes[0] != hashes[1]
    assert hashes[0].split("$")[4] != hashes[1].split("$")[4]  # the salts differ
