"""Audit trail queries (events are written by every service in its own transaction)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from usermgmt.errors import ValidationError
from usermgmt.models import AuditEvent, Page
from usermgmt.ports import AuditQuery
from usermgmt.schemas import AuditQueryIn, parse
from usermgmt.services.authorization import AuthorizationService
from usermgmt.services.base import Kernel, decode_cursor, encode_cursor


class AuditService:
    def __init__(self, kernel: Kernel, authz: AuthorizationService) -> None:
        self._k = kernel
        self._authz = authz

    def list(
        self,
        actor_id: UUID,
        organization_id: UUID,
        *,
        action: str | None = None,
        actor_filter: UUID | str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[AuditEvent]:
        """The organization's events, newest first; requires ``audit:read``."""
        q = parse(
            AuditQueryIn,
            action=action,
            actor_id=actor_filter,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
        for name, value in (("since", q.since), ("until", q.until)):
            if value is not None and value.tzinfo is None:
                raise ValidationError(
                    f"{name} needs a timezone (e.g. 2026-01-01T00:00:00Z).",
                    errors=[{"loc": [name], "msg": "timezone required"}],
                )
        before = decode_cursor(q.cursor)
        self._authz.require(actor_id, organization_id, "audit:read")
        query = AuditQuery(
            organization_id=organization_id,
            action=q.action,
            actor_user_id=q.actor_id,
            since=q.since,
            until=q.until,
        )
        events = self._k.read(
            lambda uow: uow.audit.list(query, limit=q.limit + 1, before=before), replica=True
        )
        more = len(events) > q.limit
        events = events[: q.limit]
        return Page(events, encode_cursor(events[-1].id) if more else None)
