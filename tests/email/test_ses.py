"""SES delivery against moto's server on loopback."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.email import free_port
from usermgmt import Settings, UserManagement
from usermgmt.backends.email.ses import SesEmailSender
from usermgmt.errors import ConfigurationError, EmailDeliveryError
from usermgmt.ports import EmailMessage

REGION = "eu-west-1"
KEY_ID = "testing-key-id"
SECRET = "testing-secret-do-not-leak"
FROM = "Example App <no-reply@example.com>"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def endpoint(moto_endpoint: str) -> str:
    # a clean moto state per test (identities and sent mail)
    url = f"{moto_endpoint}/moto-api/reset"
    request = urllib.request.Request(url, method="POST")  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        assert response.status == 200
    return moto_endpoint


def _ses(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "ses",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


def _sent(endpoint: str) -> list[dict[str, Any]]:
    """The messages moto's SES accepted (``source``, ``destinations``, ``subject``, ``body``)."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=5) as response:  # noqa: S310
        data = json.loads(response.read())
    messages: list[dict[str, Any]] = data["ses"]["Message"]
    return messages


def _sender(endpoint: str, **kwargs: Any) -> SesEmailSender:
    values: dict[str, Any] = {
        "region": REGION,
        "default_sender": FROM,
        "endpoint_url": endpoint,
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        "timeout": 3.0,
    }
    values.update(kwargs)
    return SesEmailSender(**values)


def _message(**overrides: Any) -> EmailMessage:
    values: dict[str, Any] = {
        "to": "alice@example.com",
        "subject": "You are invited",
        "text": "Accept at https://app.example.com/accept?token=abc",
        "html": "<p><a href='https://app.example.com/accept?token=abc'>Accept</a></p>",
        "template": "invitation",
    }
    values.update(overrides)
    return EmailMessage(**values)


def test_unverified_sender_is_permanently_rejected(endpoint: str) -> None:
    with pytest.raises(EmailDeliveryError) as info:
        _sender(endpoint).send(_message())
    assert info.value.transient is False
    assert "MessageRejected" in str(info.value)
    assert SECRET not in str(info.value)
    assert _sent(endpoint) == []


def test_verified_sender_delivers_text_and_html(endpoint: str) -> None:
    _ses(endpoint).verify_email_identity(EmailAddress="no-reply@example.com")
    sender = _sender(endpoint)
    sender.send(_message())
    assert sender.last_message_id
    (sent,) = _sent(endpoint)
    assert sent["id"] == sender.last_message_id
    assert sent["source"] == FROM
    assert sent["destinations"] == {"ToAddresses": ["alice@example.com"]}
    assert sent["subject"] == "You are invited"
    # moto keeps the HTML part (the Text part is sent alongside it)
    assert "accept?token=abc" in sent["body"]


def test_unreachable_endpoint_is_transient() -> None:
    sender = _sender(f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message())
    assert info.value.transient is True
    assert SECRET not in str(info.value)
    assert SECRET not in repr(sender)


def test_header_injection_is_refused(endpoint: str) -> None:
    _ses(endpoint).verify_email_identity(EmailAddress="no-reply@example.com")
    with pytest.raises(EmailDeliveryError) as info:
        _sender(endpoint).send(_message(to="alice@example.com\nBcc: victim@example.com"))
    assert info.value.transient is False
    assert _sent(endpoint) == []


def test_registry_builds_ses_honouring_region_and_endpoint(endpoint: str) -> None:
    _ses(endpoint).verify_email_identity(EmailAddress="no-reply@example.com")
    um = UserManagement(
        Settings.for_tests(
            email_provider="ses",
            email_from=FROM,
            aws_ses_region=REGION,
            aws_endpoint_url=endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )
    )
    assert isinstance(um.backends.email, SesEmailSender)
    assert um.backends.email.region == REGION
    um.users.register("carol@example.com", "correct horse battery staple 42")
    (sent,) = _sent(endpoint)
    assert sent["destinations"] == {"ToAddresses": ["carol@example.com"]}


def test_ses_needs_a_region() -> None:
    with pytest.raises(ConfigurationError, match="AWS_SES_REGION"):
        UserManagement(Settings.for_tests(email_provider="ses"))
