"""Authentication: login, refresh-token rotation, logout, access-token verification.

Sessions are refresh-token families. A refresh token is a JWT (``typ=refresh``,
its own key and audience) naming its session and generation; the session row
stores the generation and the SHA-256 of the current token. Refreshing is a
compare-and-set on (generation, hash): exactly one concurrent caller wins. A
token of an older generation is a reuse: the whole family is revoked. The loser
of a concurrent refresh race is treated the same way (strict: no grace window),
so a leaked token racing its owner kills the session for both.

Access tokens name their session (``sid``); revoking a session therefore kills
its access tokens at once, checked through the fast revocation store or, when
that is absent or failing, the database.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from uuid import UUID

from usermgmt.clock import SystemClock
from usermgmt.errors import (
    BackendUnavailable,
    EmailNotVerified,
    InvalidCredentials,
    InvalidToken,
    NotFound,
    PasswordTooLong,
    TokenExpired,
    TokenReused,
    TokenRevoked,
)
from usermgmt.ids import new_id
from usermgmt.models import AccessClaims, RequestContext, Session, TokenPair, User
from usermgmt.ports import OneStatementReads, UnitOfWork
from usermgmt.schemas import LoginIn, RefreshIn, normalize_email, parse
from usermgmt.security.opaque import new_token
from usermgmt.services.authorization import ProcessLocalReads
from usermgmt.services.base import CommitThenRaise, Kernel

logger = logging.getLogger("usermgmt.auth")

#: How many verified access tokens a process remembers (about 1 KiB each).
_VERIFIED_CACHE_SIZE = 8192


class PasswordResetRequired(InvalidCredentials):
    """An administrator flagged the account: only a password reset lets the user in."""

    code = "password_reset_required"
    title = "Password reset required"


def digest(token: str) -> str:
    """SHA-256 (hex) of a refresh token: the only form the session row keeps."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def lockout_key(email: str) -> str:
    """Counter key of an account: the normalised address, whether or not it exists."""
    return "login:" + normalize_email(email)


class AuthService:
    def __init__(self, kernel: Kernel, on_login: Callable[[str], None] | None = None) -> None:
        self._k = kernel
        self._on_login = on_login
        self._verified: dict[str, AccessClaims] = {}
        self._leeway = kernel.settings.jwt_leeway_seconds
        # one SELECT per check instead of a transaction, when the database offers it
        self._one = kernel.uow if isinstance(kernel.uow, OneStatementReads) else None
        # a database in this process: no round trip, but (several processes may share a
        # revocation store) not the only place a revocation may be known
        self._local = kernel.uow if isinstance(kernel.uow, ProcessLocalReads) else None
        # with it: per verified token, the active user it was last found to belong to
        # (a private copy) and the data version that answer holds for
        self._users: dict[str, tuple[int, User]] = {}
        # the same entry for every token of one user at one version, by the user id's
        # number: one private copy per user, however many tokens (a user's metadata may
        # be large, and one account may hold thousands of tokens)
        self._user_entries: dict[int, tuple[int, User]] = {}

    # --- login ---------------------------------------------------------------------------

    def login(self, email: str, password: str, ctx: RequestContext | None = None) -> TokenPair:
        """Check the password and open a new session.

        Raises InvalidCredentials (same body for unknown, wrong, inactive and
        locked accounts), EmailNotVerified / PasswordResetRequired (only after a
        correct password), RateLimited (per-IP throttle), ValidationError.
        """
        data = parse(LoginIn, email=email, password=password)
        k = self._k
        if len(data.password) > k.settings.password_max_length:
            raise PasswordTooLong(
                f"Passwords are at most {k.settings.password_max_length} characters."
            )
        k.throttle("login:ip", ctx.ip if ctx else None, k.limits.login_per_ip)
        key = lockout_key(data.email)
        decision = k.attempts.acquire(key)
        if not decision.allowed:
            self._failed(None, data.email, "locked", ctx, locked_for=None)
            raise InvalidCredentials()

        try:
            user = k.read(lambda uow: uow.users.get_by_email(data.email))
        except BaseException:
            k.attempts.release(key)  # no check ran: the attempt must not count (F6)
            raise
        ok = False
        reason = "unknown_user"
        if user is None or user.password_hash is None:
            k.hasher.dummy_verify(data.password)  # one verification of equal cost
            reason = "unknown_user" if user is None else "no_password"
        else:
            ok = k.hasher.verify(data.password, user.password_hash)
            reason = "wrong_password"
            if ok and not user.is_active:
                ok, reason = False, "inactive"
        if not ok or user is None:
            locked_for = k.attempts.record_failure(key)
            self._failed(user, data.email, reason, ctx, locked_for=locked_for)
            raise InvalidCredentials()

        k.attempts.record_success(key)
        if user.must_reset_password:
            self._count("reset_required")
            raise PasswordResetRequired(
                "An administrator requires a password reset before the next sign-in."
            )
        if k.settings.require_verified_email and not user.is_verified:
            self._count("unverified")
            raise EmailNotVerified("Verify your email address before signing in.")
        new_hash = (
            k.hasher.hash(data.password)
            if user.password_hash is not None and k.hasher.needs_rehash(user.password_hash)
            else None
        )

        def body(uow: UnitOfWork) -> TokenPair:
            current = uow.users.get(user.id, for_update=True)
            if current is None or not current.is_active:
                raise InvalidCredentials()
            now = k.now()
            updated = replace(current, last_login_at=now, updated_at=now)
            if new_hash:
                updated = replace(updated, password_hash=new_hash)
            uow.users.update(updated)
            pair = self.open_session(uow, updated, ctx)
            k.audit(
                uow,
                "user.login",
                ctx,
                actor=user.id,
                target_type="session",
                target_id=pair.session_id,
                rehashed=True if new_hash else None,
            )
            return pair

        pair = k.write(body)
        self._count("success")
        return pair

    def _failed(
        self,
        user: User | None,
        email: str,
        reason: str,
        ctx: RequestContext | None,
        *,
        locked_for: float | None,
    ) -> None:
        def body(uow: UnitOfWork) -> None:
            actor = None if user is None else user.id
            self._k.audit(
                uow,
                "user.login_failed",
                ctx,
                actor=actor,
                target_type="user",
                target_id=actor,
                email=normalize_email(email)[:254],
                reason=reason,
            )
            if locked_for:
                self._k.audit(
                    uow,
                    "user.locked",
                    ctx,
                    actor=actor,
                    target_type="user",
                    target_id=actor,
                    email=normalize_email(email)[:254],
                    seconds=int(locked_for),
                )

        self._k.write(body)
        self._count("locked" if reason == "locked" else "failure")

    def _count(self, result: str) -> None:
        if self._on_login is not None:
            self._on_login(result)

    def count_login(self, result: str) -> None:
        """Report a sign-in result made elsewhere (OAuth) to the login metrics and hook."""
        self._count(result)

    # --- sessions ---------------------------------------------------------------------------

    def open_session(self, uow: UnitOfWork, user: User, ctx: RequestContext | None) -> TokenPair:
        """Create a session (refresh-token family) for ``user`` inside ``uow``; new tokens.

        Used by password login and by the OAuth exchange; every sign-in gets a new family.
        """
        k, now = self._k, self._k.now()
        session_id = new_id()
        expires_at = now + timedelta(seconds=k.settings.refresh_token_ttl_seconds)
        refresh = self._refresh_token(user.id, session_id, 1, now, expires_at)
        uow.sessions.add(
            Session(
                id=session_id,
                user_id=user.id,
                token_hash=digest(refresh),
                created_at=now,
                last_used_at=now,
                expires_at=expires_at,
                generation=1,
                ip=None if ctx is None else ctx.ip,
                user_agent=None if ctx is None or ctx.user_agent is None else ctx.user_agent[:512],
            )
        )
        return TokenPair(
            access_token=self._access_token(user.id, session_id, now),
            refresh_token=refresh,
            expires_in=k.settings.access_token_ttl_seconds,
            session_id=session_id,
        )

    def refresh(self, refresh_token: str, ctx: RequestContext | None = None) -> TokenPair:
        """Rotate: the presented token dies, a new pair is returned.

        Raises InvalidToken / TokenExpired / TokenRevoked, and TokenReused when an
        already-rotated token comes back (the whole session is then revoked).
        """
        data = parse(RefreshIn, refresh_token=refresh_token)
        k = self._k
        k.throttle("refresh:ip", ctx.ip if ctx else None, k.limits.refresh_per_ip)
        claims = k.codecs.refresh.decode(data.refresh_token, typ="refresh")
        try:
            session_id = uuid.UUID(str(claims["sid"]))
            generation = int(claims["gen"])
        except (KeyError, TypeError, ValueError):
            raise InvalidToken("Invalid token.") from None
        presented = digest(data.refresh_token)
        revoked: list[UUID] = []

        def body(uow: UnitOfWork) -> TokenPair:
            now = k.now()
            session = uow.sessions.get(session_id)
            if session is None or str(session.user_id) != str(claims.get("sub")):
                raise InvalidToken("Invalid token.")
            if session.revoked_at is not None:
                raise TokenRevoked("This session has ended.")
            if session.expires_at <= now:
                raise TokenExpired("This session has expired.")
            if now - session.last_used_at > timedelta(
                seconds=k.settings.refresh_token_idle_ttl_seconds
            ):
                self._revoke(uow, session.id, "idle", revoked)
                raise CommitThenRaise(TokenExpired("This session has expired."))
            user = uow.users.get(session.user_id)
            if user is None or not user.is_active:
                self._revoke(uow, session.id, "user_inactive", revoked)
                raise CommitThenRaise(InvalidToken("Invalid token."))
            if generation > session.generation:
                raise InvalidToken("Invalid token.")
            if generation == session.generation and hmac.compare_digest(
                presented, session.token_hash
            ):
                new_refresh = self._refresh_token(
                    user.id, session.id, generation + 1, now, session.expires_at
                )
                rotated = uow.sessions.rotate(
                    session.id,
                    expected_generation=generation,
                    expected_token_hash=presented,
                    new_token_hash=digest(new_refresh),
                    now=now,
                )
                if rotated is not None:
                    k.audit(
                        uow,
                        "session.refreshed",
                        ctx,
                        actor=user.id,
                        target_type="session",
                        target_id=session.id,
                        generation=generation + 1,
                    )
                    return TokenPair(
                        access_token=self._access_token(user.id, session.id, now),
                        refresh_token=new_refresh,
                        expires_in=k.settings.access_token_ttl_seconds,
                        session_id=session.id,
                    )
                latest = uow.sessions.get(session.id)
                if latest is not None and latest.revoked_at is not None:
                    raise TokenRevoked("This session has ended.")  # lost to a logout: no alarm
            # an older generation, or the loser of a concurrent rotation: reuse
            self._revoke(uow, session.id, "reuse", revoked)
            k.audit(
                uow,
                "session.refresh_token_reuse_detected",
                ctx,
                actor=user.id,
                target_type="session",
                target_id=session.id,
                presented_generation=generation,
            )
            raise CommitThenRaise(
                TokenReused("This refresh token was already used; the session is revoked.")
            )

        try:
            return k.write(body)
        finally:
            k.push_revocations(revoked)

    def _revoke(self, uow: UnitOfWork, session_id: UUID, reason: str, out: list[UUID]) -> None:
        if uow.sessions.revoke(session_id, self._k.now(), reason):
            out.append(session_id)

    def logout(self, user_id: UUID, session_id: UUID, ctx: RequestContext | None = None) -> None:
        """End one session of the user (its refresh and access tokens stop working)."""
        k = self._k
        revoked: list[UUID] = []

        def body(uow: UnitOfWork) -> None:
            session = uow.sessions.get(session_id)
            if session is None or session.user_id != user_id:
                raise NotFound("session")
            self._revoke(uow, session_id, "logout", revoked)
            k.audit(
                uow, "user.logout", ctx, actor=user_id, target_type="session", target_id=session_id
            )

        k.write(body)
        k.push_revocations(revoked)

    def logout_all(self, user_id: UUID, ctx: RequestContext | None = None) -> int:
        """End every session of the user; how many were active."""
        k = self._k

        def body(uow: UnitOfWork) -> list[UUID]:
            ids = uow.sessions.revoke_all_for_user(user_id, k.now(), "logout_all")
            k.audit(
                uow,
                "user.logout_all",
                ctx,
                actor=user_id,
                target_type="user",
                target_id=user_id,
                sessions=len(ids),
            )
            return ids

        ids = k.write(body)
        k.push_revocations(ids)
        return len(ids)

    # --- access tokens -------------------------------------------------------------------------

    def verify_access_token(self, token: str) -> AccessClaims:
        """Verify signature, claims and revocation. Raises InvalidToken / TokenExpired / TokenRevoked.

        A token whose signature and claims were verified before is remembered (by its
        exact text, so any altered copy is verified afresh); only its expiry and its
        session's revocation are checked again, which keeps the per-request cost low.
        """
        claims = self._signed_claims(token)
        if self._is_revoked(claims):
            raise TokenRevoked("This session has ended.")
        return claims

    def _signed_claims(self, token: str) -> AccessClaims:
        """The claims of a token whose signature and claims are valid and which has not
        expired; revocation is not checked here. Raises InvalidToken / TokenExpired."""
        claims = self._verified.get(token) if isinstance(token, str) else None
        if claims is None:
            claims = self._decode_access(token)
            if len(self._verified) >= _VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = claims
        elif self._now() >= claims.expires_at + self._leeway:
            self._verified.pop(token, None)
            self._users.pop(token, None)
            raise TokenExpired()
        return claims

    def _now(self) -> float:
        """The clock's time as a timestamp (the system clock's without a datetime)."""
        clock = self._k.clock
        return time.time() if type(clock) is SystemClock else clock.now().timestamp()

    def _decode_access(self, token: str) -> AccessClaims:
        if not isinstance(token, str):
            raise InvalidToken("Invalid token.")
        claims = self._k.codecs.access.decode(token, typ="access")
        try:
            return AccessClaims(
                user_id=uuid.UUID(claims["sub"]),
                session_id=uuid.UUID(claims["sid"]),
                issued_at=int(claims["iat"]),
                expires_at=int(claims["exp"]),
                token_id=str(claims["jti"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InvalidToken("Invalid token.") from None

    def authenticate(self, token: str) -> User:
        """The active user an access token belongs to. Raises InvalidToken and subclasses.

        With a revocation store the session is checked there and the user read (from a
        replica when there is one); without one, or when it is down, the session and the
        user are read together in one transaction on the primary: one round of database
        work per request instead of two. A database offering one-statement reads and no
        replica answers both in one SELECT on the primary, which is as fresh as the
        revocation store (it is written after the database commits), so the store is
        not asked: one round trip per request. A database in this process (the memory
        backend) is read after the revocation store, if there is one: both are asked. Its
        answer for the token is remembered while its data version stays the same (any
        commit or rollback that changed something, a revocation or a change of the user
        included, ends it; so does an open unit of work of the calling thread), and each
        caller gets its own copy of the user.
        """
        k = self._k
        claims = self._signed_claims(token)
        local = self._local
        if local is not None:
            store = k.revocations
            if store is not None:
                try:
                    if store.is_revoked(claims.session_id):
                        raise TokenRevoked("This session has ended.")
                except BackendUnavailable:
                    logger.warning("revocation store unavailable: checking the database")
            known = self._users.get(token)
            if known is not None and known[0] == local.data_version:
                return local.copy_of(known[1])
            version, live, found = local.live_session_user_at(claims.session_id, claims.user_id)
            if not live:
                raise TokenRevoked("This session has ended.")
            active = self._active(found)
            if version is not None:
                entries = self._user_entries
                entry = entries.get(active.id.int)
                if entry is None or entry[0] != version:
                    if len(entries) >= _VERIFIED_CACHE_SIZE:
                        entries.clear()
                    entry = entries[active.id.int] = (version, local.copy_of(active))
                users = self._users
                if len(users) >= _VERIFIED_CACHE_SIZE:
                    users.clear()
                users[token] = entry
            return active
        one = self._one
        if one is not None and not one.reads_from_replicas:
            live, found = one.live_session_user(claims.session_id, claims.user_id)
            if not live:
                raise TokenRevoked("This session has ended.")
            return self._active(found)
        store = k.revocations
        if store is not None:
            try:
                revoked = store.is_revoked(claims.session_id)
            except BackendUnavailable:
                logger.warning("revocation store unavailable: checking the database")
            else:
                if revoked:
                    raise TokenRevoked("This session has ended.")
                if one is not None:
                    return self._active(one.user_by_id(claims.user_id))
                user = k.read(lambda uow: uow.users.get(claims.user_id), replica=True)
                return self._active(user)

        if one is not None:
            live, found = one.live_session_user(claims.session_id, claims.user_id)
            if not live:
                raise TokenRevoked("This session has ended.")
            return self._active(found)

        def body(uow: UnitOfWork) -> User | None:
            session = uow.sessions.get(claims.session_id)
            if session is None or session.revoked_at is not None:
                raise TokenRevoked("This session has ended.")
            return uow.users.get(claims.user_id)

        return self._active(k.read(body))

    @staticmethod
    def _active(user: User | None) -> User:
        if user is None or not user.is_active:
            raise InvalidToken("Invalid token.")
        return user

    def _is_revoked(self, claims: AccessClaims) -> bool:
        session_id = claims.session_id
        store = self._k.revocations
        if store is not None:
            try:
                return store.is_revoked(session_id)
            except BackendUnavailable:
                logger.warning("revocation store unavailable: checking the database")
        if self._one is not None:  # one SELECT instead of a transaction
            return not self._one.live_session_user(session_id, claims.user_id)[0]
        session = self._k.read(lambda uow: uow.sessions.get(session_id))
        return session is None or session.revoked_at is not None

    # --- token minting -------------------------------------------------------------------------

    def _access_token(self, user_id: UUID, session_id: UUID, now: datetime) -> str:
        s = self._k.settings
        iat = int(now.timestamp())
        return self._k.codecs.access.encode(
            {
                "sub": str(user_id),
                "sid": str(session_id),
                "typ": "access",
                "iat": iat,
                "nbf": iat,
                "exp": iat + s.access_token_ttl_seconds,
                "jti": uuid.uuid4().hex,
            }
        )

    def _refresh_token(
        self,
        user_id: UUID,
        session_id: UUID,
        generation: int,
        now: datetime,
        family_expiry: datetime,
    ) -> str:
        s = self._k.settings
        iat = int(now.timestamp())
        exp = min(iat + s.refresh_token_idle_ttl_seconds, int(family_expiry.timestamp()))
        return self._k.codecs.refresh.encode(
            {
                "sub": str(user_id),
                "sid": str(session_id),
                "gen": generation,
                "typ": "refresh",
                "iat": iat,
                "exp": exp,
                "jti": new_token(),
            }
        )
