"""``GET /organizations/{org_id}/audit-logs`` (``audit:read``) and ``GET /audit-logs``
(platform superusers, audited): audit trails, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from usermgmt.schemas import AuditEventOut
from usermgmt.services.base import parse_uuid
from usermgmt_fastapi.dependencies import UM, Ctx, CurrentUser
from usermgmt_fastapi.routers._common import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    ItemsOut,
    access,
    no_store,
    page,
    problems,
)

__all__ = ["audit_router"]

Action = Annotated[str | None, Query(max_length=100, description="e.g. member.removed")]
ActorId = Annotated[str | None, Query(max_length=64, description="A user id")]
TargetType = Annotated[str | None, Query(max_length=64, description="e.g. user, role")]
TargetId = Annotated[str | None, Query(max_length=200, description="The target's id")]
Time = Annotated[str | None, Query(max_length=64, description="ISO 8601 with a timezone")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Cursor = Annotated[str | None, Query(max_length=200)]


def audit_router() -> APIRouter:
    """The audit-log routes (a new router on each call)."""
    router = APIRouter(
        tags=["audit"],
        dependencies=[Depends(no_store)],
        responses=problems(401, 422, 429, 503),
    )

    @router.get(
        "/organizations/{org_id}/audit-logs",
        response_model=ItemsOut[AuditEventOut],
        summary="Audit events of the organization, newest first",
        responses=problems(403, 404, 422),
        openapi_extra=access("audit:read"),
    )
    def list_audit_logs(
        org_id: str,
        user: CurrentUser,
        um: UM,
        ctx: Ctx,
        action: Action = None,
        actor_id: ActorId = None,
        target_type: TargetType = None,
        target_id: TargetId = None,
        since: Time = None,
        until: Time = None,
        limit: PageSize = DEFAULT_PAGE_SIZE,
        cursor: Cursor = None,
    ) -> ItemsOut[AuditEventOut]:
        # The core validates the filters (UUID, timezone-aware times) and the cursor.
        result = um.audit.list(
            user.id,
            parse_uuid(org_id, "organization"),
            action=action,
            actor_filter=actor_id,
            target_type=target_type,
            target_id=target_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
            ctx=ctx,
        )
        return page(result, AuditEventOut.of)

    @router.get(
        "/audit-logs",
        response_model=ItemsOut[AuditEventOut],
        summary="Audit events of every organization and the platform (superuser, audited)",
        responses=problems(403, 422),
        openapi_extra=access("superuser"),
    )
    def list_platform_audit_logs(
        user: CurrentUser,
        um: UM,
        ctx: Ctx,
        organization_id: Annotated[
            str | None, Query(max_length=64, description="Only this organization's events")
        ] = None,
        action: Action = None,
        actor_id: ActorId = None,
        target_type: TargetType = None,
        target_id: TargetId = None,
        since: Time = None,
        until: Time = None,
        limit: PageSize = DEFAULT_PAGE_SIZE,
        cursor: Cursor = None,
    ) -> ItemsOut[AuditEventOut]:
        result = um.audit.list_all(
            user.id,
            org_filter=organization_id,
            action=action,
            actor_filter=actor_id,
            target_type=target_type,
            target_id=target_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
            ctx=ctx,
        )
        return page(result, AuditEventOut.of)

    return router
