"""Email senders that never leave the process: an outbox for tests and a console
printer for development."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from usermgmt.errors import EmailDeliveryError
from usermgmt.ports import EmailMessage

__all__ = ["ConsoleEmailSender", "MemoryEmailSender"]


class MemoryEmailSender:
    """An :class:`~usermgmt.ports.EmailSender` that keeps every message in :attr:`messages`.

    Set :attr:`fail_with` to an :class:`~usermgmt.errors.EmailDeliveryError` to make
    :meth:`send` raise it (and record nothing) until it is set back to None.

    >>> outbox = MemoryEmailSender()
    >>> outbox.send(EmailMessage(to="a@example.com", subject="Hi", text="...", template="t"))
    >>> outbox.last(to="a@example.com").subject
    'Hi'
    """

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.fail_with: EmailDeliveryError | None = None
        self._lock = threading.Lock()

    def send(self, message: EmailMessage) -> None:
        """Record ``message``; raises :attr:`fail_with` when it is set."""
        error = self.fail_with
        if error is not None:
            raise error
        with self._lock:
            self.messages.append(message)

    def find(self, to: str | None = None, template: str | None = None) -> list[EmailMessage]:
        """The recorded messages to ``to`` (case-insensitive) and of ``template``, oldest first."""
        wanted = None if to is None else to.strip().lower()
        with self._lock:
            return [
                m
                for m in self.messages
                if (wanted is None or m.to.strip().lower() == wanted)
                and (template is None or m.template == template)
            ]

    def last(self, to: str | None = None, template: str | None = None) -> EmailMessage | None:
        """The newest matching message, or None."""
        found = self.find(to=to, template=template)
        return found[-1] if found else None

    def clear(self) -> None:
        """Forget every recorded message."""
        with self._lock:
            self.messages.clear()

    def __len__(self) -> int:
        return len(self.messages)


class ConsoleEmailSender:
    """An :class:`~usermgmt.ports.EmailSender` that prints each message (recipient,
    subject and text body, where the development links are) to ``stream``
    (standard output when None, looked up at each send)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: EmailMessage) -> None:
        """Write the message; never raises EmailDeliveryError."""
        stream = self._stream if self._stream is not None else sys.stdout
        lines = [
            "----- email -----",
            f"To: {message.to}",
        ]
        if message.sender:
            lines.append(f"From: {message.sender}")
        lines += [
            f"Subject: {message.subject}",
            f"Template: {message.template}",
            "",
            message.text.rstrip("\n"),
            "----- end email -----",
            "",
        ]
        with self._lock:
            stream.write("\n".join(lines))
            stream.flush()
