"""``/auth``: registration, login, token refresh, logout, email verification, password reset.

Tokens travel only in request bodies (never in a query string, SEC-TK-09); every
response here is ``Cache-Control: no-store``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from usermgmt.schemas import (
    EmailIn,
    LoginIn,
    RefreshIn,
    RegisterIn,
    ResetPasswordIn,
    TokenIn,
    TokenPairOut,
    UserOut,
)
from usermgmt_fastapi.dependencies import UM, Claims, Ctx, CurrentUser
from usermgmt_fastapi.routers._common import AcceptedOut, access, no_store, problems

__all__ = ["auth_router"]

REGISTERED = AcceptedOut(
    detail="Check your inbox: we sent this address an email with the next step."
)
RESET_REQUESTED = AcceptedOut(
    detail="If an account uses this address, we sent it a link to reset the password."
)
VERIFICATION_SENT = AcceptedOut(
    detail="If your address still needs verifying, we sent it a new link."
)


def auth_router() -> APIRouter:
    """The ``/auth`` routes (a new router on each call)."""
    router = APIRouter(
        prefix="/auth",
        tags=["auth"],
        dependencies=[Depends(no_store)],
        responses=problems(422, 429, 503),
    )

    @router.post(
        "/register",
        status_code=202,
        response_model=None,
        summary="Create an account",
        responses={
            201: {"model": UserOut, "description": "Created (PREVENT_ENUMERATION=false)"},
            202: {
                "model": AcceptedOut,
                "description": "Accepted, whether or not the email is taken",
            },
            **problems(400, 409, 413, 422),
        },
        openapi_extra=access("anyone"),
    )
    def register(data: RegisterIn, response: Response, um: UM, ctx: Ctx) -> UserOut | AcceptedOut:
        result = um.users.register(
            email=data.email, password=data.password, name=data.name, ctx=ctx
        )
        if result.disclosed_user is None:
            return REGISTERED
        response.status_code = 201
        return UserOut.of(result.disclosed_user)

    @router.post(
        "/login",
        response_model=TokenPairOut,
        summary="Sign in with email and password",
        responses=problems(400, 401, 403, 413, 422),
        openapi_extra=access("anyone"),
    )
    def login(data: LoginIn, um: UM, ctx: Ctx) -> TokenPairOut:
        return TokenPairOut.of(um.auth.login(email=data.email, password=data.password, ctx=ctx))

    @router.post(
        "/refresh",
        response_model=TokenPairOut,
        summary="Rotate a refresh token for a new token pair",
        responses=problems(400, 401, 413, 422),
        openapi_extra=access("anyone"),
    )
    def refresh(data: RefreshIn, um: UM, ctx: Ctx) -> TokenPairOut:
        return TokenPairOut.of(um.auth.refresh(data.refresh_token, ctx=ctx))

    @router.post(
        "/logout",
        status_code=204,
        response_class=Response,
        summary="End this session",
        responses=problems(401),
        openapi_extra=access("user"),
    )
    def logout(claims: Claims, um: UM, ctx: Ctx) -> None:
        um.auth.logout(claims.user_id, claims.session_id, ctx=ctx)

    @router.post(
        "/logout-all",
        status_code=204,
        response_class=Response,
        summary="End every session of the user",
        responses=problems(401),
        openapi_extra=access("user"),
    )
    def logout_all(claims: Claims, um: UM, ctx: Ctx) -> None:
        um.auth.logout_all(claims.user_id, ctx=ctx)

    @router.post(
        "/verify-email",
        response_model=UserOut,
        summary="Confirm an email address with the token from the email",
        responses=problems(400, 413, 422),
        openapi_extra=access("anyone"),
    )
    def verify_email(data: TokenIn, um: UM, ctx: Ctx) -> UserOut:
        return UserOut.of(um.users.verify_email(data.token, ctx=ctx))

    @router.post(
        "/verify-email/resend",
        status_code=202,
        response_model=AcceptedOut,
        summary="Send a new verification email",
        responses=problems(401),
        openapi_extra=access("user"),
    )
    def resend_verification(user: CurrentUser, um: UM, ctx: Ctx) -> AcceptedOut:
        um.users.resend_verification(user.id, ctx=ctx)
        return VERIFICATION_SENT

    @router.post(
        "/password/forgot",
        status_code=202,
        response_model=AcceptedOut,
        summary="Email a password-reset link (same answer whether or not the account exists)",
        responses=problems(400, 413, 422),
        openapi_extra=access("anyone"),
    )
    def forgot_password(data: EmailIn, um: UM, ctx: Ctx) -> AcceptedOut:
        um.users.request_password_reset(data.email, ctx=ctx)
        return RESET_REQUESTED

    @router.post(
        "/password/reset",
        status_code=204,
        response_class=Response,
        summary="Set a new password with the token from the email (no tokens are returned)",
        responses=problems(400, 413, 422),
        openapi_extra=access("anyone"),
    )
    def reset_password(data: ResetPasswordIn, um: UM, ctx: Ctx) -> None:
        um.users.reset_password(data.token, data.password, ctx=ctx)

    return router
