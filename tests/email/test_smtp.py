"""SMTP delivery against an aiosmtpd sink on loopback."""

from __future__ import annotations

import email
import email.policy
import smtplib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage as MimeMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.email import free_port
from usermgmt import Settings, UserManagement
from usermgmt.backends.email.smtp import SmtpEmailSender
from usermgmt.errors import ConfigurationError, EmailDeliveryError
from usermgmt.ports import EmailMessage

# the AUTH stand-in runs without TLS on loopback on purpose; aiosmtpd warns about that
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

FROM = "Example App <no-reply@example.com>"


@dataclass
class Sink:
    """Keeps every message the server accepted."""

    messages: list[tuple[str, list[str], MimeMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, MimeMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def wait(self, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.messages) >= count


@dataclass
class Server:
    sink: Sink
    controller: Controller
    port: int


def _start(**kwargs: Any) -> Server:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return Server(sink, controller, port)


@pytest.fixture
def smtp_server() -> Iterator[Server]:
    server = _start()
    yield server
    server.controller.stop()


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login == b"mailer" and auth_data.password == b"p@ss:w/rd"
    )
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


@pytest.fixture
def auth_server() -> Iterator[Server]:
    server = _start(authenticator=_authenticator, auth_require_tls=False, auth_required=True)
    yield server
    server.controller.stop()


def _message(**overrides: Any) -> EmailMessage:
    values: dict[str, Any] = {
        "to": "alice@example.com",
        "subject": "Verify your email",
        "text": "Open https://app.example.com/verify?token=abc",
        "html": "<p>Open <a href='https://app.example.com/verify?token=abc'>this</a></p>",
        "template": "verify_email",
    }
    values.update(overrides)
    return EmailMessage(**values)


def test_delivers_multipart_text_and_html(smtp_server: Server) -> None:
    sender = SmtpEmailSender.from_url(f"smtp://127.0.0.1:{smtp_server.port}", default_sender=FROM)
    sender.send(_message())
    smtp_server.sink.wait()
    mail_from, rcpt_tos, mime = smtp_server.sink.messages[0]
    assert mail_from == "no-reply@example.com"
    assert rcpt_tos == ["alice@example.com"]
    assert mime["From"] == FROM
    assert mime["To"] == "alice@example.com"
    assert mime["Subject"] == "Verify your email"
    assert mime["Message-ID"]
    assert mime.get_content_type() == "multipart/alternative"
    text = mime.get_body(preferencelist=("plain",))
    html = mime.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    assert "token=abc" in text.get_content()
    assert "<a href=" in html.get_content()


def test_text_only_and_explicit_sender(smtp_server: Server) -> None:
    sender = SmtpEmailSender.from_url(
        f"smtp://127.0.0.1:{smtp_server.port}?timeout=5", default_sender=FROM
    )
    sender.send(_message(html=None, sender="Other <other@example.org>"))
    smtp_server.sink.wait()
    mail_from, _, mime = smtp_server.sink.messages[0]
    assert mail_from == "other@example.org"
    assert mime.get_content_type() == "text/plain"


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("to", "alice@example.com\r\nBcc: victim@example.com"),
        ("subject", "Hi\nBcc: victim@example.com"),
        ("sender", "a@example.com\rBcc: victim@example.com"),
    ],
)
def test_header_injection_is_refused_before_connecting(
    smtp_server: Server, field_name: str, value: str
) -> None:
    sender = SmtpEmailSender.from_url(f"smtp://127.0.0.1:{smtp_server.port}", default_sender=FROM)
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message(**{field_name: value}))
    assert info.value.transient is False
    assert smtp_server.sink.messages == []


def test_starttls_requested_but_not_offered_is_a_clear_permanent_error(
    smtp_server: Server,
) -> None:
    sender = SmtpEmailSender.from_url(
        f"smtp://127.0.0.1:{smtp_server.port}?starttls=true", default_sender=FROM
    )
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message())
    assert info.value.transient is False
    assert "STARTTLS" in info.value.detail
    assert smtp_server.sink.messages == []  # never fell back to plain text


def test_auth_with_good_credentials_delivers(auth_server: Server) -> None:
    sender = SmtpEmailSender.from_url(
        f"smtp://mailer:p%40ss%3Aw%2Frd@127.0.0.1:{auth_server.port}", default_sender=FROM
    )
    sender.send(_message())
    auth_server.sink.wait()


def test_bad_password_is_permanent_and_not_echoed(auth_server: Server) -> None:
    sender = SmtpEmailSender.from_url(
        f"smtp://mailer:wrong-secret@127.0.0.1:{auth_server.port}", default_sender=FROM
    )
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message())
    assert info.value.transient is False
    assert "wrong-secret" not in str(info.value)
    assert "wrong-secret" not in repr(sender)
    assert auth_server.sink.messages == []


def test_missing_auth_is_refused_permanently(auth_server: Server) -> None:
    sender = SmtpEmailSender.from_url(f"smtp://127.0.0.1:{auth_server.port}", default_sender=FROM)
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message())
    assert info.value.transient is False  # 530 authentication required


def test_stopped_sink_is_transient() -> None:
    server = _start()
    server.controller.stop()
    sender = SmtpEmailSender.from_url(
        f"smtp://127.0.0.1:{server.port}?timeout=2", default_sender=FROM
    )
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message())
    assert info.value.transient is True


def test_smtps_against_a_plain_server_is_transient_not_a_hang(smtp_server: Server) -> None:
    sender = SmtpEmailSender.from_url(
        f"smtps://127.0.0.1:{smtp_server.port}?timeout=2", default_sender=FROM
    )
    with pytest.raises(EmailDeliveryError):
        sender.send(_message())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", ("none", 25)),
        ("smtp://mail.example.com?starttls=true", ("starttls", 587)),
        ("smtp://mail.example.com:2525?starttls=false", ("none", 2525)),
        ("smtps://u:p@mail.example.com", ("ssl", 465)),
    ],
)
def test_url_forms(url: str, expected: tuple[str, int]) -> None:
    sender = SmtpEmailSender.from_url(url, default_sender=FROM)
    assert (sender.security, sender.port) == expected
    assert ":p@" not in repr(sender)


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.com",
        "smtp://",
        "smtp://mail.example.com?starttls=maybe",
        "smtps://mail.example.com?starttls=true",
        "smtp://mail.example.com:notaport",
        "smtp://mail.example.com?timeout=0",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        SmtpEmailSender.from_url(url, default_sender=FROM)


def test_smtp_needs_smtp_url() -> None:
    with pytest.raises(ConfigurationError, match="SMTP_URL"):
        UserManagement(Settings.for_tests(email_provider="smtp"))


def test_registry_builds_smtp_and_registration_mail_arrives(smtp_server: Server) -> None:
    um = UserManagement(
        Settings.for_tests(
            email_provider="smtp",
            smtp_url=f"smtp://127.0.0.1:{smtp_server.port}",
            email_from=FROM,
        )
    )
    assert isinstance(um.backends.email, SmtpEmailSender)
    result = um.users.register("new.user@example.com", "correct horse battery staple 42")
    assert result.user is not None
    smtp_server.sink.wait()
    mail_from, rcpt_tos, mime = smtp_server.sink.messages[0]
    assert rcpt_tos == ["new.user@example.com"]
    assert mail_from == "no-reply@example.com"
    text = mime.get_body(preferencelist=("plain",))
    assert text is not None
    assert "token=" in text.get_content()


def test_smtplib_is_the_only_dependency() -> None:
    assert smtplib.SMTP is not None


# --- TLS: verification is on by default -----------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (cert path, key path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def starttls_server(certificate: tuple[str, str]) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server = _start(tls_context=context, require_starttls=True)
    yield server
    server.controller.stop()


def test_starttls_delivers_when_the_certificate_is_trusted(
    starttls_server: Server, certificate: tuple[str, str]
) -> None:
    trusted = ssl.create_default_context(cafile=certificate[0])
    sender = SmtpEmailSender.from_url(
        f"smtp://127.0.0.1:{starttls_server.port}?starttls=true",
        default_sender=FROM,
        ssl_context=trusted,
    )
    sender.send(_message())
    starttls_server.sink.wait()


def test_starttls_verifies_the_certificate_by_default(starttls_server: Server) -> None:
    sender = SmtpEmailSender.from_url(
        f"smtp://127.0.0.1:{starttls_server.port}?starttls=true&timeout=3", default_sender=FROM
    )
    with pytest.raises(EmailDeliveryError) as info:
        sender.send(_message())
    assert info.value.transient is False
    assert "certificate" in info.value.detail
    assert starttls_server.sink.messages == []


def test_smtps_delivers_over_implicit_tls(certificate: tuple[str, str]) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server = _start(ssl_context=context)
    try:
        sender = SmtpEmailSender.from_url(
            f"smtps://127.0.0.1:{server.port}",
            default_sender=FROM,
            ssl_context=ssl.create_default_context(cafile=certificate[0]),
        )
        sender.send(_message())
        server.sink.wait()
    finally:
        server.controller.stop()
