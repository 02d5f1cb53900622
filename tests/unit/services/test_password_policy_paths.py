"""The password policy on every path that sets a password: register, change, reset
(SEC-PW-01, 02, 04, 05, 06, 08, 11; section 6 item 1)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import pytest

from usermgmt import schemas
from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.errors import (
    ConfigurationError,
    InvalidCredentials,
    PasswordBreached,
    PasswordPolicyError,
    PasswordTooCommon,
    PasswordTooLong,
    PasswordTooShort,
    RateLimited,
    ValidationError,
    WrongPassword,
)
from usermgmt.models import TokenPurpose, User
from usermgmt.security.blocklist import default_blocklist
from usermgmt.security.opaque import hash_token
from usermgmt.testing import create_user, extract_token, make_um, random_password

PATHS = ["register", "change", "reset"]
#: Entries of the bundled list long enough to pass the default 15-character minimum.
COMMON = ["1qaz2wsx3edc4rfv", "qwerty123456789", "123456789qwerty"]


@dataclass
class Attempt:
    """Setting ``password`` through one path, and what must hold if it is refused."""

    email: str
    run: Callable[[], Any]
    unchanged: Callable[[], None]


def _attempt(um: UserManagement, path: str, password: str, email: str | None = None) -> Attempt:
    email = email or f"user-{secrets.token_hex(4)}@example.com"
    if path == "register":

        def unchanged_register() -> None:
            assert um.users.get_by_email(email) is None

        return Attempt(email, lambda: um.users.register(email, password), unchanged_register)

    user, current = create_user(um, email)
    before = um.users.get(user.id).password_hash

    def unchanged() -> None:
        assert um.users.get(user.id).password_hash == before

    if path == "change":
        return Attempt(
            email, lambda: um.users.change_password(user.id, current, password), unchanged
        )
    um.users.request_password_reset(email)
    token = extract_token(um.outbox.last(to=email, template="password_reset"))

    def unchanged_reset() -> None:
        unchanged()
        stored = um.kernel.read(
            lambda uow: uow.tokens.find(TokenPurpose.PASSWORD_RESET, hash_token(token))
        )
        assert stored.used_at is None  # a refused password does not burn the link

    return Attempt(email, lambda: um.users.reset_password(token, password), unchanged_reset)


def _accepted(um: UserManagement, path: str, password: str) -> None:
    attempt = _attempt(um, path, password)
    attempt.run()
    assert um.auth.login(attempt.email, password).session_id


def _refused(
    um: UserManagement,
    path: str,
    password: str,
    error: type[PasswordPolicyError],
    email: str | None = None,
) -> PasswordPolicyError:
    attempt = _attempt(um, path, password, email)
    with pytest.raises(error) as info:
        attempt.run()
    attempt.unchanged()
    return info.value


@pytest.mark.parametrize("path", PATHS)
def test_password_policy_default_minimum_is_15(path: str, um: UserManagement) -> None:
    """SEC-PW-01: 14 characters are refused (with the reason), 15 accepted; length counts
    code points (15 x "é" = 30 bytes passes)."""
    error = _refused(um, path, "abcdefghijklmn", PasswordTooShort)
    assert error.to_dict()["code"] == "password_too_short"
    assert error.to_dict()["min_length"] == 15
    _accepted(um, path, "correcthorsebat")
    _accepted(um, path, "\u00e9" * 15)


@pytest.mark.parametrize("path", PATHS)
def test_password_policy_custom_minimum(path: str) -> None:
    """SEC-PW-01: a configured minimum of 8 refuses 7 and accepts 8 characters."""
    um = make_um(password_min_length=8)
    _refused(um, path, "abcdefg", PasswordTooShort)
    _accepted(um, path, "zkqjwvxy")


def test_password_policy_minimum_never_below_8() -> None:
    """SEC-PW-01: a configured minimum below 8 refuses to start."""
    with pytest.raises(ConfigurationError):
        Settings.for_tests(password_min_length=7)


@pytest.mark.parametrize("path", PATHS)
def test_password_policy_common_passwords_refused(path: str, um: UserManagement) -> None:
    """SEC-PW-05: entries of the bundled list are refused on every path (any case), with
    code ``password_too_common``."""
    blocklist = default_blocklist()
    for common in [*COMMON, COMMON[0].upper()]:
        assert common in blocklist
        error = _refused(um, path, common, PasswordTooCommon)
        assert error.to_dict()["code"] == "password_too_common"
        assert error.to_dict()["reason"] == "blocklist"


@pytest.mark.parametrize("path", PATHS)
def test_password_policy_breach_checker(path: str) -> None:
    """SEC-PW-05: a breach checker saying "pwned" refuses the password on every path."""

    class Pwned:
        def __init__(self) -> None:
            self.checked: list[str] = []

        def is_breached(self, password: str) -> bool:
            self.checked.append(password)
            return password.startswith("pwned-")

    checker = Pwned()
    um = UserManagement.in_memory(Settings.for_tests(), clock=FakeClock(), breach_checker=checker)
    _refused(um, path, "pwned-but-long-enough", PasswordBreached)
    assert "pwned-but-long-enough" in checker.checked
    _accepted(um, path, "clean-and-long-enough")


@pytest.mark.parametrize("path", PATHS)
def test_password_policy_email_as_password_refused(path: str, um: UserManagement) -> None:
    """SEC-PW-06: the address itself or its local part is not a password."""
    email = f"averylonglocalpart{path}@example.com"
    local = email.split("@")[0]
    error = _refused(um, path, local, PasswordTooCommon, email=email)
    assert error.to_dict()["reason"] == "email"


@pytest.mark.parametrize("path", PATHS)
def test_password_policy_long_passwords(path: str, um: UserManagement) -> None:
    """SEC-PW-02 / SEC-PW-04 / SEC-PW-11: 64- and 128-character lowercase passphrases are
    accepted (no composition rules); over the maximum (1024) is refused before hashing."""
    _accepted(um, path, "a" * 63 + "b")
    _accepted(um, path, "passphrase" * 12 + "zzzzzzzz")
    _refused(um, path, "x" * 1025, PasswordTooLong)


def test_password_change_requires_the_current_password(
    um: UserManagement, make_user: Any, auth_audit: Any
) -> None:
    """SEC-PW-08: a wrong current password → WrongPassword and the hash is unchanged; an
    empty one is a validation error; the right one changes it."""
    user, password = make_user()
    before = um.users.get(user.id).password_hash
    new_password = random_password()

    with pytest.raises(WrongPassword):
        um.users.change_password(user.id, "not-" + password, new_password)
    with pytest.raises(ValidationError):
        um.users.change_password(user.id, "", new_password)
    assert um.users.get(user.id).password_hash == before
    assert len(auth_audit(um, "user.password_change_failed")) == 1

    um.users.change_password(user.id, password, new_password)
    assert um.users.get(user.id).password_hash != before
    assert um.auth.login(user.email, new_password).session_id
    assert len(auth_audit(um, "user.password_changed")) == 1
    assert um.outbox.last(to=user.email, template="password_changed") is not None


def test_password_change_wrong_password_shares_the_login_lockout() -> None:
    """SEC-PW-08 / SEC-RL-01: guessing the current password through change_password counts
    against the same lockout as login."""
    um = make_um(login_max_failures=3)
    user, password = create_user(um)
    for _ in range(3):
        with pytest.raises(WrongPassword):
            um.users.change_password(user.id, "not-" + password, random_password())
    with pytest.raises(RateLimited):
        um.users.change_password(user.id, password, random_password())
    with pytest.raises(InvalidCredentials):
        um.auth.login(user.email, password)


def test_password_verified_exactly_as_received(um: UserManagement) -> None:
    """SEC-PW-03: no truncation, case folding or trimming: near-misses of the password all
    fail, also beyond 72 bytes."""
    password = "Exact-Passphrase-" + "z" * 70 + "-end"  # > 72 bytes
    user, _ = create_user(um, password=password)
    near_misses = [
        password[:-1],
        password + "x",
        password.upper(),
        password.lower(),
        " " + password,
        password + " ",
        password[:72],
        password[:72] + "X" + password[73:],
    ]
    assert len(near_misses) < um.settings.login_max_failures  # the lockout stays out of it
    for attempt in near_misses:
        with pytest.raises(InvalidCredentials):
            um.auth.login(user.email, attempt)
    assert um.auth.login(user.email, password).session_id


def test_password_unicode_forms_are_the_same_password(um: UserManagement) -> None:
    """SEC-PW-12: composed and decomposed forms (NFKC) are one password."""
    composed = "caf\u00e9-au-lait-and-more"
    decomposed = "cafe\u0301-au-lait-and-more"
    user, _ = create_user(um, password=composed)
    assert um.auth.login(user.email, decomposed).session_id
    assert um.auth.login(user.email, composed).session_id


def test_password_no_hints_or_security_questions() -> None:
    """SEC-PW-13: neither the user model nor any input schema has hint / question fields."""
    names = {f.name for f in fields(User)}
    for model in (schemas.RegisterIn, schemas.ProfileUpdateIn, schemas.AdminUserUpdateIn):
        names |= set(model.model_fields)
    assert not [n for n in names if "hint" in n or "question" in n or "answer" in n]


def test_password_hashing_floor_outside_tests() -> None:
    """SEC-PW-09: the defaults meet argon2id m >= 19456 KiB, t >= 2, p = any >= 1, and a
    cheaper profile is refused outside ENVIRONMENT=test."""
    defaults = Settings.model_fields
    assert defaults["password_argon2_memory_kib"].default >= 19456
    assert defaults["password_argon2_time_cost"].default >= 2
    floor = {"password_argon2_memory_kib": 19456, "password_argon2_time_cost": 2}
    Settings.for_tests(environment="development", **floor)  # the floor itself is fine
    for cheap in ({"password_argon2_memory_kib": 19455}, {"password_argon2_time_cost": 1}):
        with pytest.raises(ConfigurationError):
            Settings.for_tests(environment="development", **(floor | cheap))
