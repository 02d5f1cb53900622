"""OpenID Connect providers as seen by the relying party (us).

One :class:`OIDCProvider` per configured provider: it reads the provider's discovery
document, builds authorization URLs (PKCE S256, ``state``, ``nonce``), redeems the
authorization code at the token endpoint and verifies the ID token (signature against
the provider's JWKS, ``iss`` exact, ``aud``/``azp``, ``exp``, ``nonce``).

Discovery documents and key sets are cached in the process (an hour); a key id missing
from the cached set makes one fresh JWKS fetch (key rotation). HTTP goes through
``httpx`` and the JOSE work through ``joserfc``, both imported lazily: they come with
the ``oauth`` extra (``pip install "usermgmt[oauth]"``), and without it the first use
raises MissingDependency naming that extra.

Provider failures never escape as library exceptions: an unreachable provider or a 5xx
answer raises :class:`~usermgmt.errors.OAuthProviderUnavailable` (503), an error answer
to the token request :class:`~usermgmt.errors.OAuthProviderError` (400) and any flaw in
the ID token :class:`~usermgmt.errors.OAuthIdTokenInvalid` (400).
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import math
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard
from urllib.parse import urlencode

from usermgmt.config import OIDCProviderSettings, Settings, provider_url_allowed
from usermgmt.errors import (
    MissingDependency,
    OAuthIdTokenInvalid,
    OAuthProviderError,
    OAuthProviderUnavailable,
)

__all__ = [
    "GOOGLE_DISCOVERY_URL",
    "GOOGLE_ISSUERS",
    "IdentityClaims",
    "OIDCProvider",
    "ProviderConfig",
    "build_providers",
    "pkce_challenge",
]

logger = logging.getLogger("usermgmt.oauth")

GOOGLE_DISCOVERY_URL: Final = "https://accounts.google.com/.well-known/openid-configuration"
#: Google's ID tokens carry either form (Google's documentation, SEC-OA-04).
GOOGLE_ISSUERS: Final = ("https://accounts.google.com", "accounts.google.com")
_WELL_KNOWN: Final = "/.well-known/openid-configuration"
#: Signature algorithms accepted for ID tokens (never ``none``, never HMAC with the secret).
ID_TOKEN_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")  # fmt: skip
#: How long a discovery document and a key set are trusted before being fetched again.
METADATA_TTL_SECONDS: Final = 3600.0
#: Clock skew tolerated on ``exp`` and ``iat``.
LEEWAY_SECONDS: Final = 60
#: Timeout of each request to a provider: the whole request, body included.
HTTP_TIMEOUT_SECONDS: Final = 10.0
#: Oldest ``iat`` accepted (besides the leeway): an ID token is used right after issue.
MAX_ID_TOKEN_AGE_SECONDS: Final = 600
_MAX_RESPONSE_BYTES: Final = 1_000_000
_CHUNK_BYTES: Final = 65_536


def _modules() -> tuple[Any, Any]:
    """httpx and joserfc, or MissingDependency naming the ``oauth`` extra."""
    try:
        import httpx
        import joserfc.jwk
        import joserfc.jwt
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise MissingDependency(exc.name or "httpx", "oauth") from None
    return httpx, joserfc


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every provider request: building one loads the CA bundle,
    which costs more than the request itself."""
    try:
        import certifi
    except ImportError:  # pragma: no cover - httpx depends on certifi
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier`` (RFC 7636 §4.2), computed by Authlib."""
    try:
        from authlib.oauth2.rfc7636 import (  # type: ignore[import-untyped]
            create_s256_code_challenge,
        )
    except ImportError:  # pragma: no cover - exercised without the extra
        raise MissingDependency("Authlib", "oauth") from None
    challenge: str = create_s256_code_challenge(verifier)
    return challenge


@dataclass(frozen=True)
class ProviderConfig:
    """What we know of one provider before talking to it."""

    name: str
    client_id: str
    client_secret: str = field(repr=False)
    discovery_url: str
    #: Accepted ``iss`` values (exact strings); empty: the discovery document's issuer.
    issuers: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    display_name: str = ""

    @classmethod
    def of(cls, provider: OIDCProviderSettings) -> ProviderConfig:
        discovery = provider.discovery_url or provider.issuer.rstrip("/") + _WELL_KNOWN  # type: ignore[union-attr]
        return cls(
            name=provider.name,
            client_id=provider.client_id,
            client_secret=provider.client_secret.get_secret_value(),
            discovery_url=discovery,
            issuers=() if provider.issuer is None else (provider.issuer,),
            scopes=tuple(provider.scopes),
            display_name=provider.display_name or provider.name,
        )


@dataclass(frozen=True)
class IdentityClaims:
    """The verified claims of an ID token that account handling uses."""

    subject: str
    email: str | None
    email_verified: bool
    name: str | None
    issuer: str


@dataclass
class _Cached:
    value: Any
    fetched_at: float


class OIDCProvider:
    """One OpenID Connect provider (Google is one with a fixed discovery URL and issuers).

    Thread-safe; one instance per provider per process. ``now`` gives the current Unix
    time used for ``exp``/``iat`` checks (the UserManagement clock).
    """

    def __init__(
        self,
        config: ProviderConfig,
        *,
        now: Callable[[], float] = time.time,
        transport: Any = None,
    ) -> None:
        self.config = config
        self._now = now
        self._transport = transport  # an httpx transport (tests); None: the network
        self._lock = threading.Lock()
        self._metadata: _Cached | None = None
        self._jwks: _Cached | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def display_name(self) -> str:
        return self.config.display_name

    # --- HTTP -----------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON body) of one request; OAuthProviderUnavailable when the
        provider cannot be reached, answers 5xx or something that is not JSON, sends more
        than ``_MAX_RESPONSE_BYTES`` or takes longer than ``HTTP_TIMEOUT_SECONDS`` in all
        (the body is streamed: reading stops at the cap or the deadline)."""
        httpx, _ = _modules()
        deadline = time.monotonic() + HTTP_TIMEOUT_SECONDS
        too_large = too_slow = False
        try:
            with (
                httpx.Client(
                    timeout=HTTP_TIMEOUT_SECONDS,
                    follow_redirects=False,
                    transport=self._transport,
                    verify=_tls(),
                ) as client,
                client.stream(
                    method,
                    url,
                    data=data,
                    headers={"Accept": "application/json"},
                    auth=auth,
                ) as response,
            ):
                chunks: list[bytes] = []
                total = 0
                for chunk in response.iter_bytes(_CHUNK_BYTES):  # decoded
                    total += len(chunk)
                    if total > _MAX_RESPONSE_BYTES:
                        too_large = True
                        break
                    if time.monotonic() > deadline:
                        too_slow = True
                        break
                    chunks.append(chunk)
                content = b"".join(chunks)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            logger.warning("OIDC provider %s unreachable (%s)", self.name, type(exc).__name__)
            raise OAuthProviderUnavailable(
                f"The sign-in provider {self.name!r} cannot be reached; try again later."
            ) from None
        if too_slow:
            logger.warning("OIDC provider %s too slow (over %ss)", self.name, HTTP_TIMEOUT_SECONDS)
            raise OAuthProviderUnavailable(
                f"The sign-in provider {self.name!r} cannot be reached; try again later."
            )
        if response.status_code >= 500 or too_large:
            logger.warning("OIDC provider %s answered %d", self.name, response.status_code)
            raise OAuthProviderUnavailable(
                f"The sign-in provider {self.name!r} is failing; try again later."
            )
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            logger.warning("OIDC provider %s sent a non-JSON answer", self.name)
            raise OAuthProviderUnavailable(
                f"The sign-in provider {self.name!r} sent an unusable answer."
            )
        return response.status_code, body

    def _client_auth(self, form: dict[str, str]) -> tuple[str, str] | None:
        """client_secret_basic (RFC 6749 §2.3.1, form-encoded id and secret) unless the
        provider supports only client_secret_post (then the form carries them)."""
        from urllib.parse import quote

        methods = self.metadata().get("token_endpoint_auth_methods_supported")
        if (
            isinstance(methods, list)
            and "client_secret_basic" not in methods
            and "client_secret_post" in methods
        ):
            form["client_id"] = self.config.client_id
            form["client_secret"] = self.config.client_secret
            return None
        return quote(self.config.client_id, safe=""), quote(self.config.client_secret, safe="")

    # --- discovery and keys -------------------------------------------------------------------

    def metadata(self) -> Mapping[str, Any]:
        """The discovery document (cached), checked: issuer and the endpoints we use."""
        cached = self._metadata
        if cached is not None and time.monotonic() - cached.fetched_at < METADATA_TTL_SECONDS:
            return dict(cached.value)
        if not provider_url_allowed(self.config.discovery_url):
            raise OAuthProviderUnavailable(
                f"The sign-in provider {self.name!r} is misconfigured (https:// required)."
            )
        status, document = self._request("GET", self.config.discovery_url)
        if status != 200:
            raise OAuthProviderUnavailable(
                f"The sign-in provider {self.name!r} has no usable discovery document."
            )
        issuer = document.get("issuer")
        expected = self.config.issuers or (self.config.discovery_url.removesuffix(_WELL_KNOWN),)
        if not isinstance(issuer, str) or issuer not in expected:
            # OIDC Discovery §4.3: the issuer must be the one we asked (mix-up defence)
            logger.error(
                "OIDC provider %s: discovery issuer %r is not %r", self.name, issuer, expected
            )
            raise OAuthProviderUnavailable(
                f"The sign-in provider {self.name!r} is misconfigured (issuer mismatch)."
            )
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            # https:// only (http:// on loopback: development), or codes and keys would
            # travel in clear
            if not isinstance(document.get(key), str) or not provider_url_allowed(document[key]):
                raise OAuthProviderUnavailable(
                    f"The sign-in provider {self.name!r} has no {key} in its discovery document."
                )
        self._metadata = _Cached(document, time.monotonic())
        return dict(document)

    def _issuers(self) -> tuple[str, ...]:
        return self.config.issuers or (str(self.metadata()["issuer"]),)

    def _key_set(self, *, refresh: bool) -> Any:
        _, joserfc = _modules()
        cached = self._jwks
        if (
            not refresh
            and cached is not None
            and time.monotonic() - cached.fetched_at < METADATA_TTL_SECONDS
        ):
            return cached.value
        with self._lock:
            if self._jwks is not cached and self._jwks is not None:
                return self._jwks.value  # another thread fetched it meanwhile
            status, document = self._request("GET", str(self.metadata()["jwks_uri"]))
            try:
                key_set = joserfc.jwk.KeySet.import_key_set(document) if status == 200 else None
            except Exception:  # any malformed key set is the provider's fault
                key_set = None
            if key_set is None:
                logger.warning("OIDC provider %s: unusable JWKS", self.name)
                raise OAuthProviderUnavailable(
                    f"The sign-in provider {self.name!r} publishes no usable keys."
                ) from None
            self._jwks = _Cached(key_set, time.monotonic())
            return key_set

    # --- the flow -----------------------------------------------------------------------------

    def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str
    ) -> str:
        """Where to send the browser: response_type=code with state, nonce and PKCE S256."""
        endpoint = str(self.metadata()["authorization_endpoint"])
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(self.config.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": pkce_challenge(code_verifier),
                "code_challenge_method": "S256",
            }
        )
        return endpoint + ("&" if "?" in endpoint else "?") + query

    def redeem(
        self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> IdentityClaims:
        """Exchange the authorization code for tokens and return the ID token's verified
        claims. The provider's access and refresh tokens are dropped here (SEC-OA-09)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        auth = self._client_auth(form)
        status, body = self._request(
            "POST", str(self.metadata()["token_endpoint"]), data=form, auth=auth
        )
        if status != 200:
            error = body.get("error")
            if error in ("invalid_client", "unauthorized_client") or status == 401:
                # our registration is wrong, not the user's attempt: an operator must act
                logger.error(
                    "OIDC provider %s refused our client credentials (%s): check the "
                    "client id and secret",
                    self.name,
                    safe_error_code(error),
                )
                raise OAuthProviderUnavailable(
                    f"Sign-in with {self.name!r} is misconfigured; try again later."
                )
            logger.info("OIDC provider %s refused the code (%s)", self.name, safe_error_code(error))
            raise OAuthProviderError(
                f"The sign-in provider refused the request ({safe_error_code(error)})."
            )
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise OAuthIdTokenInvalid("The provider sent no ID token.")
        return self.verify_id_token(id_token, nonce=nonce)

    def verify_id_token(self, id_token: str, *, nonce: str) -> IdentityClaims:
        """Verify signature (JWKS, refetched once for an unknown key id), ``iss`` exact,
        ``aud``/``azp``, ``exp``/``iat`` and ``nonce``; the claims, or OAuthIdTokenInvalid."""
        _, joserfc = _modules()
        from joserfc.errors import InvalidKeyIdError, JoseError

        try:
            try:
                token = joserfc.jwt.decode(
                    id_token, self._key_set(refresh=False), algorithms=list(ID_TOKEN_ALGORITHMS)
                )
            except InvalidKeyIdError:
                token = joserfc.jwt.decode(
                    id_token, self._key_set(refresh=True), algorithms=list(ID_TOKEN_ALGORITHMS)
                )
        except (JoseError, ValueError, TypeError) as exc:
            logger.info("OIDC provider %s: ID token rejected (%s)", self.name, type(exc).__name__)
            raise OAuthIdTokenInvalid("The ID token's signature is invalid.") from None
        return self._check_claims(token.claims, nonce)

    def _check_claims(self, claims: Mapping[str, Any], nonce: str) -> IdentityClaims:
        def bad(what: str) -> OAuthIdTokenInvalid:
            logger.info("OIDC provider %s: ID token rejected (%s)", self.name, what)
            return OAuthIdTokenInvalid(f"The ID token is not valid ({what}).")

        iss = claims.get("iss")
        if not isinstance(iss, str) or iss not in self._issuers():
            raise bad("issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if self.config.client_id not in audiences:
            raise bad("audience")
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self.config.client_id:
            raise bad("authorized party")
        now = self._now()
        exp = claims.get("exp")
        if not _finite_number(exp) or now > exp + LEEWAY_SECONDS:
            raise bad("expired")
        iat = claims.get("iat")
        if not _finite_number(iat):
            raise bad("issued at")
        if iat > now + LEEWAY_SECONDS:
            raise bad("issued in the future")
        if iat < now - MAX_ID_TOKEN_AGE_SECONDS - LEEWAY_SECONDS:
            raise bad("issued too long ago")
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise bad("nonce")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise bad("subject")
        email = claims.get("email")
        email = email.strip() if isinstance(email, str) and email.strip() else None
        verified = claims.get("email_verified")
        if isinstance(verified, str):  # some providers send "true"
            verified = verified.lower() == "true"
        name = claims.get("name")
        return IdentityClaims(
            subject=sub,
            email=email,
            email_verified=verified is True and email is not None,
            name=name[:200] if isinstance(name, str) and name.strip() else None,
            issuer=iss,
        )


def safe_error_code(error: object) -> str:
    """An OAuth error code fit for a message: lower-case ASCII letters and underscores
    only (RFC 6749 codes), at most 64; ``error`` otherwise."""
    if isinstance(error, str) and re.fullmatch(r"[a-z_]{1,64}", error):
        return error
    return "error"


def _finite_number(value: object) -> TypeGuard[int | float]:
    """A JSON number that is a real time (not a bool, NaN or infinity)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def build_providers(
    settings: Settings, *, now: Callable[[], float] = time.time
) -> dict[str, OIDCProvider]:
    """The configured providers by name: ``google`` when GOOGLE_CLIENT_ID is set, then
    every entry of OIDC_PROVIDERS."""
    providers: dict[str, OIDCProvider] = {}
    if settings.google_client_id and settings.google_client_secret is not None:
        google = ProviderConfig(
            name="google",
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret.get_secret_value(),
            discovery_url=GOOGLE_DISCOVERY_URL,
            issuers=GOOGLE_ISSUERS,
            display_name="Google",
        )
        providers["google"] = OIDCProvider(google, now=now)
    for entry in settings.oidc_providers:
        providers[entry.name] = OIDCProvider(ProviderConfig.of(entry), now=now)
    if providers:  # fail at start, not at the first sign-in, without the extra
        _modules()
        pkce_challenge("x" * 43)
    return providers
