"""SendGrid delivery through the official client (extra ``sendgrid``).

Posts the v3 ``mail/send`` payload with a text and, when there is one, an HTML part.
``SENDGRID_API_URL`` is the client's host (a local stand-in in tests).
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from usermgmt.backends import require_module
from usermgmt.backends.email._headers import checked_fields, split_address
from usermgmt.config import Settings
from usermgmt.errors import ConfigurationError, EmailDeliveryError
from usermgmt.ports import EmailMessage

__all__ = ["SendGridEmailSender", "build", "payload"]

_PERMANENT_STATUS = {400, 401, 403, 404, 413}


def payload(message: EmailMessage, default_sender: str) -> dict[str, Any]:
    """The v3 ``mail/send`` request body for ``message``."""
    sender, to, subject = checked_fields(message, default_sender)
    from_name, from_address = split_address(sender)
    to_name, to_address = split_address(to)
    recipient: dict[str, str] = {"email": to_address}
    if to_name:
        recipient["name"] = to_name
    origin: dict[str, str] = {"email": from_address}
    if from_name:
        origin["name"] = from_name
    content = [{"type": "text/plain", "value": message.text}]
    if message.html is not None:
        content.append({"type": "text/html", "value": message.html})
    return {
        "personalizations": [{"to": [recipient]}],
        "from": origin,
        "subject": subject,
        "content": content,
    }


def _provider_detail(body: Any) -> str:
    """The ``errors[].message`` texts of a SendGrid error body, shortened."""
    try:
        data = json.loads(body.decode() if isinstance(body, bytes) else str(body))
        messages = [str(e.get("message", "")) for e in data.get("errors", [])]
    except (ValueError, AttributeError, TypeError):
        return ""
    text = "; ".join(m for m in messages if m)[:200]
    return f": {text}" if text else ""


class SendGridEmailSender:
    """An :class:`~usermgmt.ports.EmailSender` posting to SendGrid's v3 API."""

    def __init__(
        self,
        api_key: str,
        *,
        default_sender: str,
        host: str = "https://api.sendgrid.com",
        timeout: float = 10.0,
    ) -> None:
        sendgrid = require_module("sendgrid", "sendgrid", "sendgrid")
        self._exceptions = importlib.import_module("python_http_client.exceptions")
        self._client: Any = sendgrid.SendGridAPIClient(api_key=api_key, host=host.rstrip("/"))
        # python_http_client builds a client per path segment from these attributes
        self._client.client.timeout = timeout
        self.host = host
        self.default_sender = default_sender

    def __repr__(self) -> str:  # never shows the key
        return f"SendGridEmailSender({self.host})"

    def send(self, message: EmailMessage) -> None:
        """Deliver or raise EmailDeliveryError (``transient`` says whether to retry)."""
        body = payload(message, self.default_sender)
        try:
            response = self._client.send(body)
        except self._exceptions.HTTPError as exc:
            status = int(getattr(exc, "status_code", 0) or 0)
            detail = _provider_detail(getattr(exc, "body", b""))
            if status in (401, 403):
                text = f"SendGrid refused the API key ({status}){detail}."
            else:
                text = f"SendGrid answered {status}{detail}."
            raise EmailDeliveryError(
                text, transient=status == 429 or status >= 500 or status not in _PERMANENT_STATUS
            ) from None
        except OSError as exc:  # URLError, ConnectionRefusedError and TimeoutError are OSErrors
            raise EmailDeliveryError(
                f"Could not reach SendGrid at {self.host} ({type(exc).__name__}).",
                transient=True,
            ) from None
        status = int(getattr(response, "status_code", 0) or 0)
        if not 200 <= status < 300:
            raise EmailDeliveryError(f"SendGrid answered {status}.", transient=status >= 500)


def build(settings: Settings) -> SendGridEmailSender:
    """The sender for ``EMAIL_PROVIDER=sendgrid``."""
    if settings.sendgrid_api_key is None:
        raise ConfigurationError("EMAIL_PROVIDER=sendgrid needs SENDGRID_API_KEY")
    return SendGridEmailSender(
        settings.sendgrid_api_key.get_secret_value(),
        default_sender=settings.email_from,
        host=settings.sendgrid_api_url,
    )
