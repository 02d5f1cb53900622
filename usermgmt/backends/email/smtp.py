"""SMTP delivery with the standard library.

``SMTP_URL`` forms:

* ``smtp://host:port`` — plain SMTP (a local relay); port 25 by default;
* ``smtp://user:password@host:587?starttls=true`` — upgrade with STARTTLS; if the
  server does not offer it the message is refused (never sent in the clear);
* ``smtps://user:password@host:465`` — TLS from the first byte.

User and password are percent-decoded. ``timeout=SECONDS`` in the query sets the
socket timeout (10 s by default). Certificates and host names are verified unless a
caller passes its own :class:`ssl.SSLContext`.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate, make_msgid
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from usermgmt.backends.email._headers import checked_fields, split_address
from usermgmt.config import Settings
from usermgmt.errors import ConfigurationError, EmailDeliveryError
from usermgmt.ports import EmailMessage

__all__ = ["SmtpEmailSender", "build"]

Security = Literal["none", "starttls", "ssl"]
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SmtpEmailSender:
    """An :class:`~usermgmt.ports.EmailSender` over SMTP; one connection per message."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        default_sender: str,
        security: Security = "none",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.security: Security = security
        self.default_sender = default_sender
        self.timeout = timeout
        self._username = username
        self._password = password
        self._ssl_context = ssl_context

    def __repr__(self) -> str:  # never shows the password
        user = f"{self._username}@" if self._username else ""
        return f"SmtpEmailSender({self.security}://{user}{self.host}:{self.port})"

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        default_sender: str,
        ssl_context: ssl.SSLContext | None = None,
    ) -> SmtpEmailSender:
        """Parse ``smtp://`` / ``smtps://`` URLs (see the module docstring)."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ConfigurationError("SMTP_URL must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ConfigurationError("SMTP_URL must name a host")
        query = {k: v[-1].strip().lower() for k, v in parse_qs(parts.query).items()}
        starttls = query.get("starttls", "false")
        if starttls not in _TRUE | _FALSE:
            raise ConfigurationError("SMTP_URL starttls must be true or false")
        security: Security
        if parts.scheme == "smtps":
            if starttls in _TRUE:
                raise ConfigurationError("SMTP_URL: smtps:// is TLS already; drop starttls")
            security = "ssl"
        else:
            security = "starttls" if starttls in _TRUE else "none"
        try:
            port = parts.port
            timeout = float(query.get("timeout", "10"))
        except ValueError:
            raise ConfigurationError("SMTP_URL has an invalid port or timeout") from None
        if timeout <= 0:
            raise ConfigurationError("SMTP_URL timeout must be positive")
        if port is None:
            port = 465 if security == "ssl" else (587 if security == "starttls" else 25)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(
            parts.hostname,
            port,
            default_sender=default_sender,
            security=security,
            username=username,
            password=password,
            timeout=timeout,
            ssl_context=ssl_context,
        )

    # --- sending -------------------------------------------------------------------------

    def _mime(self, message: EmailMessage) -> tuple[MimeMessage, str, str]:
        sender, to, subject = checked_fields(message, self.default_sender)
        mime = MimeMessage()
        mime["From"] = sender
        mime["To"] = to
        mime["Subject"] = subject
        mime["Date"] = formatdate(localtime=False, usegmt=True)
        mime["Message-ID"] = make_msgid(domain=split_address(sender)[1].rpartition("@")[2] or None)
        mime.set_content(message.text)
        if message.html is not None:
            mime.add_alternative(message.html, subtype="html")
        return mime, split_address(sender)[1], split_address(to)[1]

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def send(self, message: EmailMessage) -> None:
        """Deliver or raise EmailDeliveryError (``transient`` says whether to retry)."""
        mime, envelope_from, envelope_to = self._mime(message)
        try:
            self._deliver(mime, envelope_from, envelope_to)
        except EmailDeliveryError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise EmailDeliveryError(
                f"SMTP server {self.host}:{self.port} rejected the credentials ({exc.smtp_code}).",
                transient=False,
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise EmailDeliveryError(
                f"SMTP server {self.host}:{self.port} does not support a required extension "
                "(STARTTLS or AUTH); check SMTP_URL.",
                transient=False,
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise EmailDeliveryError(
                f"SMTP server refused the recipient ({', '.join(map(str, codes))}).",
                transient=all(400 <= c < 500 for c in codes),
            ) from None
        except smtplib.SMTPSenderRefused as exc:
            raise EmailDeliveryError(
                f"SMTP server refused the sender ({exc.smtp_code}).",
                transient=400 <= exc.smtp_code < 500,
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise EmailDeliveryError(
                f"SMTP server {self.host}:{self.port} answered {exc.smtp_code}.",
                transient=not 500 <= exc.smtp_code < 600,
            ) from None
        except ssl.SSLCertVerificationError:
            raise EmailDeliveryError(
                f"The TLS certificate of {self.host}:{self.port} could not be verified.",
                transient=False,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            # connection refused or reset, timeouts, DNS, TLS handshake failures
            kind = "timed out" if isinstance(exc, TimeoutError) else "failed"
            raise EmailDeliveryError(
                f"Connection to SMTP server {self.host}:{self.port} {kind} ({type(exc).__name__}).",
                transient=True,
            ) from None

    def _deliver(self, mime: MimeMessage, envelope_from: str, envelope_to: str) -> None:
        client: smtplib.SMTP
        if self.security == "ssl":
            client = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self._context()
            )
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            client.ehlo()
            if self.security == "starttls":
                # raises SMTPNotSupportedError when the server does not offer STARTTLS:
                # the message is never sent in the clear instead
                client.starttls(context=self._context())
                client.ehlo()
            if self._username is not None:
                client.login(self._username, self._password or "")
            client.send_message(mime, from_addr=envelope_from, to_addrs=[envelope_to])
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()


def build(settings: Settings) -> SmtpEmailSender:
    """The sender ``SMTP_URL`` describes (``EMAIL_PROVIDER=smtp``)."""
    if settings.smtp_url is None:
        raise ConfigurationError("EMAIL_PROVIDER=smtp needs SMTP_URL")
    return SmtpEmailSender.from_url(
        settings.smtp_url.get_secret_value(), default_sender=settings.email_from
    )
