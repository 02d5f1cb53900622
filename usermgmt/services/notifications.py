"""Outgoing mail: render a template and hand it to the task queue (never sent inline).

Services call these only after their transaction committed, so a rolled-back
change never mails anyone, and a slow or failing provider never changes an
HTTP response (the queue retries transient failures).
"""

from __future__ import annotations

import logging
from datetime import datetime

from usermgmt.config import Settings
from usermgmt.email.rendering import EmailRenderer
from usermgmt.models import Invitation, Organization, User
from usermgmt.ports import TaskQueue

SEND_EMAIL_TASK = "email.send"

logger = logging.getLogger("usermgmt.email")


class Notifier:
    def __init__(self, settings: Settings, queue: TaskQueue, renderer: EmailRenderer) -> None:
        self._settings = settings
        self._queue = queue
        self._renderer = renderer

    def _send(self, to: str, template: str, **context: object) -> None:
        rendered = self._renderer.render(template, context)
        self._queue.enqueue(
            SEND_EMAIL_TASK,
            {
                "to": to,
                "subject": rendered.subject,
                "text": rendered.text,
                "html": rendered.html,
                "template": template,
            },
            queue="email",
        )
        logger.info("email queued", extra={"template": template})

    def verification(self, user: User, token: str) -> None:
        s = self._settings
        self._send(
            user.email,
            "verify_email",
            name=user.name,
            link=s.link(s.verify_email_path, token),
            expires_hours=max(1, s.email_verification_ttl_seconds // 3600),
        )

    def password_reset(self, user: User, token: str) -> None:
        s = self._settings
        self._send(
            user.email,
            "password_reset",
            name=user.name,
            link=s.link(s.reset_password_path, token),
            expires_minutes=max(1, s.password_reset_ttl_seconds // 60),
        )

    def existing_account(self, email: str) -> None:
        s = self._settings
        self._send(email, "existing_account", reset_link=f"{s.app_url}{s.reset_password_path}")

    def password_changed(self, user: User, when: datetime, *, how: str) -> None:
        s = self._settings
        self._send(
            user.email,
            "password_changed",
            name=user.name,
            how=how,
            when=when.strftime("%Y-%m-%d %H:%M"),
            reset_link=f"{s.app_url}{s.reset_password_path}",
        )

    def invitation(
        self, invitation: Invitation, organization: Organization, inviter: User | None, token: str
    ) -> None:
        s = self._settings
        self._send(
            invitation.email,
            "invitation",
            organization_name=organization.name,
            inviter_name=None if inviter is None else (inviter.name or inviter.email),
            link=s.link(s.accept_invitation_path, token),
            expires_days=max(1, s.invitation_ttl_seconds // 86400),
        )
