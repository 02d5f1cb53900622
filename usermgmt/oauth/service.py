"""Sign-in with OpenID Connect providers: the flow, the accounts, the one-time exchange.

The flow (the adapters only translate HTTP)::

    GET  /auth/oauth/{provider}/authorize[?redirect_url=]   begin()     → 302 to the provider
         (sets the HttpOnly browser-binding cookie)
    GET  /auth/oauth/{provider}/callback?state=&code=        complete()  → 302 to redirect_url?code=
    POST /auth/oauth/exchange {code}                         exchange()  → our token pair

``begin`` draws ``state``, ``nonce``, a PKCE verifier and a browser secret; the flow
record (provider, verifier, nonce, redirect target, SHA-256 of the browser secret, the
linking user if any) goes to the shared cache under the hash of ``state`` for
:data:`STATE_TTL_SECONDS`, so any instance can finish it. ``complete`` takes the record
out atomically (single use even under concurrency), requires the cookie to match
(double submit, SEC-OA-01), redeems the code with the verifier, verifies the ID token
and then signs the user in, signs them up or links the identity. The browser receives a
one-time code valid :data:`EXCHANGE_TTL_SECONDS` (a one-time token, stored hashed);
provider tokens never leave the server (they are not even kept).

Accounts are keyed by ``(provider, sub)``, never by email (SEC-OA-05). An unknown
identity whose email belongs to an existing account is linked to it only when the
provider asserts ``email_verified``, the account is itself verified and
``OAUTH_LINK_VERIFIED_EMAIL`` is on (off by default, SEC-OA-06); otherwise the user signs
in and links explicitly. No account is created on an email the provider does not assert
as verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final
from uuid import UUID

from usermgmt.errors import (
    Conflict,
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    LastLoginMethod,
    NotFound,
    OAuthAccountInUse,
    OAuthAccountNotLinked,
    OAuthEmailMissing,
    OAuthError,
    OAuthProviderError,
    OAuthStateInvalid,
    OneTimeTokenError,
    UserMgmtError,
    ValidationError,
)
from usermgmt.ids import new_id
from usermgmt.models import (
    OAuthAccount,
    OneTimeToken,
    RequestContext,
    TokenPair,
    TokenPurpose,
    User,
)
from usermgmt.oauth.providers import IdentityClaims, OIDCProvider, build_providers, safe_error_code
from usermgmt.oauth.redirects import append_query, safe_redirect
from usermgmt.ports import Cache, UnitOfWork
from usermgmt.schemas import EmailIn, parse
from usermgmt.security.limits import Limit
from usermgmt.security.opaque import hash_if_well_formed, hash_token, is_well_formed, new_token
from usermgmt.services.auth import AuthService
from usermgmt.services.base import CommitThenRaise, Kernel

__all__ = [
    "COOKIE_NAME",
    "EXCHANGE_TTL_SECONDS",
    "STATE_TTL_SECONDS",
    "AuthorizationStart",
    "BrowserCookie",
    "CallbackResult",
    "OAuthService",
    "ProviderInfo",
]

logger = logging.getLogger("usermgmt.oauth")

#: How long a started sign-in may take (state, nonce and verifier live this long).
STATE_TTL_SECONDS: Final = 600
#: Lifetime of the one-time code the callback hands the browser (SPEC §4: 60 s).
EXCHANGE_TTL_SECONDS: Final = 60
#: The HttpOnly cookie binding a flow to the browser that started it (SEC-OA-01).
COOKIE_NAME: Final = "um_oauth"
#: Flows started and codes exchanged per client address.
AUTHORIZE_PER_IP: Final = Limit(60, 60)
EXCHANGE_PER_IP: Final = Limit(60, 60)
_STATE_PREFIX: Final = "oauth:state:"
#: The one-time code's hash → the SHA-256 of the browser secret it was issued to.
_EXCHANGE_PREFIX: Final = "oauth:exchange:"
_MAX_CODE_LENGTH: Final = 4096


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    display_name: str


@dataclass(frozen=True)
class BrowserCookie:
    """The browser-binding cookie (``COOKIE_NAME``) an adapter sets: HttpOnly,
    SameSite=Lax, path ``/``; ``secure`` when our callback URL is https."""

    value: str
    max_age: int
    secure: bool


@dataclass(frozen=True)
class AuthorizationStart:
    """Where to send the browser, and the cookie to set on it first."""

    url: str
    cookie: BrowserCookie


@dataclass(frozen=True)
class CallbackResult:
    """Where the callback redirects the browser (with ``?code=`` or ``?linked=``)."""

    redirect_to: str
    user_id: UUID
    created: bool = False
    linked: bool = False
    #: After a sign-in, the browser-binding cookie stays (briefly) so that only this
    #: browser can exchange the code; None: delete it (links).
    cookie: BrowserCookie | None = None


class OAuthService:
    """OpenID Connect sign-in, sign-up and account linking (``um.oauth``)."""

    def __init__(
        self,
        kernel: Kernel,
        auth: AuthService,
        providers: Mapping[str, OIDCProvider] | None = None,
    ) -> None:
        self._k = kernel
        self._auth = auth
        self._providers = (
            dict(providers)
            if providers is not None
            else build_providers(kernel.settings, now=lambda: kernel.now().timestamp())
        )
        cache: Cache | None = kernel.cache
        if cache is None:
            from usermgmt.backends.memory.cache import MemoryCache

            cache = MemoryCache(clock=kernel.clock)
            if self._providers:
                logger.warning(
                    "no shared cache (REDIS_URL): OAuth sign-ins must finish on the "
                    "process that started them"
                )
        self._cache = cache

    # --- providers ----------------------------------------------------------------------------

    def providers(self) -> list[ProviderInfo]:
        """The configured providers, in configuration order."""
        return [ProviderInfo(p.name, p.display_name) for p in self._providers.values()]

    def provider(self, name: str) -> OIDCProvider:
        """The provider called ``name``; NotFound otherwise."""
        provider = self._providers.get(name) if isinstance(name, str) else None
        if provider is None:
            raise NotFound("provider", "No such sign-in provider.")
        return provider

    def add_provider(self, provider: OIDCProvider) -> None:
        """Register a provider built in code (besides those of the settings)."""
        self._providers[provider.name] = provider

    def redirect_uri(self, name: str) -> str:
        """The ``redirect_uri`` sent to the provider: configuration only, never the
        request's Host (SEC-OA-08)."""
        s = self._k.settings
        base = s.oauth_callback_base_url or s.app_url
        return f"{base}/auth/oauth/{name}/callback"

    # --- the flow -----------------------------------------------------------------------------

    def begin(
        self,
        provider: str,
        *,
        redirect_url: str | None = None,
        ctx: RequestContext | None = None,
        link_user_id: UUID | None = None,
    ) -> AuthorizationStart:
        """Start a sign-in (or, with ``link_user_id``, a link) with ``provider``.

        Raises NotFound (unknown provider), RateLimited, OAuthProviderUnavailable.
        """
        k, s = self._k, self._k.settings
        chosen = self.provider(provider)
        k.throttle("oauth:ip", ctx.ip if ctx else None, AUTHORIZE_PER_IP)
        target = safe_redirect(redirect_url, s.oauth_redirect_urls, s.app_url)
        state, nonce, browser = new_token(), new_token(), new_token()
        verifier = secrets.token_urlsafe(64)  # 86 characters (RFC 7636: 43-128)
        redirect_uri = self.redirect_uri(provider)
        url = chosen.authorization_url(
            redirect_uri=redirect_uri, state=state, nonce=nonce, code_verifier=verifier
        )
        record = {
            "provider": provider,
            "verifier": verifier,
            "nonce": nonce,
            "target": target,
            "browser": _sha256(browser),
            "link_user": None if link_user_id is None else str(link_user_id),
        }
        self._cache.set(_STATE_PREFIX + hash_token(state), json.dumps(record), STATE_TTL_SECONDS)
        return AuthorizationStart(
            url=url,
            cookie=BrowserCookie(
                browser, STATE_TTL_SECONDS, secure=redirect_uri.startswith("https://")
            ),
        )

    def begin_link(
        self,
        provider: str,
        user_id: UUID,
        *,
        redirect_url: str | None = None,
        ctx: RequestContext | None = None,
    ) -> AuthorizationStart:
        """Start linking ``provider`` to the signed-in user ``user_id``."""
        self.provider(provider)
        user = self._k.read(lambda uow: uow.users.get(user_id))
        if user is None or not user.is_active:
            raise InvalidCredentials()
        return self.begin(provider, redirect_url=redirect_url, ctx=ctx, link_user_id=user_id)

    def complete(
        self,
        provider: str,
        *,
        state: str | None,
        code: str | None,
        error: str | None = None,
        cookie: str | None,
        ctx: RequestContext | None = None,
    ) -> CallbackResult:
        """Finish the flow at the callback.

        Raises OAuthStateInvalid (missing, unknown, used, expired state or another
        browser's), OAuthProviderError, OAuthIdTokenInvalid, OAuthEmailMissing,
        OAuthAccountNotLinked, OAuthAccountInUse, EmailNotVerified,
        OAuthProviderUnavailable (503), NotFound (unknown provider).
        """
        link_user: object = None
        try:
            chosen = self.provider(provider)
            record = self._take_state(state)
            if record.get("provider") != provider:
                raise OAuthStateInvalid("This sign-in was started with another provider.")
            expected = record.get("browser")
            if (
                not isinstance(cookie, str)
                or not isinstance(expected, str)
                or not hmac.compare_digest(_sha256(cookie), expected)
            ):
                raise OAuthStateInvalid("This sign-in was not started in this browser.")
            link_user = record.get("link_user")
            if error is not None:
                raise OAuthProviderError(
                    f"The sign-in provider refused the request ({safe_error_code(error)})."
                )
            if not isinstance(code, str) or not code or len(code) > _MAX_CODE_LENGTH:
                raise OAuthProviderError("The provider sent no authorization code.")
            claims = chosen.redeem(
                code=code,
                redirect_uri=self.redirect_uri(provider),
                code_verifier=str(record["verifier"]),
                nonce=str(record["nonce"]),
            )
            target = str(record["target"])
            if link_user is not None:
                self._link(provider, claims, UUID(str(link_user)), ctx)
                return CallbackResult(
                    append_query(target, linked=provider), UUID(str(link_user)), linked=True
                )
            user, created, one_time = self._sign_in(provider, claims, ctx)
        except (OAuthError, Conflict, EmailNotVerified, InvalidCredentials, NotFound) as exc:
            # an unknown provider's name is the caller's text: not recorded as such
            known = provider if provider in self._providers else "unknown"
            self._failed(known, exc, link_user, ctx)
            raise
        # The code is bound to this browser (login CSRF: a code planted in another
        # browser is refused by exchange()).
        self._cache.set(
            _EXCHANGE_PREFIX + hash_token(one_time), str(expected), EXCHANGE_TTL_SECONDS
        )
        return CallbackResult(
            append_query(target, code=one_time),
            user.id,
            created=created,
            cookie=BrowserCookie(
                cookie,
                EXCHANGE_TTL_SECONDS,
                secure=self.redirect_uri(provider).startswith("https://"),
            ),
        )

    def _take_state(self, state: str | None) -> dict[str, Any]:
        if not is_well_formed(state):
            raise OAuthStateInvalid("The sign-in attempt is missing its state.")
        raw = self._cache.pop(_STATE_PREFIX + hash_token(str(state)))
        if raw is None:
            raise OAuthStateInvalid("This sign-in attempt is unknown, expired or already used.")
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise OAuthStateInvalid("This sign-in attempt is unknown, expired or already used.")
        return record

    def _failed(
        self, provider: str, exc: UserMgmtError, link_user: object, ctx: RequestContext | None
    ) -> None:
        actor = UUID(str(link_user)) if link_user is not None else None

        def body(uow: UnitOfWork) -> None:
            self._k.audit(
                uow,
                "oauth.link_failed" if actor is not None else "user.login_failed",
                ctx,
                actor=actor,
                target_type="user" if actor is not None else None,
                target_id=actor,
                outcome="failure",
                method="oauth",
                provider=provider,
                reason=exc.code,
            )

        try:
            self._k.write(body)
        except UserMgmtError:
            logger.warning("could not record a failed OAuth sign-in")
        if actor is None:
            self._auth.count_login("failure")

    # --- accounts -------------------------------------------------------------------------------

    def _sign_in(
        self, provider: str, claims: IdentityClaims, ctx: RequestContext | None
    ) -> tuple[User, bool, str]:
        """The user of this identity (found, auto-linked or created) and a one-time code."""
        k, s = self._k, self._k.settings
        email: str | None = None
        if claims.email is not None:
            try:
                email = parse(EmailIn, email=claims.email).email
            except ValidationError:
                email = None
        one_time = new_token()

        def body(uow: UnitOfWork) -> tuple[User, bool]:
            now = k.now()
            created = False
            account = uow.oauth_accounts.get(provider, claims.subject)
            if account is not None:
                user = uow.users.get(account.user_id, for_update=True)
                if user is None or not user.is_active:
                    raise InvalidCredentials()
            else:
                if email is None:
                    raise OAuthEmailMissing(
                        "The provider gave no usable email address; a new account needs one."
                    )
                if not claims.email_verified:
                    # Never sign up (nor reveal whether the address has an account) on an
                    # address the provider does not vouch for: it could be anyone's.
                    raise EmailNotVerified("The provider did not verify this email address.")
                existing = uow.users.get_by_email(email)
                if existing is not None:
                    user = self._auto_link(uow, provider, claims, existing, ctx)
                else:
                    user = User(
                        id=new_id(),
                        email=email,
                        name=claims.name,
                        password_hash=None,
                        is_verified=True,
                        email_verified_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                    uow.users.add(user)
                    k.audit(
                        uow,
                        "user.registered",
                        ctx,
                        actor=user.id,
                        target_type="user",
                        target_id=user.id,
                        method="oauth",
                        provider=provider,
                    )
                    self._add_account(uow, user, provider, claims, ctx, auto=False)
                    created = True
            if s.require_verified_email and not user.is_verified:
                raise EmailNotVerified("Verify your email address before signing in.")
            uow.tokens.add(
                OneTimeToken(
                    id=new_id(),
                    user_id=user.id,
                    purpose=TokenPurpose.OAUTH_EXCHANGE,
                    token_hash=hash_token(one_time),
                    email=user.email,
                    created_at=now,
                    expires_at=k.expires(EXCHANGE_TTL_SECONDS),
                )
            )
            k.audit(
                uow,
                "oauth.callback",
                ctx,
                actor=user.id,
                target_type="user",
                target_id=user.id,
                provider=provider,
            )
            return user, created

        try:
            user, created = k.write(body)
        except Conflict as exc:
            if type(exc) not in (EmailTaken, Conflict):  # not a lost insert race
                raise
            user, created = k.write(body)  # lost a race with the same identity: again
        return user, created, one_time

    def _auto_link(
        self,
        uow: UnitOfWork,
        provider: str,
        claims: IdentityClaims,
        existing: User,
        ctx: RequestContext | None,
    ) -> User:
        """Link an unknown identity to the account with its email, only if allowed (SEC-OA-06)."""
        k, s = self._k, self._k.settings
        same_provider = [
            a for a in uow.oauth_accounts.list_for_user(existing.id) if a.provider == provider
        ]
        if (
            not (s.oauth_link_verified_email and claims.email_verified)
            or same_provider
            # An account never verified may have been registered by someone else with
            # this address (pre-registration takeover): never hand it to the provider user.
            or not existing.is_verified
        ):
            k.audit(
                uow,
                "oauth.link_refused",
                ctx,
                target_type="user",
                target_id=existing.id,
                outcome="denied",
                provider=provider,
                email_verified=claims.email_verified,
            )
            raise CommitThenRaise(
                OAuthAccountNotLinked(
                    "An account with this email address exists. Sign in to it and link "
                    "this provider from your account."
                )
            )
        user = uow.users.get(existing.id, for_update=True)
        if user is None or not user.is_active:
            raise InvalidCredentials()
        if not user.is_verified:  # unverified meanwhile: refuse as above
            raise OAuthAccountNotLinked(
                "An account with this email address exists. Sign in to it and link "
                "this provider from your account."
            )
        self._add_account(uow, user, provider, claims, ctx, auto=True)
        return user

    def _add_account(
        self,
        uow: UnitOfWork,
        user: User,
        provider: str,
        claims: IdentityClaims,
        ctx: RequestContext | None,
        *,
        auto: bool,
    ) -> None:
        account = OAuthAccount(
            id=new_id(),
            user_id=user.id,
            provider=provider,
            subject=claims.subject,
            created_at=self._k.now(),
            email=None if claims.email is None else claims.email[:320],
        )
        uow.oauth_accounts.add(account)
        self._k.audit(
            uow,
            "oauth.linked",
            ctx,
            actor=user.id,
            target_type="oauth_account",
            target_id=account.id,
            provider=provider,
            automatic=auto,
        )

    def _link(
        self, provider: str, claims: IdentityClaims, user_id: UUID, ctx: RequestContext | None
    ) -> None:
        def body(uow: UnitOfWork) -> None:
            user = uow.users.get(user_id, for_update=True)
            if user is None or not user.is_active:
                raise InvalidCredentials()
            account = uow.oauth_accounts.get(provider, claims.subject)
            if account is not None:
                if account.user_id == user_id:
                    return  # linked already: nothing to do
                raise OAuthAccountInUse("This provider account is linked to another user.")
            if any(a.provider == provider for a in uow.oauth_accounts.list_for_user(user_id)):
                raise OAuthAccountInUse(
                    "Another account of this provider is linked already; unlink it first."
                )
            self._add_account(uow, user, provider, claims, ctx, auto=False)

        try:
            self._k.write(body)
        except Conflict as exc:
            if type(exc) is Conflict:  # the same identity linked concurrently elsewhere
                raise OAuthAccountInUse(
                    "This provider account is linked to another user."
                ) from None
            raise

    def exchange(
        self, code: str, ctx: RequestContext | None = None, *, cookie: str | None = None
    ) -> TokenPair:
        """Trade the callback's one-time code for a token pair (a new session).

        ``cookie`` is the browser-binding cookie (``um_oauth``) of the browser that
        finished the callback: the code is refused without it or with another browser's
        (a login CSRF would plant the attacker's code in the victim's browser).

        Raises OneTimeTokenError (unknown, used or expired code, or another browser's),
        RateLimited.
        """
        k = self._k
        k.throttle("oauth_exchange:ip", ctx.ip if ctx else None, EXCHANGE_PER_IP)
        token_hash = hash_if_well_formed(code)
        if token_hash is None:
            raise OneTimeTokenError("Invalid or expired code.")
        bound = self._cache.get(_EXCHANGE_PREFIX + token_hash)
        if (
            not isinstance(cookie, str)
            or bound is None
            or not hmac.compare_digest(_sha256(cookie), bound)
        ):
            raise OneTimeTokenError("Invalid or expired code, or it was issued to another browser.")

        def body(uow: UnitOfWork) -> TokenPair:
            consumed = uow.tokens.consume(TokenPurpose.OAUTH_EXCHANGE, token_hash, k.now())
            if consumed is None:
                raise OneTimeTokenError("Invalid or expired code.")
            user = uow.users.get(consumed.user_id, for_update=True)
            if user is None or not user.is_active:
                raise OneTimeTokenError("Invalid or expired code.")
            now = k.now()
            user = replace(user, last_login_at=now, updated_at=now)
            uow.users.update(user)
            pair = self._auth.open_session(uow, user, ctx)
            k.audit(
                uow,
                "user.login",
                ctx,
                actor=user.id,
                target_type="session",
                target_id=pair.session_id,
                method="oauth",
            )
            return pair

        pair = k.write(body)
        self._cache.delete(_EXCHANGE_PREFIX + token_hash)
        self._auth.count_login("success")
        return pair

    def accounts(self, user_id: UUID) -> list[OAuthAccount]:
        """The provider identities linked to the user."""
        return self._k.read(lambda uow: uow.oauth_accounts.list_for_user(user_id))

    def unlink(self, user_id: UUID, provider: str, ctx: RequestContext | None = None) -> None:
        """Remove the user's identity at ``provider``.

        Raises NotFound (nothing linked there) and LastLoginMethod when the user would be
        left without a password and without another provider (checked under the user's
        row lock, so two concurrent unlinks cannot both pass).
        """
        k = self._k

        def body(uow: UnitOfWork) -> None:
            user = uow.users.get(user_id, for_update=True)
            if user is None or not user.is_active:
                raise InvalidCredentials()
            accounts = uow.oauth_accounts.list_for_user(user_id)
            targets = [a for a in accounts if a.provider == provider]
            if not targets:
                raise NotFound("linked account", "No account of this provider is linked.")
            if user.password_hash is None and len(accounts) == len(targets):
                raise LastLoginMethod(
                    "This is your only way to sign in: set a password or link another "
                    "provider first."
                )
            for account in targets:
                uow.oauth_accounts.delete(account.id)
                k.audit(
                    uow,
                    "oauth.unlinked",
                    ctx,
                    actor=user_id,
                    target_type="oauth_account",
                    target_id=account.id,
                    provider=provider,
                )

        k.write(body)
