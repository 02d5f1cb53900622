"""SendGrid delivery against a local HTTP stand-in for the v3 ``mail/send`` endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.email import free_port
from usermgmt import Settings, UserManagement
from usermgmt.backends.email.sendgrid import SendGridEmailSender
from usermgmt.errors import ConfigurationError, EmailDeliveryError
from usermgmt.ports import EmailMessage

API_KEY = "SG.test-key-do-not-leak"
FROM = "Example App <no-reply@example.com>"


@dataclass
class StandIn:
    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 202

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            state.requests.append(
                {
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "content_type": self.headers.get("Content-Type"),
                    "body": body,
                }
            )
            if self.path != "/v3/mail/send":
                status, reply = 404, {"errors": [{"message": "not found"}]}
            elif self.headers.get("Authorization") != f"Bearer {API_KEY}":
                status = 401
                reply = {"errors": [{"message": "The provided authorization grant is invalid"}]}
            else:
                status = state.status
                reply = {"errors": [{"message": "stand-in says so"}]} if status >= 300 else {}
            data = json.dumps(reply).encode() if reply else b""
            self.send_response(status)
            if status == 202:
                self.send_header("X-Message-Id", "stand-in-message-id")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    state = StandIn(port=free_port())
    server = ThreadingHTTPServer(("127.0.0.1", state.port), _handler(state))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


def _message(**overrides: Any) -> EmailMessage:
    values: dict[str, Any] = {
        "to": "alice@example.com",
        "subject": "Reset your password",
        "text": "Open https://app.example.com/reset?token=abc",
        "html": "<p><a href='https://app.example.com/reset?token=abc'>Reset</a></p>",
        "template": "reset_password",
    }
    values.update(overrides)
    return EmailMessage(**values)


def test_posts_the_v3_payload_with_bearer_key(stand_in: StandIn) -> None:
    sender = SendGridEmailSender(API_KEY, default_sender=FROM, host=stand_in.url)
    sender.send(_message())
    (request,) = stand_in.requests
    assert request["path"] == "/v3/mail/send"
    assert request["authorization"] == f"Bearer {API_KEY}"
    assert request["content_type"] == "application/json"
    assert request["body"] == {
        "personalizations": [{"to": [{"email": "alice@example.com"}]}],
        "from": {"email": "no-reply@example.com", "name": "Example App"},
        "subject": "Reset your password",
        "content": [
            {"type": "text/plain", "value": "Open https://app.example.com/reset?token=abc"},
            {
                "type": "text/html",
                "value": "<p><a href='https://app.example.com/reset?token=abc'>Reset</a></p>",
            },
        ],
    }


def test_text_only_message_has_one_part(stand_in: StandIn) -> None:
    sender = SendGridEmailSender(API_KEY, default_sender="bare@example.com", host=stand_in.url)
    sender.send(_message(html=None))
    body = stand_in.requests[0]["body"]
    assert body["from"] == {"email": "bare@example.com"}
    assert [part["type"] for part in body["content"]] == ["text/plain"]


def test_bad_key_is_permanent_and_never_echoed(stand_in: StandIn) -> None:
    sender = SendGridEmailSender("SG.wrong-key", default_sender=FROM, host=stand_in.url)
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message())
    assert info.value.transient is False
    assert "401" in str(info.value)
    assert "SG.wrong-key" not in str(info.value)
    assert "SG.wrong-key" not in repr(sender)


@pytest.mark.parametrize(("status", "transient"), [(500, True), (503, True), (429, True)])
def test_server_errors_and_throttling_are_transient(
    stand_in: StandIn, status: int, transient: bool
) -> None:
    stand_in.status = status
    sender = SendGridEmailSender(API_KEY, default_sender=FROM, host=stand_in.url)
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message())
    assert info.value.transient is transient
    assert str(status) in str(info.value)


@pytest.mark.parametrize("status", [400, 403])
def test_rejected_requests_are_permanent(stand_in: StandIn, status: int) -> None:
    stand_in.status = status
    sender = SendGridEmailSender(API_KEY, default_sender=FROM, host=stand_in.url)
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message())
    assert info.value.transient is False


def test_connection_refused_is_transient() -> None:
    port = free_port()  # nothing listens there
    sender = SendGridEmailSender(API_KEY, default_sender=FROM, host=f"http://127.0.0.1:{port}")
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message())
    assert info.value.transient is True
    assert API_KEY not in str(info.value)


def test_header_injection_is_refused(stand_in: StandIn) -> None:
    sender = SendGridEmailSender(API_KEY, default_sender=FROM, host=stand_in.url)
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message(subject="Hi\r\nBcc: victim@example.com"))
    assert info.value.transient is False
    assert stand_in.requests == []


def test_registry_builds_sendgrid_with_the_api_url(stand_in: StandIn) -> None:
    um = UserManagement(
        Settings.for_tests(
            email_provider="sendgrid",
            sendgrid_api_key=API_KEY,
            sendgrid_api_url=stand_in.url,
            email_from=FROM,
        )
    )
    assert isinstance(um.backends.email, SendGridEmailSender)
    um.users.register("bob@example.com", "correct horse battery staple 42")
    (request,) = stand_in.requests
    assert request["body"]["personalizations"] == [{"to": [{"email": "bob@example.com"}]}]


def test_sendgrid_needs_a_key() -> None:
    with pytest.raises(ConfigurationError, match="SENDGRID_API_KEY"):
        UserManagement(Settings.for_tests(email_provider="sendgrid"))
