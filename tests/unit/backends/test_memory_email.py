"""MemoryEmailSender (the test outbox) and ConsoleEmailSender."""

from __future__ import annotations

import io
import threading

import pytest

from usermgmt.backends.memory import ConsoleEmailSender, MemoryEmailSender
from usermgmt.errors import EmailDeliveryError
from usermgmt.ports import EmailMessage


def message(to: str = "a@example.com", template: str = "verify_email", **kw: str) -> EmailMessage:
    return EmailMessage(
        to=to,
        subject=kw.get("subject", "Verify your email"),
        text=kw.get("text", "Open https://app.test/verify-email?token=abc"),
        template=template,
        html=kw.get("html"),
        sender=kw.get("sender"),
    )


def test_outbox_records_and_finds() -> None:
    outbox = MemoryEmailSender()
    first = message("Alice@Example.com", "verify_email")
    second = message("bob@example.com", "password_reset")
    third = message("alice@example.com", "password_reset", subject="Reset")
    for m in (first, second, third):
        outbox.send(m)
    assert outbox.messages == [first, second, third]
    assert len(outbox) == 3
    assert outbox.find(to="ALICE@example.com") == [first, third]
    assert outbox.find(template="password_reset") == [second, third]
    assert outbox.find(to="alice@example.com", template="verify_email") == [first]
    assert outbox.find() == [first, second, third]
    assert outbox.find(to="nobody@example.com") == []
    assert outbox.last(to="alice@example.com") == third
    assert outbox.last() == third
    assert outbox.last(template="invitation") is None
    outbox.clear()
    assert outbox.messages == []
    assert outbox.last() is None


def test_outbox_fail_with_raises_and_records_nothing() -> None:
    outbox = MemoryEmailSender()
    error = EmailDeliveryError("provider down", transient=True)
    outbox.fail_with = error
    with pytest.raises(EmailDeliveryError) as caught:
        outbox.send(message())
    assert caught.value is error
    assert outbox.messages == []
    outbox.fail_with = None
    outbox.send(message())
    assert len(outbox.messages) == 1


def test_outbox_is_thread_safe() -> None:
    outbox = MemoryEmailSender()

    def send_many(n: int) -> None:
        for i in range(100):
            outbox.send(message(f"user{n}-{i}@example.com"))

    threads = [threading.Thread(target=send_many, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outbox.messages) == 1000
    assert len({m.to for m in outbox.messages}) == 1000


def test_console_sender_writes_to_stream() -> None:
    stream = io.StringIO()
    ConsoleEmailSender(stream).send(
        message(text="Hello\nhttps://app.test/verify-email?token=abc\n", sender="no-reply@app.test")
    )
    out = stream.getvalue()
    assert "To: a@example.com" in out
    assert "From: no-reply@app.test" in out
    assert "Subject: Verify your email" in out
    assert "https://app.test/verify-email?token=abc" in out
    assert out.index("Subject:") < out.index("Hello")


def test_console_sender_defaults_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleEmailSender().send(message(to="dev@example.com"))
    out = capsys.readouterr().out
    assert "To: dev@example.com" in out
    assert "token=abc" in out
