"""Sign-in with Google and other OpenID Connect providers (``um.oauth``).

The core owns the flow (:class:`OAuthService`); the adapters serve it over HTTP. The
providers talk HTTP through ``httpx`` and verify ID tokens with ``joserfc``, both of
the ``oauth`` extra and imported only when a provider is used.
"""

from usermgmt.oauth.providers import IdentityClaims, OIDCProvider, ProviderConfig, build_providers
from usermgmt.oauth.redirects import append_query, safe_redirect
from usermgmt.oauth.service import (
    COOKIE_NAME,
    EXCHANGE_TTL_SECONDS,
    STATE_TTL_SECONDS,
    AuthorizationStart,
    BrowserCookie,
    CallbackResult,
    OAuthService,
    ProviderInfo,
)

__all__ = [
    "COOKIE_NAME",
    "EXCHANGE_TTL_SECONDS",
    "STATE_TTL_SECONDS",
    "AuthorizationStart",
    "BrowserCookie",
    "CallbackResult",
    "IdentityClaims",
    "OAuthService",
    "OIDCProvider",
    "ProviderConfig",
    "ProviderInfo",
    "append_query",
    "build_providers",
    "safe_redirect",
]
