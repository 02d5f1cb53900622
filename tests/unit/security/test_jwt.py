"""JWT access and refresh tokens: SECURITY.md section 1E (SEC-JW-01..06).

Hostile tokens are built by hand (base64url JSON + HMAC) wherever PyJWT would refuse
to produce them, and most of them carry a *valid* signature made with the real key, so
the test shows that the header or claim check alone rejects them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any

import pytest

from usermgmt.config import Settings
from usermgmt.errors import ConfigurationError, InvalidToken, TokenExpired
from usermgmt.security import jwt as jwt_module
from usermgmt.security.jwt import (
    MAX_TOKEN_LENGTH,
    REQUIRED_CLAIMS,
    JWTCodec,
    KeyRing,
    TokenCodecs,
    derive_kid,
)

SECRET = "s3cr3t-" + "k" * 10 + secrets.token_urlsafe(32)
OLD_SECRET = "old-" + secrets.token_urlsafe(40)
ISSUER = "https://idp.example"
AUDIENCE = "usermgmt"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def forge(
    header: dict[str, Any],
    payload: dict[str, Any],
    key: bytes | str | None = SECRET,
    digest: str = "sha256",
) -> str:
    """A compact JWS with any header and payload, HMAC-signed with ``key`` (None: unsigned)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if key is None:
        return signing_input + "."
    raw_key = key.encode() if isinstance(key, str) else key
    signature = hmac.new(raw_key, signing_input.encode(), getattr(hashlib, digest)).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(uuid.uuid4()),
        "typ": "access",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 300,
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


def header(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"alg": "HS256", "typ": "JWT", "kid": derive_kid(SECRET)}
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


@pytest.fixture
def codec() -> JWTCodec:
    return JWTCodec(KeyRing(SECRET), "HS256", ISSUER, AUDIENCE, leeway=30)


def assert_invalid(codec: JWTCodec, token: str, typ: str = "access") -> None:
    with pytest.raises(InvalidToken) as info:
        codec.decode(token, typ=typ)
    assert type(info.value) is InvalidToken  # not TokenExpired or another subclass
    assert info.value.code == "invalid_token"
    assert str(info.value) == "Invalid token"
    # No PyJWT internals chained into what an adapter might render.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


# --- the happy path the negatives are measured against ---------------------------------


def test_jwt_round_trip(codec: JWTCodec) -> None:
    issued = claims()
    token = codec.encode({k: v for k, v in issued.items() if k not in ("iss", "aud")})
    assert jwt_module.pyjwt.get_unverified_header(token)["kid"] == derive_kid(SECRET)
    assert codec.decode(token, typ="access") == issued
    # The hand-made forgery helper produces tokens the codec accepts.
    assert codec.decode(forge(header(), issued), typ="access") == issued


def test_jwt_kid_derivation() -> None:
    expected = b64(hashlib.sha256(b"usermgmt-kid:" + SECRET.encode()).digest())[:16]
    assert derive_kid(SECRET) == expected
    assert len(expected) == 16
    assert derive_kid(OLD_SECRET) != expected
    assert SECRET not in repr(KeyRing(SECRET, [OLD_SECRET]))


def test_jwt_encode_refuses_foreign_issuer(codec: JWTCodec) -> None:
    with pytest.raises(ValueError, match="iss"):
        codec.encode(claims(iss="https://other.example"))


# --- SEC-JW-01: algorithm ---------------------------------------------------------------


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records tokens that reach PyJWT's signature verification."""
    calls: list[str] = []
    real_decode = jwt_module.pyjwt.decode

    def spy(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt_module.pyjwt, "decode", spy)
    return calls


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_jwt_rejects_none(codec: JWTCodec, alg: str, verified: list[str]) -> None:
    assert_invalid(codec, forge(header(alg=alg), claims(), key=None))
    # Even with a valid HS256 signature appended, the header alg must match exactly.
    assert_invalid(codec, forge(header(alg=alg), claims()))
    assert verified == []  # refused from the header alone


@pytest.mark.parametrize(
    ("alg", "digest"),
    [
        ("HS384", "sha384"),
        ("HS512", "sha512"),
        ("RS256", "sha256"),
        ("ES256", "sha256"),
        ("PS256", "sha256"),
        ("EdDSA", "sha256"),
        ("hs256", "sha256"),
        ("HS256 ", "sha256"),
    ],
)
def test_jwt_rejects_alg_confusion(
    codec: JWTCodec, alg: str, digest: str, verified: list[str]
) -> None:
    assert_invalid(codec, forge(header(alg=alg), claims(), digest=digest))
    assert verified == []  # refused from the header alone


def test_jwt_rejects_missing_alg(codec: JWTCodec) -> None:
    assert_invalid(codec, forge(header(alg=None), claims()))


def test_jwt_rejects_public_key_as_hmac_secret() -> None:
    """The CVE-2022-29217 shape: HS256 signed with a PEM "public key" the attacker knows."""
    pem = "-----BEGIN PUBLIC KEY-----\n" + secrets.token_urlsafe(64) + "\n-----END PUBLIC KEY-----"
    codec = JWTCodec(KeyRing(SECRET), "HS256", ISSUER, AUDIENCE)
    assert_invalid(codec, forge(header(kid=derive_kid(pem)), claims(), key=pem))
    assert_invalid(codec, forge(header(), claims(), key=pem))


# --- SEC-JW-02: key material from the header --------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jwk", {"kty": "oct", "k": b64(b"attacker-key-" * 4)}),
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIBszCCAVmgAwIBAgIUQ"]),
        ("x5t", b64(b"thumbprint")),
        ("x5t#S256", b64(b"thumbprint")),
    ],
)
def test_jwt_rejects_embedded_jwk(codec: JWTCodec, name: str, value: Any) -> None:
    # Signed with the real key: only the header parameter makes it invalid.
    assert_invalid(codec, forge(header(**{name: value}), claims()))
    attacker = b"attacker-key-" * 4
    assert_invalid(codec, forge(header(**{name: value}, kid=None), claims(), key=attacker))


@pytest.mark.parametrize("crit", [["exp"], ["b64"], [], "b64", ["x-custom"]])
def test_jwt_rejects_crit(codec: JWTCodec, crit: Any) -> None:
    assert_invalid(codec, forge(header(crit=crit), claims()))


def test_jwt_rejects_unknown_kid(codec: JWTCodec) -> None:
    other = secrets.token_urlsafe(48)
    assert_invalid(codec, forge(header(kid=derive_kid(other)), claims(), key=other))
    # A known key id cannot lend its key to a token signed with another one.
    assert_invalid(codec, forge(header(), claims(), key=other))
    assert_invalid(codec, forge(header(kid=None), claims()))


@pytest.mark.parametrize(
    "kid",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "..\\..\\keys",
        "kid with space",
        "ké",
        "a" * 65,
        "",
        "abc\n",
        "file:///dev/random",
        "' OR '1'='1",
        123,
        ["x"],
        {"$ne": None},
    ],
)
def test_jwt_rejects_path_traversal_kid(
    codec: JWTCodec, kid: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[Any] = []
    monkeypatch.setattr(KeyRing, "get", lambda self, k: lookups.append(k))
    assert_invalid(codec, forge(header(kid=kid), claims()))
    assert lookups == []  # refused by the regex before any lookup


def test_jwt_unknown_kid_is_one_dictionary_lookup(
    codec: JWTCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    monkeypatch.setattr(KeyRing, "get", lambda self, k: lookups.append(k))
    assert_invalid(codec, forge(header(kid="Unknown_Kid-01"), claims()))
    assert lookups == ["Unknown_Kid-01"]


# --- SEC-JW-03: time claims ---------------------------------------------------------------


def test_jwt_rejects_expired(codec: JWTCodec) -> None:
    now = int(time.time())
    with pytest.raises(TokenExpired) as info:
        codec.decode(forge(header(), claims(iat=now - 600, exp=now - 31)), typ="access")
    assert info.value.code == "token_expired"
    assert str(info.value) == "Token expired"
    # Within the 30 s leeway it is still accepted.
    codec.decode(forge(header(), claims(iat=now - 600, exp=now - 10)), typ="access")
    # Expiry is only reported for a genuine token; a forged expired one is just invalid.
    assert_invalid(codec, forge(header(), claims(exp=now - 600), key=secrets.token_urlsafe(40)))


def test_jwt_rejects_nbf(codec: JWTCodec) -> None:
    now = int(time.time())
    assert_invalid(codec, forge(header(), claims(nbf=now + 120)))
    assert_invalid(codec, forge(header(), claims(iat=now + 120)))
    codec.decode(forge(header(), claims(nbf=now + 10)), typ="access")  # within leeway


def test_jwt_rejects_missing_exp(codec: JWTCodec) -> None:
    assert_invalid(codec, forge(header(), claims(exp=None)))


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_jwt_rejects_missing_required_claim(codec: JWTCodec, claim: str) -> None:
    assert_invalid(codec, forge(header(), claims(**{claim: None})))


@pytest.mark.parametrize(
    ("claim", "value"),
    [("exp", "soon"), ("iat", "now"), ("nbf", []), ("sub", 42), ("jti", 7), ("typ", ["access"])],
)
def test_jwt_rejects_malformed_claims(codec: JWTCodec, claim: str, value: Any) -> None:
    assert_invalid(codec, forge(header(), claims(**{claim: value})))


# --- SEC-JW-04: issuer and audience -----------------------------------------------------


@pytest.mark.parametrize(
    "iss",
    ["https://idp", "https://idp.example.evil", "idp.example", "https://IDP.example", [ISSUER], ""],
)
def test_jwt_rejects_wrong_iss_substring(codec: JWTCodec, iss: Any) -> None:
    assert_invalid(codec, forge(header(), claims(iss=iss)))


@pytest.mark.parametrize(
    "aud", ["other", "usermgmt:refresh", "usermgm", [AUDIENCE, "other"], [AUDIENCE], ""]
)
def test_jwt_rejects_wrong_aud(codec: JWTCodec, aud: Any) -> None:
    assert_invalid(codec, forge(header(), claims(aud=aud)))


# --- SEC-JW-05: token purpose -------------------------------------------------------------


@pytest.mark.parametrize("typ", ["refresh", "Access", "access ", "reset", ""])
def test_jwt_rejects_wrong_typ(codec: JWTCodec, typ: str) -> None:
    assert_invalid(codec, forge(header(), claims(typ=typ)))
    assert_invalid(codec, forge(header(), claims()), typ="refresh")


def settings(**overrides: Any) -> Settings:
    return Settings.for_tests(jwt_issuer=ISSUER, **overrides)


def test_jwt_access_refresh_cross_use_rejected() -> None:
    codecs = TokenCodecs.from_settings(settings())
    assert codecs.access.audience == "usermgmt"
    assert codecs.refresh.audience == "usermgmt:refresh"
    assert codecs.access.keyring.current_kid != codecs.refresh.keyring.current_kid

    access = codecs.access.encode(claims(typ="access", aud=None, iss=None))
    refresh = codecs.refresh.encode(claims(typ="refresh", aud=None, iss=None))
    assert codecs.decode_access(access)["typ"] == "access"
    assert codecs.decode_refresh(refresh)["typ"] == "refresh"
    assert_invalid(codecs.refresh, access, typ="refresh")
    assert_invalid(codecs.access, refresh, typ="access")
    # Even with the typ claim swapped, the key and audience still differ.
    assert_invalid(codecs.access, codecs.refresh.encode(claims(typ="access", aud=None)))
    assert_invalid(
        codecs.refresh, codecs.access.encode(claims(typ="refresh", aud=None)), typ="refresh"
    )


def test_jwt_key_rotation() -> None:
    old = TokenCodecs.from_settings(settings(jwt_secret=OLD_SECRET))
    token = old.access.encode(claims(aud=None))

    rotated = TokenCodecs.from_settings(
        settings(jwt_secret=SECRET, jwt_previous_secrets=[OLD_SECRET])
    )
    assert rotated.decode_access(token)["typ"] == "access"
    new_token = rotated.access.encode(claims(aud=None))
    assert jwt_module.pyjwt.get_unverified_header(new_token)["kid"] == derive_kid(SECRET)
    assert rotated.access.keyring.kids == (derive_kid(SECRET), derive_kid(OLD_SECRET))

    retired = TokenCodecs.from_settings(settings(jwt_secret=SECRET))
    assert_invalid(retired.access, token)
    assert retired.decode_access(new_token)["typ"] == "access"


# --- tampering and size -------------------------------------------------------------------


def test_jwt_rejects_flipped_payload_bit(codec: JWTCodec) -> None:
    token = codec.encode(claims(sub="user-a"))
    head, payload, signature = token.split(".")
    raw = bytearray(unb64(payload))
    index = raw.index(b"user-a") + 5
    raw[index] ^= 0x01  # "user-a" -> "user-`"
    assert_invalid(codec, f"{head}.{b64(bytes(raw))}.{signature}")
    for position in range(0, len(payload), 7):
        flipped = (
            payload[:position]
            + ("A" if payload[position] != "A" else "B")
            + payload[position + 1 :]
        )
        assert_invalid(codec, f"{head}.{flipped}.{signature}")


def test_jwt_rejects_truncated_signature(codec: JWTCodec) -> None:
    token = codec.encode(claims())
    head, payload, signature = token.split(".")
    for cut in (signature[:-1], signature[:-2], signature[: len(signature) // 2], ""):
        assert_invalid(codec, f"{head}.{payload}.{cut}")
    assert_invalid(codec, f"{head}.{payload}")
    assert_invalid(codec, f"{head}.{payload}.{signature}.{signature}")


def test_jwt_rejects_oversized(codec: JWTCodec, monkeypatch: pytest.MonkeyPatch) -> None:
    # Correctly signed, but over the limit because of a padding claim.
    padded = codec.encode(claims(pad="x" * MAX_TOKEN_LENGTH))
    assert len(padded) > MAX_TOKEN_LENGTH
    parsed: list[str] = []
    monkeypatch.setattr(jwt_module.pyjwt, "get_unverified_header", parsed.append)
    assert_invalid(codec, padded)
    assert_invalid(codec, "a" * (MAX_TOKEN_LENGTH + 1))
    assert parsed == []  # refused before any parsing


@pytest.mark.parametrize(
    "token",
    ["", ".", "..", "a.b.c", "not a token", "e30.e30.", "\x00" * 10, "é.é.é", b"e30.e30.e30"],
)
def test_jwt_rejects_garbage(codec: JWTCodec, token: Any) -> None:
    assert_invalid(codec, token)


def test_jwt_rejects_deeply_nested_header(codec: JWTCodec) -> None:
    nested_header = b64(b'{"alg":"HS256","x":' + b"[" * 3000 + b"]" * 3000 + b"}")
    assert_invalid(codec, f"{nested_header}.{b64(b'{}')}.sig")
    nested_payload = claims()
    token = forge(header(), nested_payload)
    head, _, _ = token.split(".")
    body = b64(
        json.dumps(nested_payload).encode()[:-1] + b',"x":' + b"[" * 2000 + b"]" * 2000 + b"}"
    )
    signing_input = f"{head}.{body}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    assert_invalid(codec, f"{signing_input}.{b64(signature)}")


# --- SEC-JW-06: configuration -------------------------------------------------------------


def test_jwt_codec_configuration_checked() -> None:
    ring = KeyRing("k" * 8 + secrets.token_urlsafe(24))  # 40 bytes
    JWTCodec(ring, "HS256", ISSUER, AUDIENCE)
    with pytest.raises(ConfigurationError):
        JWTCodec(ring, "HS512", ISSUER, AUDIENCE)  # needs 64 bytes
    for alg in ("none", "RS256", "ES256", "EdDSA"):
        with pytest.raises(ConfigurationError):
            JWTCodec(ring, alg, ISSUER, AUDIENCE)
    with pytest.raises(ConfigurationError):
        JWTCodec(ring, "HS256", ISSUER, AUDIENCE, leeway=61)
    with pytest.raises(ConfigurationError):
        KeyRing("")
    short_previous = KeyRing(secrets.token_urlsafe(48), ["x" * 16])
    with pytest.raises(ConfigurationError):
        JWTCodec(short_previous, "HS256", ISSUER, AUDIENCE)
