"""Audit trail queries (events are written by every service in its own transaction)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from usermgmt.errors import PermissionDenied, ValidationError
from usermgmt.models import AuditEvent, Page, RequestContext
from usermgmt.ports import AuditQuery, UnitOfWork
from usermgmt.schemas import AuditQueryIn, parse
from usermgmt.services.authorization import AuthorizationService
from usermgmt.services.base import CommitThenRaise, Kernel, decode_cursor, encode_cursor


def _query(
    *,
    organization_id: UUID | str | None,
    action: str | None,
    actor_filter: UUID | str | None,
    target_type: str | None,
    target_id: str | None,
    since: datetime | str | None,
    until: datetime | str | None,
    limit: int,
    cursor: str | None,
) -> tuple[AuditQuery, int, UUID | None]:
    q = parse(
        AuditQueryIn,
        organization_id=organization_id,
        action=action,
        actor_id=actor_filter,
        target_type=target_type,
        target_id=target_id,
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
    query = AuditQuery(
        organization_id=q.organization_id,
        action=q.action,
        actor_user_id=q.actor_id,
        target_type=q.target_type,
        target_id=q.target_id,
        since=q.since,
        until=q.until,
    )
    return query, q.limit, before


def _page(events: list[AuditEvent], limit: int) -> Page[AuditEvent]:
    more = len(events) > limit
    events = events[:limit]
    return Page(events, encode_cursor(events[-1].id) if more else None)


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
        target_type: str | None = None,
        target_id: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        ctx: RequestContext | None = None,
    ) -> Page[AuditEvent]:
        """The organization's events, newest first (cursor pages by id; ``since``
        inclusive, ``until`` exclusive); requires ``audit:read`` (a denial is audited)."""
        query, size, before = _query(
            organization_id=organization_id,
            action=action,
            actor_filter=actor_filter,
            target_type=target_type,
            target_id=target_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
        self._authz.require(actor_id, organization_id, "audit:read", ctx)
        events = self._k.read(
            lambda uow: uow.audit.list(query, limit=size + 1, before=before), replica=True
        )
        return _page(events, size)

    def list_all(
        self,
        actor_id: UUID,
        *,
        org_filter: UUID | str | None = None,
        action: str | None = None,
        actor_filter: UUID | str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        ctx: RequestContext | None = None,
    ) -> Page[AuditEvent]:
        """Events of every organization and of the platform (platform superusers only),
        newest first, with the same filters plus ``org_filter`` (one organization's id).
        The query itself is audited (``admin.audit_logs_listed``, platform stream) in the
        same transaction. Raises PermissionDenied, ValidationError."""
        query, size, before = _query(
            organization_id=org_filter,
            action=action,
            actor_filter=actor_filter,
            target_type=target_type,
            target_id=target_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )

        def body(uow: UnitOfWork) -> list[AuditEvent]:
            actor = uow.users.get(actor_id)
            if actor is None or not actor.is_active or not actor.is_superuser:
                self._k.audit(
                    uow,
                    "authorization.denied",
                    ctx,
                    actor=actor_id,
                    outcome="denied",
                    target_type="permission",
                    target_id="superuser",
                    permission="superuser",
                )
                raise CommitThenRaise(PermissionDenied("Superuser only."))
            filters = {
                "organization_id": query.organization_id,
                "action": query.action,
                "actor_id": query.actor_user_id,
                "target_type": query.target_type,
                "target_id": query.target_id,
                "since": None if query.since is None else query.since.isoformat(),
                "until": None if query.until is None else query.until.isoformat(),
            }
            self._k.audit(
                uow,
                "admin.audit_logs_listed",
                ctx,
                actor=actor_id,
                filters={k: str(v) for k, v in filters.items() if v is not None},
            )
            return uow.audit.list(query, limit=size + 1, before=before)

        return _page(self._k.write(body), size)
