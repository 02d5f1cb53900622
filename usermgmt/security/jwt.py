"""Signed JWTs for access and refresh tokens (SECURITY.md section 1E).

One HMAC algorithm per codec, keys only from the configured :class:`KeyRing`, and a
strict check order in :meth:`JWTCodec.decode`: size, header (exact ``alg``, no embedded
key material, no ``crit``, a well-formed known ``kid``), signature, then claims
(``exp iat iss aud sub typ jti`` required; exact ``iss``/``aud``; ``nbf`` enforced), and
finally the token purpose (``typ``). Access and refresh tokens use different secrets and
audiences (SEC-JW-05/06).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeGuard

import jwt as pyjwt

from usermgmt.clock import SystemClock
from usermgmt.errors import ConfigurationError, InvalidToken, TokenExpired
from usermgmt.ports import Clock

if TYPE_CHECKING:
    from usermgmt.config import Settings

__all__ = [
    "ACCESS_TYP",
    "MAX_TOKEN_LENGTH",
    "REFRESH_TYP",
    "REQUIRED_CLAIMS",
    "JWTCodec",
    "KeyRing",
    "TokenCodecs",
    "derive_kid",
]

logger = logging.getLogger("usermgmt.security.jwt")

#: Longer tokens are refused before any parsing (CVE-2025-61920, CVE-2024-33664).
MAX_TOKEN_LENGTH: Final = 8192
REQUIRED_CLAIMS: Final = ("exp", "iat", "iss", "aud", "sub", "typ", "jti")
ACCESS_TYP: Final = "access"
REFRESH_TYP: Final = "refresh"

#: Digest size of each supported algorithm: the minimum HMAC key length (RFC 7518 §3.2).
_HMAC_KEY_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
#: Header parameters that carry or point to key material, and ``crit`` (SEC-JW-02).
_FORBIDDEN_HEADERS: Final = frozenset({"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit"})
_KID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_LEEWAY_SECONDS: Final = 60


def derive_kid(secret: str) -> str:
    """The key id of a secret: 16 urlsafe-base64 characters of SHA-256("usermgmt-kid:" + secret).

    It names the key without revealing it and is stable across processes.
    """
    digest = hashlib.sha256(b"usermgmt-kid:" + secret.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:16]


class KeyRing:
    """The current signing secret plus previous secrets still accepted for verification.

    Raises :class:`~usermgmt.errors.ConfigurationError` for an empty secret or two secrets
    whose key ids collide.
    """

    __slots__ = ("_current_kid", "_keys")

    def __init__(self, current: str, previous: Iterable[str] = ()) -> None:
        self._keys: dict[str, bytes] = {}
        self._current_kid = self._add(current)
        for secret in previous:
            self._add(secret)

    def _add(self, secret: str) -> str:
        if not secret:
            raise ConfigurationError("a JWT secret cannot be empty")
        kid = derive_kid(secret)
        key = secret.encode("utf-8")
        if self._keys.setdefault(kid, key) != key:  # pragma: no cover - 2**-96 odds
            raise ConfigurationError("two JWT secrets have the same key id; replace one")
        return kid

    @property
    def current_kid(self) -> str:
        """The key id new tokens are signed with."""
        return self._current_kid

    @property
    def kids(self) -> tuple[str, ...]:
        """Every accepted key id, current first."""
        return tuple(self._keys)

    def signing_key(self) -> tuple[str, bytes]:
        """``(kid, key)`` of the current secret."""
        return self._current_kid, self._keys[self._current_kid]

    def get(self, kid: str) -> bytes | None:
        """The key of ``kid`` if it is in the ring (a dictionary lookup, nothing else)."""
        return self._keys.get(kid)

    def shortest_key_bytes(self) -> int:
        """The length in bytes of the shortest key (checked against the algorithm)."""
        return min(len(key) for key in self._keys.values())

    def __repr__(self) -> str:
        return f"KeyRing(current_kid={self._current_kid!r}, kids={len(self._keys)})"


class JWTCodec:
    """Encodes and strictly decodes the JWTs of one purpose.

    Raises :class:`~usermgmt.errors.ConfigurationError` for an algorithm other than
    HS256/HS384/HS512, a key shorter than the algorithm's digest, or a leeway outside
    0..60 seconds.
    """

    __slots__ = ("_clock", "algorithm", "audience", "issuer", "keyring", "leeway")

    def __init__(
        self,
        keyring: KeyRing,
        algorithm: str,
        issuer: str,
        audience: str,
        leeway: int = 30,
        clock: Clock | None = None,
    ) -> None:
        if algorithm not in _HMAC_KEY_BYTES:
            raise ConfigurationError(f"unsupported JWT algorithm {algorithm!r}")
        if keyring.shortest_key_bytes() < _HMAC_KEY_BYTES[algorithm]:
            raise ConfigurationError(
                f"{algorithm} needs secrets of at least {_HMAC_KEY_BYTES[algorithm]} bytes"
            )
        if not 0 <= leeway <= _MAX_LEEWAY_SECONDS:
            raise ConfigurationError(f"JWT leeway must be 0..{_MAX_LEEWAY_SECONDS} seconds")
        if not issuer or not audience:
            raise ConfigurationError("JWT issuer and audience cannot be empty")
        self.keyring = keyring
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        # Time claims are checked against this clock (not PyJWT's), so a FakeClock drives them.
        self._clock: Clock = clock or SystemClock()

    def encode(self, claims: Mapping[str, Any]) -> str:
        """Sign ``claims`` with the current key; the header carries its ``kid``.

        ``iss`` and ``aud`` default to the codec's. The caller supplies ``sub``, ``typ``,
        ``jti``, ``iat`` and ``exp`` (``datetime`` values are converted). Raises
        ``ValueError`` if ``claims`` names another issuer or audience.
        """
        payload = dict(claims)
        for name, value in (("iss", self.issuer), ("aud", self.audience)):
            if payload.setdefault(name, value) != value:
                raise ValueError(f"claim {name!r} must be {value!r} for this codec")
        kid, key = self.keyring.signing_key()
        return pyjwt.encode(payload, key, algorithm=self.algorithm, headers={"kid": kid})

    def decode(self, token: str, *, typ: str) -> dict[str, Any]:
        """The verified claims of ``token``, whose ``typ`` claim must equal ``typ``.

        Raises :class:`~usermgmt.errors.TokenExpired` for a correctly signed, expired
        token and :class:`~usermgmt.errors.InvalidToken` for anything else; neither
        says more than that.
        """
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise _reject("not a string or too long")
        header = _read_header(token)
        if header.get("alg") != self.algorithm:
            raise _reject("unexpected alg")
        if not _FORBIDDEN_HEADERS.isdisjoint(header):
            raise _reject("forbidden header parameter")
        kid = header.get("kid")
        if not isinstance(kid, str) or _KID_RE.fullmatch(kid) is None:
            raise _reject("malformed kid")
        key = self.keyring.get(kid)
        if key is None:
            raise _reject("unknown kid")
        try:
            payload: dict[str, Any] = pyjwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                audience=self.audience,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "strict_aud": True,
                    "enforce_minimum_key_length": True,
                },
            )
        except (pyjwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise _reject("signature or claims") from None
        self._check_times(payload)
        claim = payload.get("typ")
        if not isinstance(claim, str) or claim != typ:
            raise _reject("wrong typ")
        return payload

    def _check_times(self, payload: Mapping[str, Any]) -> None:
        now = self._clock.now().timestamp()
        exp, iat, nbf = payload.get("exp"), payload.get("iat"), payload.get("nbf", 0)
        if not (_is_number(exp) and _is_number(iat) and _is_number(nbf)):
            raise _reject("non-numeric time claim")
        if now >= exp + self.leeway:
            logger.debug("jwt rejected: expired")
            raise TokenExpired()
        if now + self.leeway < nbf:
            raise _reject("not yet valid")
        if now + self.leeway < iat:
            raise _reject("issued in the future")


_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9_-]{2,1024}")


def _read_header(token: str) -> dict[str, Any]:
    """The JOSE header, parsed strictly without verification (PyJWT re-validates it).

    Parsing it here instead of with ``jwt.get_unverified_header`` avoids decoding
    the whole token twice on every request.
    """
    segment, dot, _ = token.partition(".")
    if not dot or _SEGMENT_RE.fullmatch(segment) is None:
        raise _reject("unparsable header")
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError, RecursionError):
        raise _reject("unparsable header") from None
    if not isinstance(header, dict):
        raise _reject("header is not an object")
    return header


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reject(reason: str) -> InvalidToken:
    # The reason is for debugging only; callers and clients just see "Invalid token".
    logger.debug("jwt rejected: %s", reason)
    return InvalidToken()


@dataclass(frozen=True, slots=True)
class TokenCodecs:
    """The two JWT purposes, with separate secrets and audiences (SEC-JW-05/06).

    ``access``: ``JWT_SECRET`` (plus ``JWT_PREVIOUS_SECRETS``), audience
    ``JWT_AUDIENCE``, ``typ`` ``"access"``. ``refresh``: ``JWT_REFRESH_SECRET``,
    audience ``JWT_AUDIENCE + ":refresh"``, ``typ`` ``"refresh"``.
    """

    access: JWTCodec
    refresh: JWTCodec

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None) -> TokenCodecs:
        """Both codecs from the ``JWT_*`` settings. Raises ConfigurationError."""
        common: dict[str, Any] = {
            "algorithm": settings.jwt_algorithm,
            "issuer": settings.jwt_issuer,
            "leeway": settings.jwt_leeway_seconds,
            "clock": clock,
        }
        previous = [secret.get_secret_value() for secret in settings.jwt_previous_secrets]
        access = JWTCodec(
            KeyRing(settings.secret("jwt_secret"), previous),
            audience=settings.jwt_audience,
            **common,
        )
        refresh = JWTCodec(
            KeyRing(
                settings.secret("jwt_refresh_secret"),
                [s.get_secret_value() for s in settings.jwt_refresh_previous_secrets],
            ),
            audience=f"{settings.jwt_audience}:refresh",
            **common,
        )
        return cls(access=access, refresh=refresh)

    def decode_access(self, token: str) -> dict[str, Any]:
        """``access.decode(token, typ="access")``; raises InvalidToken or TokenExpired."""
        return self.access.decode(token, typ=ACCESS_TYP)

    def decode_refresh(self, token: str) -> dict[str, Any]:
        """``refresh.decode(token, typ="refresh")``; raises InvalidToken or TokenExpired."""
        return self.refresh.decode(token, typ=REFRESH_TYP)
