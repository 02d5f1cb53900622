"""OAuth / OpenID Connect sign-in (``um.oauth``): authorize, callback, exchange, and the
signed-in user's linked provider accounts; the same routes and answers as the FastAPI
router :mod:`usermgmt_fastapi.routers.oauth`.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from usermgmt.http import items
from usermgmt.oauth import COOKIE_NAME, BrowserCookie
from usermgmt.oauth.schemas import (
    AuthorizationUrlOut,
    AuthorizeQuery,
    CallbackQuery,
    ExchangeIn,
    LinkIn,
    OAuthAccountOut,
    ProviderOut,
)
from usermgmt.schemas import TokenPairOut
from usermgmt_flask.blueprints._common import json_body, no_content, ok, parse, query, route
from usermgmt_flask.context import current_user, get_um, request_context

__all__ = ["oauth_blueprint"]


def _redirect(url: str) -> Response:
    response = Response(status=302)
    del response.headers["Content-Type"]
    response.headers["Location"] = url
    response.headers["Cache-Control"] = "no-store"
    return response


def _set_cookie(response: Response, cookie: BrowserCookie | None) -> None:
    """Set the browser-binding cookie the core asks for, or clear it (None)."""
    if cookie is None:
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Lax")
        return
    response.set_cookie(
        COOKIE_NAME,
        cookie.value,
        max_age=cookie.max_age,
        path="/",
        secure=cookie.secure,
        httponly=True,
        samesite="Lax",  # sent on the provider's top-level redirect back to us
    )


def oauth_blueprint() -> Blueprint:
    """The OAuth routes (a new blueprint on each call)."""
    bp = Blueprint("oauth", __name__)

    @route(bp, "GET", "/auth/oauth/providers")
    def list_providers() -> Response:
        return ok(items(ProviderOut.of(p) for p in get_um().oauth.providers()))

    @route(bp, "GET", "/auth/oauth/<provider>/authorize")
    def authorize(provider: str) -> Response:
        params = query(AuthorizeQuery)
        start = get_um().oauth.begin(
            provider, redirect_url=params.redirect_url, ctx=request_context()
        )
        response = _redirect(start.url)
        _set_cookie(response, start.cookie)
        return response

    @route(bp, "GET", "/auth/oauth/<provider>/callback")
    def callback(provider: str) -> Response:
        params = query(CallbackQuery)
        result = get_um().oauth.complete(
            provider,
            state=params.state,
            code=params.code,
            error=params.error,
            cookie=request.cookies.get(COOKIE_NAME),
            ctx=request_context(),
        )
        response = _redirect(result.redirect_to)
        _set_cookie(response, result.cookie)
        return response

    @route(bp, "POST", "/auth/oauth/exchange")
    def exchange() -> Response:
        data = parse(ExchangeIn, json_body())
        pair = get_um().oauth.exchange(
            data.code, ctx=request_context(), cookie=request.cookies.get(COOKIE_NAME)
        )
        response = ok(TokenPairOut.of(pair))
        _set_cookie(response, None)
        return response

    @route(bp, "POST", "/auth/oauth/<provider>/link")
    def link(provider: str) -> Response:
        body = json_body()
        user = current_user()
        data = parse(LinkIn, body)
        start = get_um().oauth.begin_link(
            provider, user.id, redirect_url=data.redirect_url, ctx=request_context()
        )
        response = ok(AuthorizationUrlOut(authorization_url=start.url))
        _set_cookie(response, start.cookie)
        return response

    @route(bp, "GET", "/users/me/oauth-accounts")
    def list_accounts() -> Response:
        user = current_user()
        return ok(items(OAuthAccountOut.of(a) for a in get_um().oauth.accounts(user.id)))

    @route(bp, "DELETE", "/users/me/oauth-accounts/<provider>")
    def unlink(provider: str) -> Response:
        user = current_user()
        get_um().oauth.unlink(user.id, provider, ctx=request_context())
        return no_content()

    return bp
