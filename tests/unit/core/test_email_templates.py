"""The five emails, rendered through the real flows of an in-memory UserManagement."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from usermgmt import Settings, UserManagement
from usermgmt.clock import FakeClock
from usermgmt.ports import EmailMessage
from usermgmt.testing import create_user, extract_token, make_um, random_password

APP_URL = "https://app.example.com/base"
APP_NAME = "Acme Portal"
EVIL = "<script>x</script>"
ESCAPED = "&lt;script&gt;x&lt;/script&gt;"
PATHS = {
    "verify_email_path": "/auth/confirm",
    "reset_password_path": "/auth/new-password",
    "accept_invitation_path": "/join",
}


@pytest.fixture
def core_um() -> UserManagement:
    return make_um(
        app_url=APP_URL + "/",
        app_name=APP_NAME,
        verify_email_path=PATHS["verify_email_path"],
        reset_password_path=PATHS["reset_password_path"],
        accept_invitation_path=PATHS["accept_invitation_path"],
    )


def _only(um: UserManagement, template: str) -> EmailMessage:
    found = um.outbox.find(template=template)
    assert len(found) == 1, [m.template for m in um.outbox.messages]
    message: EmailMessage = found[0]
    return message


def send_verify_email(um: UserManagement) -> EmailMessage:
    um.users.register(email="eve@example.com", password=random_password(), name=EVIL)
    return _only(um, "verify_email")


def send_password_reset(um: UserManagement) -> EmailMessage:
    create_user(um, "eve@example.com", name=EVIL)
    um.users.request_password_reset("eve@example.com")
    return _only(um, "password_reset")


def send_invitation(um: UserManagement) -> EmailMessage:
    owner, _ = create_user(um, "owner@example.com", name=EVIL)
    org = um.organizations.create(owner.id, name="Research & Development")
    um.invitations.create(owner.id, org.id, "guest@example.com")
    return _only(um, "invitation")


def send_existing_account(um: UserManagement) -> EmailMessage:
    create_user(um, "eve@example.com", name=EVIL)
    result = um.users.register(email="eve@example.com", password=random_password())
    assert result.user is None  # PREVENT_ENUMERATION: same answer as a new address
    return _only(um, "existing_account")


def send_password_changed(um: UserManagement) -> EmailMessage:
    user, password = create_user(um, "eve@example.com", name=EVIL)
    um.users.change_password(user.id, password, random_password())
    return _only(um, "password_changed")


Flow = Callable[[UserManagement], EmailMessage]
FLOWS: dict[str, tuple[Flow, str, str | None]] = {
    # template: (flow, recipient, configured path of a token link or None)
    "verify_email": (send_verify_email, "eve@example.com", PATHS["verify_email_path"]),
    "password_reset": (send_password_reset, "eve@example.com", PATHS["reset_password_path"]),
    "invitation": (send_invitation, "guest@example.com", PATHS["accept_invitation_path"]),
    "existing_account": (send_existing_account, "eve@example.com", None),
    "password_changed": (send_password_changed, "eve@example.com", None),
}
WITH_NAME = ["verify_email", "password_reset", "invitation", "password_changed"]


@pytest.mark.parametrize("template", list(FLOWS))
def test_email_is_complete(core_um: UserManagement, template: str) -> None:
    flow, recipient, _ = FLOWS[template]
    message = flow(core_um)
    assert message.to == recipient
    assert message.template == template
    assert message.subject.strip()
    assert message.text.strip()
    assert message.html is not None
    assert message.html.lstrip().lower().startswith("<!doctype html>")
    assert message.sender == core_um.settings.email_from


@pytest.mark.parametrize("template", list(FLOWS))
def test_subject_is_one_line_with_the_app_name(core_um: UserManagement, template: str) -> None:
    message = FLOWS[template][0](core_um)
    assert "\n" not in message.subject
    assert "\r" not in message.subject
    assert message.subject == message.subject.strip()
    assert APP_NAME in message.subject


@pytest.mark.parametrize("template", [t for t, (_, _, path) in FLOWS.items() if path])
def test_token_link_uses_app_url_and_configured_path(
    core_um: UserManagement, template: str
) -> None:
    flow, _, path = FLOWS[template]
    message = flow(core_um)
    token = extract_token(message)
    link = f"{APP_URL}{path}?token={token}"
    assert link in message.text
    assert message.html is not None
    assert f'href="{link}"' in message.html
    assert len(token) >= 32


@pytest.mark.parametrize("template", ["existing_account", "password_changed"])
def test_notice_links_to_password_reset_without_token(
    core_um: UserManagement, template: str
) -> None:
    message = FLOWS[template][0](core_um)
    reset = f"{APP_URL}{PATHS['reset_password_path']}"
    assert reset in message.text
    assert "token=" not in message.text
    assert message.html is not None
    assert f'href="{reset}"' in message.html


def test_verification_link_token_works(core_um: UserManagement) -> None:
    token = extract_token(send_verify_email(core_um))
    assert core_um.users.verify_email(token).is_verified


@pytest.mark.parametrize("template", WITH_NAME)
def test_html_escapes_user_input_and_text_does_not(core_um: UserManagement, template: str) -> None:
    message = FLOWS[template][0](core_um)
    assert message.html is not None
    assert ESCAPED in message.html
    assert EVIL not in message.html
    assert EVIL in message.text
    assert ESCAPED not in message.text


def test_organization_name_escaped_in_html_only(core_um: UserManagement) -> None:
    message = send_invitation(core_um)
    assert "Research & Development" in message.subject
    assert "Research & Development" in message.text
    assert message.html is not None
    assert "Research &amp; Development" in message.html


def test_default_app_name_and_url() -> None:
    um = make_um()
    message = send_verify_email(um)
    assert "usermgmt" in message.subject
    assert extract_token(message)
    assert f"http://localhost:8000/verify-email?token={extract_token(message)}" in message.text


def test_override_directory_replaces_one_template(tmp_path: Path) -> None:
    (tmp_path / "verify_email.subject.txt").write_text(
        "Welcome aboard {{ app_name }}!\nBcc: attacker@example.com\n", encoding="utf-8"
    )
    um = UserManagement.in_memory(
        Settings.for_tests(app_name=APP_NAME, app_url=APP_URL),
        clock=FakeClock(),
        email_template_dirs=[tmp_path],
    )
    message = send_verify_email(um)
    # the override, collapsed to one line (no header injection through a template)
    assert message.subject == f"Welcome aboard {APP_NAME}! Bcc: attacker@example.com"
    # the packaged body templates are kept
    assert "Confirm your email address by opening this link" in message.text
    assert message.html is not None
    assert ESCAPED in message.html
    assert extract_token(message)
    # and the other emails keep their packaged subjects
    um.users.request_password_reset("eve@example.com")
    assert _only(um, "password_reset").subject == f"Reset your {APP_NAME} password"


def test_override_of_an_html_template_is_still_escaped(tmp_path: Path) -> None:
    (tmp_path / "verify_email.html").write_text(
        "<p>Hi {{ name }}</p><a href='{{ link }}'>go</a>", encoding="utf-8"
    )
    um = UserManagement.in_memory(
        Settings.for_tests(app_name=APP_NAME), clock=FakeClock(), email_template_dirs=[tmp_path]
    )
    message = send_verify_email(um)
    assert message.html is not None
    assert message.html.startswith(f"<p>Hi {ESCAPED}</p>")
    assert EVIL in message.text
    assert message.subject == f"Confirm your email address for {APP_NAME}"
