"""Profile updates, own sessions and platform-superuser operations
(SEC-AC-03, SEC-AC-06, SEC-JW-09, SEC-PW-14)."""

from __future__ import annotations

from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.errors import (
    InvalidToken,
    NotFound,
    PasswordTooCommon,
    PasswordTooShort,
    PermissionDenied,
    ValidationError,
)
from usermgmt.ids import new_id
from usermgmt.schemas import MAX_METADATA_BYTES
from usermgmt.testing import create_user, make_um, random_password

# --- profile (SEC-AC-03) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        {"is_superuser": True},
        {"is_verified": True},
        {"is_active": False},
        {"must_reset_password": False},
        {"email": "other@example.com"},
        {"password_hash": "$argon2id$forged"},
        {"id": "00000000-0000-0000-0000-000000000000"},
        {"role": "owner"},
        {"org_id": "00000000-0000-0000-0000-000000000000"},
    ],
    ids=lambda f: next(iter(f)),
)
def test_users_update_profile_allowlist(
    field: dict[str, Any], um: UserManagement, auth_audit: Any
) -> None:
    """SEC-AC-03: only ``name`` and ``metadata`` can be changed; any other field (even next to
    an allowed one) is a ValidationError and nothing is written."""
    user, _ = create_user(um, verified=False)
    before = um.users.get(user.id)
    with pytest.raises(ValidationError) as info:
        um.users.update_profile(user.id, name="Renamed", **field)
    assert next(iter(field)) in str(info.value.to_dict())
    assert um.users.get(user.id) == before
    assert auth_audit(um, "user.updated") == []


def test_users_update_profile_allowed_fields(
    um: UserManagement, make_user: Any, auth_audit: Any
) -> None:
    """The allowlisted fields do change, and the change is audited with the field names."""
    user, _ = make_user()
    updated = um.users.update_profile(user.id, name="  Zoë  ", metadata={"theme": "dark"})
    assert (updated.name, updated.metadata) == ("Zoë", {"theme": "dark"})
    assert um.users.get(user.id).metadata == {"theme": "dark"}
    assert auth_audit(um, "user.updated")[0].metadata["fields"] == ["metadata", "name"]


def test_users_update_profile_metadata_size_limit(um: UserManagement, make_user: Any) -> None:
    """SEC-IV-01: metadata is bounded (16 KiB of JSON); a larger object is refused whole."""
    user, _ = make_user()
    fits = {"k": "v" * (MAX_METADATA_BYTES - 16)}
    um.users.update_profile(user.id, metadata=fits)
    too_big = {"k": "v" * MAX_METADATA_BYTES}
    with pytest.raises(ValidationError):
        um.users.update_profile(user.id, metadata=too_big)
    assert um.users.get(user.id).metadata == fits
    for bad in ({"x": float("nan")}, {"x": object()}):
        with pytest.raises(ValidationError):
            um.users.update_profile(user.id, metadata=bad)


def test_users_update_profile_name_validation(um: UserManagement, make_user: Any) -> None:
    """SEC-TK-10 / SEC-IV-01: names with control characters or over 200 characters fail."""
    user, _ = make_user()
    for name in ("Eve\r\nBcc: x@y.com", "tab\there", "x" * 201, "   "):
        with pytest.raises(ValidationError):
            um.users.update_profile(user.id, name=name)
    assert um.users.get(user.id).name is None


# --- own sessions (SEC-JW-09, SEC-AC-02) ------------------------------------------------------


def test_users_sessions_are_private(um: UserManagement, make_user: Any) -> None:
    """A user lists only their own sessions and cannot revoke another user's (NotFound, the
    same as a session that does not exist); their own revocation works at once."""
    alice, alice_password = make_user()
    mallory, mallory_password = make_user()
    alice_pair = um.auth.login(alice.email, alice_password)
    mallory_pair = um.auth.login(mallory.email, mallory_password)
    mallory_other = um.auth.login(mallory.email, mallory_password)

    assert [s.id for s in um.users.list_sessions(alice.id)] == [alice_pair.session_id]
    listed = [s.id for s in um.users.list_sessions(mallory.id)]
    assert listed == [mallory_other.session_id, mallory_pair.session_id]  # newest first

    with pytest.raises(NotFound) as foreign:
        um.users.revoke_session(mallory.id, alice_pair.session_id)
    with pytest.raises(NotFound) as missing:
        um.users.revoke_session(mallory.id, new_id())
    assert foreign.value.to_dict() == missing.value.to_dict()
    assert um.auth.verify_access_token(alice_pair.access_token).user_id == alice.id

    um.users.revoke_session(mallory.id, mallory_pair.session_id)
    with pytest.raises(InvalidToken):
        um.auth.verify_access_token(mallory_pair.access_token)
    with pytest.raises(InvalidToken):
        um.auth.refresh(mallory_pair.refresh_token)
    assert [s.id for s in um.users.list_sessions(mallory.id)] == [mallory_other.session_id]


# --- platform superuser (SEC-AC-06, SEC-PW-14) ------------------------------------------------


def _admin_calls(um: UserManagement, actor: Any, target: Any) -> dict[str, Any]:
    return {
        "list_users": lambda: um.admin.list_users(actor),
        "get_user": lambda: um.admin.get_user(actor, target),
        "update_user": lambda: um.admin.update_user(actor, target, is_superuser=True),
        "delete_user": lambda: um.admin.delete_user(actor, target),
    }


def test_users_admin_requires_superuser(um: UserManagement, auth_audit: Any) -> None:
    """SEC-AC-06: a regular user (or a deactivated superuser) gets PermissionDenied on every
    admin operation; nothing changes and no admin event is written."""
    regular, _ = create_user(um)
    former, _ = create_user(um, superuser=True)
    boss, _ = create_user(um, superuser=True)
    um.admin.update_user(boss.id, former.id, is_active=False)
    target, _ = create_user(um)
    before = um.users.get(target.id)
    events_before = len(auth_audit(um))

    for actor in (regular.id, former.id, new_id()):
        for call in _admin_calls(um, actor, target.id).values():
            with pytest.raises(PermissionDenied):
                call()
    assert um.users.get(target.id) == before
    assert len(auth_audit(um)) == events_before


def test_users_admin_operations_are_audited(um: UserManagement, auth_audit: Any) -> None:
    """SEC-AC-06: every superuser list/get/update/delete writes exactly one ``admin.*`` event
    naming the actor (and the target)."""
    boss, _ = create_user(um, superuser=True)
    target, _ = create_user(um, "target@example.com")

    page = um.admin.list_users(boss.id, email_prefix="TARGET")
    assert [u.id for u in page.items] == [target.id]
    assert um.admin.get_user(boss.id, target.id).id == target.id
    updated = um.admin.update_user(boss.id, target.id, name="Renamed", is_verified=True)
    assert updated.name == "Renamed"
    um.admin.delete_user(boss.id, target.id)

    admin_events = [e for e in auth_audit(um) if e.action.startswith("admin.")]
    assert [e.action for e in admin_events] == [
        "admin.users_listed",
        "admin.user_viewed",
        "admin.user_updated",
    ]
    assert all(e.actor_user_id == boss.id for e in admin_events)
    assert admin_events[0].metadata["email_prefix"] == "target"
    assert [e.target_id for e in admin_events[1:]] == [str(target.id)] * 2
    assert admin_events[2].metadata["fields"] == ["is_verified", "name"]
    [deactivated] = auth_audit(um, "user.deactivated")
    assert deactivated.actor_user_id == boss.id
    assert um.users.get(target.id).is_active is False


def test_users_admin_update_refuses_unknown_fields(um: UserManagement) -> None:
    """SEC-AC-03: the admin update is an allowlist too (no password hash, no email)."""
    boss, _ = create_user(um, superuser=True)
    target, _ = create_user(um)
    before = um.users.get(target.id)
    for field in ({"password_hash": "$argon2id$forged"}, {"email": "x@example.com"}):
        with pytest.raises(ValidationError):
            um.admin.update_user(boss.id, target.id, **field)
    assert um.users.get(target.id) == before


def test_users_create_superuser_obeys_the_password_policy(auth_audit: Any) -> None:
    """SEC-PW-14: the bootstrap superuser is created explicitly, with a password that passes
    the policy; a refused password creates nothing."""
    um = make_um()
    with pytest.raises(PasswordTooShort):
        um.admin.create_superuser("root@example.com", "short-pass")
    with pytest.raises(PasswordTooCommon):
        um.admin.create_superuser("root@example.com", "1qaz2wsx3edc4rfv")
    with pytest.raises(PasswordTooCommon):
        um.admin.create_superuser("rootadministrator@example.com", "rootadministrator")
    assert um.kernel.read(lambda uow: uow.users.count()) == 0

    password = random_password()
    root = um.admin.create_superuser("root@example.com", password)
    assert (root.is_superuser, root.is_verified, root.is_active) == (True, True, True)
    assert root.password_hash is not None
    assert root.password_hash.startswith("$argon2id$")
    assert um.auth.login("root@example.com", password).session_id
    assert [e.target_id for e in auth_audit(um, "admin.superuser_created")] == [str(root.id)]
