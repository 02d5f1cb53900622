"""OAuth / OpenID Connect sign-in (``um.oauth``): authorize, callback, exchange, and the
signed-in user's linked provider accounts.

The flow lives in the core (:mod:`usermgmt.oauth`); these routes only move its values
between HTTP and the service: the browser-binding cookie, the redirects, the bodies.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from usermgmt.http import ItemsOut, items
from usermgmt.oauth import COOKIE_NAME, BrowserCookie
from usermgmt.oauth.schemas import (
    AuthorizationUrlOut,
    ExchangeIn,
    LinkIn,
    OAuthAccountOut,
    ProviderOut,
)
from usermgmt.schemas import TokenPairOut
from usermgmt_fastapi.dependencies import UM, Ctx, CurrentUser
from usermgmt_fastapi.routers._common import access, no_store, problems

__all__ = ["oauth_router"]

_PROVIDER_ERRORS = {
    400: "Invalid sign-in attempt: missing, expired, replayed or foreign `state`; provider "
    "error; ID token failing verification",
    503: "The provider (or the shared cache) is unavailable",
}


def _doc(status: int) -> dict[int | str, dict[str, object]]:
    declared = problems(status)
    if status in _PROVIDER_ERRORS:
        declared[status]["description"] = _PROVIDER_ERRORS[status]
    return declared


def _set_cookie(response: Response, cookie: BrowserCookie | None) -> None:
    """Set the browser-binding cookie the core asks for, or clear it (None)."""
    if cookie is None:
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax")
        return
    response.set_cookie(
        COOKIE_NAME,
        cookie.value,
        max_age=cookie.max_age,
        path="/",
        secure=cookie.secure,
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back to us
    )


def oauth_router() -> APIRouter:
    """The OAuth routes (a new router on each call)."""
    router = APIRouter(
        tags=["oauth"], dependencies=[Depends(no_store)], responses=problems(422, 429)
    )

    @router.get(
        "/auth/oauth/providers",
        response_model=ItemsOut[ProviderOut],
        summary="The configured sign-in providers",
        openapi_extra=access("anyone"),
    )
    def list_providers(um: UM) -> ItemsOut[ProviderOut]:
        return items(ProviderOut.of(p) for p in um.oauth.providers())

    @router.get(
        "/auth/oauth/{provider}/authorize",
        status_code=302,
        response_class=RedirectResponse,
        summary="Start signing in with a provider (302 to it; sets the browser-binding cookie)",
        responses={
            302: {"description": "Redirect to the provider's authorization endpoint"},
            **problems(404, 422, 429),
            **_doc(503),
        },
        openapi_extra=access("anyone"),
    )
    def authorize(
        provider: str,
        um: UM,
        ctx: Ctx,
        redirect_url: Annotated[str | None, Query(max_length=4096)] = None,
    ) -> RedirectResponse:
        start = um.oauth.begin(provider, redirect_url=redirect_url, ctx=ctx)
        response = RedirectResponse(start.url, status_code=302)
        _set_cookie(response, start.cookie)
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.get(
        "/auth/oauth/{provider}/callback",
        status_code=302,
        response_class=RedirectResponse,
        summary="The provider's redirect back: 302 to the allowlisted target with a one-time `code`",
        responses={
            302: {"description": "Redirect to the post-login target with `?code=` (or `?linked=`)"},
            **_doc(400),
            **problems(401, 403, 404, 409, 422),
            **_doc(503),
        },
        openapi_extra=access("anyone"),
    )
    def callback(
        provider: str,
        request: Request,
        um: UM,
        ctx: Ctx,
        state: Annotated[str | None, Query(max_length=4096)] = None,
        code: Annotated[str | None, Query(max_length=4096)] = None,
        error: Annotated[str | None, Query(max_length=4096)] = None,
    ) -> RedirectResponse:
        result = um.oauth.complete(
            provider,
            state=state,
            code=code,
            error=error,
            cookie=request.cookies.get(COOKIE_NAME),
            ctx=ctx,
        )
        response = RedirectResponse(result.redirect_to, status_code=302)
        _set_cookie(response, result.cookie)
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.post(
        "/auth/oauth/exchange",
        response_model=TokenPairOut,
        summary="Trade the callback's one-time code for a token pair",
        responses=problems(400, 413, 422, 429, 503),
        openapi_extra=access("anyone"),
    )
    def exchange(
        data: ExchangeIn, request: Request, response: Response, um: UM, ctx: Ctx
    ) -> TokenPairOut:
        pair = um.oauth.exchange(data.code, ctx=ctx, cookie=request.cookies.get(COOKIE_NAME))
        _set_cookie(response, None)
        return TokenPairOut.of(pair)

    @router.post(
        "/auth/oauth/{provider}/link",
        response_model=AuthorizationUrlOut,
        summary="Start linking a provider to your account (sets the browser-binding cookie)",
        responses={**problems(400, 401, 404, 413, 422, 429), **_doc(503)},
        openapi_extra=access("user"),
    )
    def link(
        provider: str, data: LinkIn, response: Response, user: CurrentUser, um: UM, ctx: Ctx
    ) -> AuthorizationUrlOut:
        start = um.oauth.begin_link(provider, user.id, redirect_url=data.redirect_url, ctx=ctx)
        _set_cookie(response, start.cookie)
        return AuthorizationUrlOut(authorization_url=start.url)

    @router.get(
        "/users/me/oauth-accounts",
        response_model=ItemsOut[OAuthAccountOut],
        summary="The provider accounts linked to yours",
        responses=problems(401, 503),
        openapi_extra=access("user"),
    )
    def list_accounts(user: CurrentUser, um: UM) -> ItemsOut[OAuthAccountOut]:
        return items(OAuthAccountOut.of(a) for a in um.oauth.accounts(user.id))

    @router.delete(
        "/users/me/oauth-accounts/{provider}",
        status_code=204,
        response_class=Response,
        summary="Unlink a provider (409 `last_login_method` if it is your only way to sign in)",
        responses=problems(401, 404, 409, 503),
        openapi_extra=access("user"),
    )
    def unlink(provider: str, user: CurrentUser, um: UM, ctx: Ctx) -> None:
        um.oauth.unlink(user.id, provider, ctx=ctx)

    return router
