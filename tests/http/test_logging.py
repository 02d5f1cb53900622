"""Structured logs on both adapters: JSON records with the request id and the user id;
no password, token, JWT or token hash in any record (SEC-LG-03, the log canary); CR/LF
in user input never forges a record (SEC-LG-04); redaction; configuration.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http.conftest import BOOM_PATH
from usermgmt.config import Settings
from usermgmt.observability.context import (
    bind_request,
    current_request_id,
    current_user_id,
    set_user_id,
    unbind_request,
)
from usermgmt.observability.logging import (
    REDACTED,
    ConsoleFormatter,
    ContextFilter,
    JsonFormatter,
    RedactingFilter,
    configure_logging,
    redact_text,
)

ROOT = Path(__file__).resolve().parent.parent.parent


class Capture(logging.Handler):
    """Every record of every logger, at DEBUG, as the JSON formatter writes it (with the
    context filter, as ``configure_logging`` installs it, but *without* the redacting
    filter: the formatter alone must keep secrets out)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.raw: list[str] = []
        self.addFilter(ContextFilter())
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.raw.append(_raw_text(record))  # before formatting: what the code logged
        self.records.append(record)
        self.lines.append(self.format(record))

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


def _raw_text(record: logging.LogRecord) -> str:
    parts = [str(record.msg), repr(record.args), repr(record.__dict__)]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
    return "\n".join(parts)


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
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


def _access(captured: Capture) -> list[dict[str, Any]]:
    return [d for d in captured.documents() if d["logger"] == "usermgmt.access"]


# --- request id and user id -------------------------------------------------------------------


def test_records_carry_the_request_id_and_the_user_id(api, captured):
    account = api.account()

    api.get("/users/me", token=account.token, headers={"X-Request-ID": "trace-me-42"})
    api.get("/health/live", headers={"X-Request-ID": "anonymous-7"})

    me, live = _access(captured)
    assert me["request_id"] == "trace-me-42"
    assert me["user_id"] == account.id
    assert me["level"] == "info"
    assert me["message"] == "GET /users/me 200"
    assert me["route"] == "/users/me"
    assert me["status"] == 200
    assert isinstance(me["duration_ms"], float)
    assert set(me) >= {"timestamp", "level", "logger", "message", "request_id", "user_id"}
    assert live["request_id"] == "anonymous-7"
    assert live["user_id"] is None
    assert live["level"] == "debug"  # probes are logged at DEBUG only
    # nothing leaks out of the request
    assert current_request_id() is None
    assert current_user_id() is None


def test_an_unhandled_error_is_logged_with_the_request_id(api, captured):
    response = api.get(BOOM_PATH, headers={"X-Request-ID": "boom-1"})

    assert response.status_code == 500
    errors = [d for d in captured.documents() if d["level"] == "error"]
    assert errors
    assert all(d["request_id"] == "boom-1" for d in errors)
    assert any("RuntimeError" in d.get("exception", "") for d in errors)


def test_the_user_id_set_in_a_worker_thread_reaches_the_whole_request():
    tokens = bind_request("rid-1")
    try:
        import threading

        worker = threading.Thread(target=lambda: set_user_id("u-1"))
        worker.start()
        worker.join()
        assert current_user_id() is None  # a thread has its own context...

        import contextvars

        contextvars.copy_context().run(set_user_id, "u-2")  # ... a copy shares the request
        assert current_user_id() == "u-2"
        assert current_request_id() == "rid-1"
    finally:
        unbind_request(tokens)
    assert current_request_id() is None
    assert current_user_id() is None


# --- the log canary (SEC-LG-03) ---------------------------------------------------------------


def _canary() -> str:
    return f"CANARY-PW-{secrets.token_urlsafe(12)}"


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def test_log_canary_no_secret_in_any_record(api, captured):
    seen: dict[str, str] = {}

    def remember(label: str, value: str) -> str:
        seen[label] = value
        return value

    email = "canary@example.com"
    password = remember("password", _canary())
    assert api.post("/auth/register", json={"email": email, "password": password,
                                            "name": "Canary"}).status_code in (201, 202)  # fmt: skip
    verify = remember("verify token", api.mail_token(email, "verify_email"))
    assert api.post("/auth/verify-email", json={"token": verify}).status_code == 200
    assert api.post("/auth/verify-email", json={"token": verify}).status_code == 400  # reused
    wrong = remember("wrong password", _canary())
    assert api.post("/auth/login", json={"email": email, "password": wrong}).status_code == 401
    login = api.post("/auth/login", json={"email": email, "password": password}).json()
    remember("access token", login["access_token"])
    remember("refresh token", login["refresh_token"])
    refreshed = api.post("/auth/refresh", json={"refresh_token": login["refresh_token"]}).json()
    remember("refreshed access", refreshed["access_token"])
    remember("refreshed refresh", refreshed["refresh_token"])
    replay = api.post("/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert replay.status_code == 401  # reuse detected: logged and audited
    assert api.get("/users/me", token=login["access_token"][:-4] + "AAAA").status_code == 401

    assert api.post("/auth/password/forgot", json={"email": email}).status_code == 202
    reset = remember("reset token", api.mail_token(email, "password_reset"))
    reset_password = remember("reset password", _canary())
    assert api.post("/auth/password/reset", json={"token": reset,
                                                  "password": reset_password}).status_code == 204  # fmt: skip
    signed_in = api.post("/auth/login", json={"email": email, "password": reset_password}).json()
    token = remember("access after reset", signed_in["access_token"])
    remember("refresh after reset", signed_in["refresh_token"])
    changed = remember("changed password", _canary())
    bad_current = remember("wrong current password", _canary())
    assert api.post("/users/me/password", token=token,
                    json={"current_password": bad_current, "new_password": changed}).status_code == 400  # fmt: skip
    assert api.post("/users/me/password", token=token,
                    json={"current_password": reset_password, "new_password": changed}).status_code == 204  # fmt: skip
    too_long = remember("too long password", "CANARY-PW-" + "y" * 5000)
    assert api.post("/auth/register", json={"email": "long@example.com",
                                            "password": too_long}).status_code in (413, 422)  # fmt: skip

    org = api.post("/organizations", token=token, json={"name": "Canary Org"}).json()["id"]
    friend = api.account("friend@example.com")
    remember("friend password", friend.password)
    remember("friend token", friend.token)
    remember("friend refresh", friend.refresh_token)
    invited = api.post(f"/organizations/{org}/invitations", token=token,
                       json={"email": friend.email, "roles": ["member"]})  # fmt: skip
    assert invited.status_code == 201, invited.text
    invitation = remember("invitation token", api.mail_token(friend.email, "invitation"))
    accepted = api.post("/invitations/accept", token=friend.token, json={"token": invitation})
    assert accepted.status_code in (200, 201), accepted.text
    assert api.post("/auth/logout", token=token).status_code == 204

    # every token's hash and every stored password hash are secrets too
    for label, value in list(seen.items()):
        if "password" not in label:
            seen[f"sha256({label})"] = _sha256(value)
    for stored in api.um.backends.uow.store.users.values():
        if stored.password_hash:
            seen[f"password hash of {stored.email}"] = stored.password_hash

    assert len(captured.records) >= 20, "the flow should have logged (access records at least)"
    formatted = "\n".join(captured.lines)
    raw = "\n".join(captured.raw)
    leaks = [f"{label} (formatted)" for label, value in seen.items() if value in formatted]
    leaks += [f"{label} (as logged)" for label, value in seen.items() if value in raw]
    assert leaks == []
    assert "CANARY-PW-" not in formatted
    assert "CANARY-PW-" not in raw
    assert "eyJ" not in formatted  # no JWT at all, not even someone else's
    assert "$argon2" not in formatted
    for line in captured.lines:  # one JSON object per record
        assert "\n" not in line
        json.loads(line)


# --- CR/LF (SEC-LG-04) ------------------------------------------------------------------------

FORGED = 'Mallory\n{"level":"error","message":"forged"}\r\n'


def test_a_newline_in_user_input_stays_in_one_record(api, captured):
    response = api.post(
        "/auth/register",
        json={"email": "mallory@example.com", "password": _canary(), "name": FORGED},
    )
    logging.getLogger("usermgmt.test").warning(
        "profile name %s", FORGED, extra={"profile_name": FORGED}
    )

    assert response.status_code == 422  # control characters are refused anyway
    assert captured.lines
    for line in captured.lines:
        assert "\n" not in line
        assert "\r" not in line
    last = json.loads(captured.lines[-1])
    assert last["level"] == "warn"
    assert last["message"] == "profile name " + FORGED
    assert last["profile_name"] == FORGED
    assert not any(d.get("message") == "forged" for d in captured.documents())


def test_the_console_format_escapes_newlines_too():
    record = logging.LogRecord("usermgmt.test", logging.INFO, __file__, 1, "hi %s", (FORGED,), None)
    line = ConsoleFormatter().format(record)

    assert "\n" not in line
    assert "\r" not in line
    assert "Mallory\\n{" in line


# --- redaction ----------------------------------------------------------------------------------


def _format(message: str, *args: Any, **extra: Any) -> dict[str, Any]:
    record = logging.LogRecord("usermgmt.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    document: dict[str, Any] = json.loads(JsonFormatter().format(record))
    return document


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
OPAQUE = secrets.token_urlsafe(32)
DIGEST = _sha256(OPAQUE)


@pytest.mark.parametrize(
    "text",
    [
        f"token {JWT} rejected",
        f"reset link https://app.example/reset-password?token={OPAQUE}",
        f"token={OPAQUE}&x=1",
        f"lookup {DIGEST}",
        f"Authorization: Bearer {OPAQUE[:20]}",
        "postgresql://app:s3cr3t-pw@db:5432/users",
        "hash $argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
    ],
)
def test_secrets_in_messages_are_masked(text):
    document = _format("%s", text)

    assert REDACTED in document["message"]
    for secret in (JWT, OPAQUE, DIGEST, OPAQUE[:20], "s3cr3t-pw", "aGFzaGhhc2hoYXNoaGFzaA"):
        assert secret not in document["message"]


def test_secret_fields_are_masked_wherever_they_are():
    document = _format(
        "login",
        password="hunter2 hunter2",
        new_password="x",
        refresh_token="y",
        token_hash="z",
        headers={"Authorization": "Bearer abc", "Cookie": "session=1", "Accept": "*/*"},
        body={"user": {"api_key": "k", "email": "a@example.com"}},
        email="a@example.com",
        attempts=3,
    )

    for key in ("password", "new_password", "refresh_token", "token_hash"):
        assert document[key] == REDACTED
    assert document["headers"] == {
        "Authorization": REDACTED,
        "Cookie": REDACTED,
        "Accept": "*/*",
    }
    assert document["body"] == {"user": {"api_key": REDACTED, "email": "a@example.com"}}
    assert document["email"] == "a@example.com"
    assert document["attempts"] == 3


def _fail() -> None:
    raise ValueError(f"bad token {OPAQUE}\nsecond line")


def test_exceptions_are_one_redacted_field():
    try:
        _fail()
    except ValueError:
        record = logging.LogRecord(
            "usermgmt.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    document = json.loads(line)

    assert "\n" not in line
    assert "ValueError" in document["exception"]
    assert OPAQUE not in line


def test_the_redacting_filter_scrubs_records_for_any_handler():
    record = logging.LogRecord(
        "usermgmt.test", logging.INFO, __file__, 1, "refresh %s", (JWT,), None
    )
    record.__dict__["secret"] = "s"
    assert RedactingFilter().filter(record) is True

    assert record.getMessage() == f"refresh {REDACTED}"
    assert record.__dict__["secret"] == REDACTED


def test_ordinary_text_is_left_alone():
    text = "GET /users/0f8f2a9c-6f3e-4c1e-9d1e-1b2c3d4e5f60 200 in 3.2ms (request abc-123)"
    assert redact_text(text) == text


# --- configuration ----------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    servers = {
        name: (list(lg.handlers), lg.propagate)
        for name in ("uvicorn", "uvicorn.access")
        for lg in [logging.getLogger(name)]
    }
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        for name, (old, propagate) in servers.items():
            lg = logging.getLogger(name)
            for handler in old:
                lg.addHandler(handler)
            lg.propagate = propagate


def test_configure_logging_installs_one_json_handler(restore_logging):
    stream = io.StringIO()
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.addHandler(logging.NullHandler())
    uvicorn_access.propagate = False

    configure_logging(Settings.for_tests(log_level="warn"), stream=io.StringIO())
    handler = configure_logging(Settings.for_tests(log_level="debug"), stream=stream)
    logging.getLogger("usermgmt.test").debug("hello %s", "world", extra={"token": OPAQUE})
    uvicorn_access.info("GET /health 200")

    ours = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    assert ours == [handler]  # configured twice, installed once
    assert logging.getLogger().level == logging.DEBUG
    lines = stream.getvalue().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "hello world"
    assert first["token"] == REDACTED
    assert first["level"] == "debug"
    assert second["logger"] == "uvicorn.access"
    assert uvicorn_access.propagate is True


def test_configure_logging_console_format(restore_logging):
    stream = io.StringIO()
    configure_logging(Settings.for_tests(log_format="console"), stream=stream)
    logging.getLogger("usermgmt.test").info("plain")

    assert " INFO usermgmt.test plain" in stream.getvalue()


def test_importing_the_library_configures_no_logging():
    code = (
        "import logging, usermgmt, usermgmt_fastapi, usermgmt_flask\n"
        "from usermgmt import UserManagement\n"
        "UserManagement.in_memory()\n"
        "root = logging.getLogger()\n"
        "print(len(root.handlers), root.level)\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.split() == ["0", str(logging.WARNING)]
