"""``GET /organizations/<org_id>/audit-logs`` (``audit:read``) and ``GET /audit-logs``
(platform superusers, audited): audit trails, newest first."""

from __future__ import annotations

from flask import Blueprint, Response

from usermgmt.http import AuditLogQuery, PlatformAuditLogQuery, page
from usermgmt.schemas import AuditEventOut
from usermgmt.services.base import parse_uuid
from usermgmt_flask.blueprints._common import ok, query, route
from usermgmt_flask.context import current_user, get_um, request_context

__all__ = ["audit_blueprint"]


def audit_blueprint() -> Blueprint:
    """The audit-log routes (a new blueprint on each call)."""
    bp = Blueprint("audit", __name__)

    @route(bp, "GET", "/organizations/<org_id>/audit-logs")
    def list_audit_logs(org_id: str) -> Response:
        user = current_user()
        params = query(AuditLogQuery)
        # The core validates the filters (UUID, timezone-aware times) and the cursor.
        result = get_um().audit.list(
            user.id,
            parse_uuid(org_id, "organization"),
            action=params.action,
            actor_filter=params.actor_id,
            target_type=params.target_type,
            target_id=params.target_id,
            since=params.since,
            until=params.until,
            limit=params.limit,
            cursor=params.cursor,
            ctx=request_context(),
        )
        return ok(page(result, AuditEventOut.of))

    @route(bp, "GET", "/audit-logs")
    def list_platform_audit_logs() -> Response:
        user = current_user()
        params = query(PlatformAuditLogQuery)
        result = get_um().audit.list_all(
            user.id,
            org_filter=params.organization_id,
            action=params.action,
            actor_filter=params.actor_id,
            target_type=params.target_type,
            target_id=params.target_id,
            since=params.since,
            until=params.until,
            limit=params.limit,
            cursor=params.cursor,
            ctx=request_context(),
        )
        return ok(page(result, AuditEventOut.of))

    return bp
