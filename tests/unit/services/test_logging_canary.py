"""SEC-LG-03/04: no secret reaches a log record or an audit row; CR/LF cannot forge events."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.errors import InvalidToken, UserMgmtError, ValidationError
from usermgmt.models import AuditEvent
from usermgmt.testing import create_user, extract_token


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[_Collect]:
    """Every log record of every logger, at DEBUG, while the test runs."""
    handler = _Collect()
    root = logging.getLogger()
    old_level = root.level
    quiet = {
        name: lg.level
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and lg.level > logging.DEBUG
    }
    for name in quiet:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


def _canary() -> str:
    return f"CANARY-PW-{secrets.token_urlsafe(12)}"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _record_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args), repr(record.__dict__)]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
    return "\n".join(parts)


def _audit(um: UserManagement) -> list[AuditEvent]:
    store = um.backends.uow.store
    with store.lock:
        return sorted(store.audit.values(), key=lambda e: e.id)


def test_log_canary_no_secrets(um: UserManagement, captured: _Collect) -> None:
    secrets_seen: dict[str, str] = {}

    def remember(label: str, value: str) -> str:
        secrets_seen[label] = value
        return value

    # register + verify
    password = remember("password", _canary())
    email = "canary@example.com"
    user = um.users.register(email, password, name="Canary").user
    assert user is not None
    verify = remember("verify token", extract_token(um.outbox.last(to=email)))
    um.users.verify_email(verify)
    # a failed login with a sentinel as the wrong password, then a real one
    with pytest.raises(UserMgmtError):
        um.auth.login(email, remember("wrong password", _canary()))
    pair = um.auth.login(email, password)
    remember("access token", pair.access_token)
    remember("refresh token", pair.refresh_token)
    um.auth.verify_access_token(pair.access_token)
    # refresh, then replay the rotated token (reuse detection logs and audits)
    newer = um.auth.refresh(pair.refresh_token)
    remember("refreshed access", newer.access_token)
    remember("refreshed refresh", newer.refresh_token)
    with pytest.raises(InvalidToken):
        um.auth.refresh(pair.refresh_token)
    with pytest.raises(InvalidToken):
        um.auth.verify_access_token(pair.access_token[:-4] + "AAAA")
    # forgot + reset
    um.users.request_password_reset(email)
    reset = remember(
        "reset token", extract_token(um.outbox.last(to=email, template="password_reset"))
    )
    reset_password = remember("reset password", _canary())
    um.users.reset_password(reset, reset_password)
    # change password (a wrong current one first)
    changed = remember("changed password", _canary())
    with pytest.raises(UserMgmtError):
        um.users.change_password(user.id, remember("wrong current", _canary()), changed)
    um.users.change_password(user.id, reset_password, changed)
    # a rejected password never echoes back
    for bad in ("CANARY-PW-" + "x" * 2000, "CANARY-PW-s"):
        with pytest.raises(ValidationError) as info:
            um.users.register("another@example.com", remember(f"rejected {len(bad)}", bad))
        assert bad not in repr(info.value.to_dict())
        assert bad not in str(info.value)
    # invite + accept
    org = um.organizations.create(user.id, "Canary Org")
    friend, friend_password = create_user(um, "friend@example.com")
    remember("friend password", friend_password)
    um.invitations.create(user.id, org.id, friend.email)
    invite = remember("invite token", extract_token(um.outbox.last(to=friend.email)))
    um.invitations.accept(friend.id, invite)
    final = um.auth.login(email, changed)
    remember("final access", final.access_token)
    remember("final refresh", final.refresh_token)
    um.auth.logout(user.id, final.session_id)

    # hashes of every token, and the stored password hashes, are secrets too
    for label, value in list(secrets_seen.items()):
        if "token" in label or "access" in label or "refresh" in label:
            secrets_seen[f"sha256({label})"] = _sha(value)
    store = um.backends.uow.store
    for stored in store.users.values():
        assert stored.password_hash is not None
        secrets_seen[f"password hash of {stored.email}"] = stored.password_hash

    assert captured.records, "the flows should have logged something"
    log_text = [(r.name, _record_text(r)) for r in captured.records]
    audit_text = [repr(e) for e in _audit(um)]
    assert len(audit_text) >= 15
    leaks = [
        f"{label} in log {name}"
        for label, value in secrets_seen.items()
        for name, text in log_text
        if value in text
    ] + [
        f"{label} in audit {text[:80]}"
        for label, value in secrets_seen.items()
        for text in audit_text
        if value in text
    ]
    assert leaks == []
    # and nothing that merely looks like a sentinel password or a JWT
    assert not any("CANARY-PW-" in text for _, text in log_text)
    assert not any("CANARY-PW-" in text for text in audit_text)
    assert not any("eyJ" in text for text in audit_text)


# --- SEC-LG-04: CR/LF injection ---------------------------------------------------------------------

INJECTION = 'Mallory\n{"event":"x"}'


def test_log_injection_in_names_is_rejected(um: UserManagement) -> None:
    user, _ = create_user(um)
    org = um.organizations.create(user.id, "Acme")
    events_before = len(_audit(um))
    counts_before = um.backends.uow.store.counts()
    calls: list[Any] = [
        lambda: um.users.register("mallory@example.com", _canary(), name=INJECTION),
        lambda: um.users.update_profile(user.id, name=INJECTION),
        lambda: um.organizations.create(user.id, INJECTION),
        lambda: um.organizations.update(user.id, org.id, name=INJECTION),
        lambda: um.roles.create(user.id, org.id, INJECTION, []),
        lambda: um.invitations.create(user.id, org.id, "a@b.com\r\nBcc: x@y.com"),
        lambda: um.invitations.create(user.id, org.id, 'a@b.com\n{"event":"x"}'),
    ]
    for call in calls:
        with pytest.raises(ValidationError):
            call()
    assert len(_audit(um)) == events_before
    assert um.backends.uow.store.counts() == counts_before
    assert um.users.get(user.id).name is None


def test_log_injection_in_login_email_is_one_event(um: UserManagement) -> None:
    before = len(_audit(um))
    forged = 'victim@example.com\n{"event":"user.login","actor":"admin"}'
    with pytest.raises(UserMgmtError):
        um.auth.login(forged, "whatever password at all")
    new = _audit(um)[before:]
    assert [e.action for e in new] == ["user.login_failed"]
    assert new[0].metadata.get("email", "").count("\n") <= 1  # kept as data, not split
    assert not any(e.action == "user.login" for e in _audit(um))
