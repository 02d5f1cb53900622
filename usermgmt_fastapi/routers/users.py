"""``/users``: the caller's own account (``/users/me…``) and the superuser admin API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from usermgmt.schemas import (
    MAX_EMAIL_LENGTH,
    AdminUserUpdateIn,
    ChangePasswordIn,
    MembershipOut,
    ProfileUpdateIn,
    SessionOut,
    UserOut,
)
from usermgmt.services.base import parse_uuid
from usermgmt_fastapi.dependencies import UM, Claims, Ctx, CurrentUser
from usermgmt_fastapi.routers._common import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    ItemsOut,
    access,
    items,
    no_store,
    page,
    problems,
)

__all__ = ["users_router"]

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="From the previous page")]


_NO_STORE = {"Cache-Control": "no-store"}


def users_router() -> APIRouter:
    """The ``/users`` routes (a new router on each call). ``/users/me…`` come first so
    that ``me`` is never taken for a user id."""
    router = APIRouter(
        prefix="/users",
        tags=["users"],
        responses=problems(401, 422, 429, 503),
    )

    # --- the caller's own account ------------------------------------------------------

    @router.get(
        "/me",
        response_model=UserOut,
        summary="The signed-in user",
        openapi_extra=access("user"),
    )
    async def get_me(user: CurrentUser) -> Response:
        # The most requested route: the body FastAPI would write for ``response_model``
        # (the same serializer, by alias) and ``Cache-Control: no-store`` set here, not
        # by the ``no_store`` dependency of the other routes nor by a validation of the
        # model just built: ~80k instructions (a sixth of the request) less. async: no
        # core call here (the user was loaded by the dependency), no threadpool trip.
        body = UserOut.of(user).model_dump_json(by_alias=True)
        return Response(body, media_type="application/json", headers=_NO_STORE)

    # every route declared from here on: Cache-Control: no-store (FastAPI gives a route
    # the router's dependencies of the moment it is declared)
    router.dependencies.append(Depends(no_store))

    @router.patch(
        "/me",
        response_model=UserOut,
        summary="Change your name or metadata",
        responses=problems(400, 413, 422),
        openapi_extra=access("user"),
    )
    def update_me(data: ProfileUpdateIn, user: CurrentUser, um: UM, ctx: Ctx) -> UserOut:
        return UserOut.of(
            um.users.update_profile(user.id, data.model_dump(exclude_unset=True), ctx=ctx)
        )

    @router.post(
        "/me/password",
        status_code=204,
        response_class=Response,
        summary="Change your password (other sessions end)",
        responses=problems(400, 413, 422),
        openapi_extra=access("user"),
    )
    def change_password(
        data: ChangePasswordIn, user: CurrentUser, claims: Claims, um: UM, ctx: Ctx
    ) -> None:
        um.users.change_password(
            user.id,
            data.current_password,
            data.new_password,
            keep_session_id=claims.session_id,
            ctx=ctx,
        )

    @router.get(
        "/me/sessions",
        response_model=ItemsOut[SessionOut],
        summary="Your active sessions (`current` marks this one)",
        openapi_extra=access("user"),
    )
    def list_sessions(user: CurrentUser, claims: Claims, um: UM) -> ItemsOut[SessionOut]:
        return items(SessionOut.of(s, claims.session_id) for s in um.users.list_sessions(user.id))

    @router.delete(
        "/me/sessions/{session_id}",
        status_code=204,
        response_class=Response,
        summary="End one of your sessions",
        responses=problems(404),
        openapi_extra=access("user"),
    )
    def revoke_session(session_id: str, user: CurrentUser, um: UM, ctx: Ctx) -> None:
        um.users.revoke_session(user.id, parse_uuid(session_id, "session"), ctx=ctx)

    @router.get(
        "/me/organizations",
        response_model=ItemsOut[MembershipOut],
        summary="Your organizations with your roles in each",
        openapi_extra=access("user"),
    )
    def my_organizations(user: CurrentUser, um: UM) -> ItemsOut[MembershipOut]:
        return items(MembershipOut.of(m) for m in um.organizations.list_for_user(user.id))

    @router.delete(
        "/me",
        status_code=204,
        response_class=Response,
        summary="Deactivate your account (409 while you are the sole owner of an organization)",
        responses=problems(409),
        openapi_extra=access("user"),
    )
    def deactivate_me(user: CurrentUser, um: UM, ctx: Ctx) -> None:
        um.users.deactivate(user.id, ctx=ctx)

    # --- admin API (platform superusers) ------------------------------------------------

    @router.get(
        "",
        response_model=ItemsOut[UserOut],
        summary="List users, optionally by email prefix (superuser)",
        responses=problems(403, 422),
        openapi_extra=access("superuser"),
    )
    def list_users(
        user: CurrentUser,
        um: UM,
        ctx: Ctx,
        email_prefix: Annotated[
            str | None, Query(max_length=MAX_EMAIL_LENGTH, description="Case-insensitive")
        ] = None,
        limit: Limit = DEFAULT_PAGE_SIZE,
        cursor: Cursor = None,
    ) -> ItemsOut[UserOut]:
        result = um.admin.list_users(
            user.id, email_prefix=email_prefix, limit=limit, cursor=cursor, ctx=ctx
        )
        return page(result, UserOut.of)

    @router.get(
        "/{user_id}",
        response_model=UserOut,
        summary="One user (superuser)",
        responses=problems(403, 404),
        openapi_extra=access("superuser"),
    )
    def get_user(user_id: str, user: CurrentUser, um: UM, ctx: Ctx) -> UserOut:
        return UserOut.of(um.admin.get_user(user.id, parse_uuid(user_id, "user"), ctx=ctx))

    @router.patch(
        "/{user_id}",
        response_model=UserOut,
        summary="Change a user's profile and flags (superuser)",
        responses=problems(400, 403, 404, 413, 422),
        openapi_extra=access("superuser"),
    )
    def update_user(
        user_id: str, data: AdminUserUpdateIn, user: CurrentUser, um: UM, ctx: Ctx
    ) -> UserOut:
        return UserOut.of(
            um.admin.update_user(
                user.id,
                parse_uuid(user_id, "user"),
                data.model_dump(exclude_unset=True),
                ctx=ctx,
            )
        )

    @router.delete(
        "/{user_id}",
        status_code=204,
        response_class=Response,
        summary="Deactivate a user (superuser)",
        responses=problems(403, 404, 409),
        openapi_extra=access("superuser"),
    )
    def delete_user(user_id: str, user: CurrentUser, um: UM, ctx: Ctx) -> None:
        um.admin.delete_user(user.id, parse_uuid(user_id, "user"), ctx=ctx)

    return router
