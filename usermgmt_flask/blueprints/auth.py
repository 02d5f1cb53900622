"""``/auth``: registration, login, token refresh, logout, email verification, password reset.

Tokens travel only in request bodies (never in a query string, SEC-TK-09); every
response here is ``Cache-Control: no-store``.
"""

from __future__ import annotations

from flask import Blueprint, Response

from usermgmt.http import REGISTERED, RESET_REQUESTED, VERIFICATION_SENT
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
from usermgmt_flask.blueprints._common import (
    accepted,
    json_body,
    no_content,
    ok,
    parse,
    route,
)
from usermgmt_flask.context import current_claims, current_user, get_um, request_context

__all__ = ["auth_blueprint"]


def auth_blueprint() -> Blueprint:
    """The ``/auth`` routes (a new blueprint on each call)."""
    bp = Blueprint("auth", __name__)

    @route(bp, "POST", "/auth/register")
    def register() -> Response:
        data = parse(RegisterIn, json_body())
        um = get_um()
        result = um.users.register(
            email=data.email, password=data.password, name=data.name, ctx=request_context()
        )
        if result.disclosed_user is None:
            return accepted(REGISTERED)
        return ok(UserOut.of(result.disclosed_user), 201)

    @route(bp, "POST", "/auth/login")
    def login() -> Response:
        data = parse(LoginIn, json_body())
        pair = get_um().auth.login(email=data.email, password=data.password, ctx=request_context())
        return ok(TokenPairOut.of(pair))

    @route(bp, "POST", "/auth/refresh")
    def refresh() -> Response:
        data = parse(RefreshIn, json_body())
        return ok(TokenPairOut.of(get_um().auth.refresh(data.refresh_token, ctx=request_context())))

    @route(bp, "POST", "/auth/logout")
    def logout() -> Response:
        claims = current_claims()
        get_um().auth.logout(claims.user_id, claims.session_id, ctx=request_context())
        return no_content()

    @route(bp, "POST", "/auth/logout-all")
    def logout_all() -> Response:
        claims = current_claims()
        get_um().auth.logout_all(claims.user_id, ctx=request_context())
        return no_content()

    @route(bp, "POST", "/auth/verify-email")
    def verify_email() -> Response:
        data = parse(TokenIn, json_body())
        return ok(UserOut.of(get_um().users.verify_email(data.token, ctx=request_context())))

    @route(bp, "POST", "/auth/verify-email/resend")
    def resend_verification() -> Response:
        user = current_user()
        get_um().users.resend_verification(user.id, ctx=request_context())
        return accepted(VERIFICATION_SENT)

    @route(bp, "POST", "/auth/password/forgot")
    def forgot_password() -> Response:
        data = parse(EmailIn, json_body())
        get_um().users.request_password_reset(data.email, ctx=request_context())
        return accepted(RESET_REQUESTED)

    @route(bp, "POST", "/auth/password/reset")
    def reset_password() -> Response:
        data = parse(ResetPasswordIn, json_body())
        get_um().users.reset_password(data.token, data.password, ctx=request_context())
        return no_content()

    return bp
