"""Checks shared by the provider senders."""

from __future__ import annotations

from email.utils import parseaddr

from usermgmt.errors import EmailDeliveryError
from usermgmt.ports import EmailMessage

_FORBIDDEN = ("\r", "\n", "\x00")


def check_header(name: str, value: str) -> str:
    """``value`` unchanged, or a permanent EmailDeliveryError if it could inject headers.

    A CR, LF or NUL in To, From or Subject would let the value start a new header
    (SEC-TK-10); such a message is refused, never "cleaned".
    """
    if any(ch in value for ch in _FORBIDDEN):
        raise EmailDeliveryError(
            f"The {name} header contains a line break; the message was not sent.",
            transient=False,
        )
    return value


def checked_fields(message: EmailMessage, default_sender: str) -> tuple[str, str, str]:
    """(From, To, Subject) of the message, each checked; From falls back to the default."""
    sender = check_header("From", message.sender or default_sender)
    to = check_header("To", message.to)
    subject = check_header("Subject", message.subject)
    if not parseaddr(to)[1] or "@" not in to:
        raise EmailDeliveryError("The recipient address is not valid.", transient=False)
    return sender, to, subject


def split_address(value: str) -> tuple[str, str]:
    """(display name, address) of ``"Name <addr@host>"`` or ``"addr@host"``."""
    name, address = parseaddr(value)
    if not address:
        raise EmailDeliveryError("The sender address is not valid.", transient=False)
    return name, address
