"""Opaque single-use tokens (SEC-TK-01, SEC-TK-02, SEC-IV-05)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import pytest

from usermgmt.security import opaque
from usermgmt.security.opaque import (
    hash_if_well_formed,
    hash_token,
    is_well_formed,
    new_token,
    tokens_equal,
)


def test_new_token_uses_secrets_with_256_bits_sec_tk_01(monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[int | None] = []
    real = secrets.token_urlsafe

    def spy(nbytes: int | None = None) -> str:
        requested.append(nbytes)
        return real(nbytes)

    monkeypatch.setattr(opaque.secrets, "token_urlsafe", spy)
    token = new_token()
    assert requested == [32]
    assert len(token) == 43
    assert is_well_formed(token)


def test_new_tokens_are_unique_sec_tk_01() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000


def test_hash_token_is_sha256_hex_sec_tk_02() -> None:
    token = new_token()
    digest = hash_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert len(digest) == 64
    assert token not in digest
    assert hash_if_well_formed(token) == digest


@pytest.mark.parametrize(
    "token",
    [
        "",
        "short",
        "a" * 15,
        "a" * 257,
        "contains spaces here ok",
        "ü" * 20,
        "a" * 20 + "\n",
        "a" * 20 + "=",
        "a" * 20 + "+/",
        "../../../../etc/passwd",
        "' OR 1=1 --xxxxxxxxxxxx",
        None,
        123,
        b"a" * 20,
        ["a" * 20],
    ],
)
def test_malformed_tokens_never_hashed(token: Any) -> None:
    assert not is_well_formed(token)
    assert hash_if_well_formed(token) is None
    with pytest.raises(ValueError, match="malformed token"):
        hash_token(token)


@pytest.mark.parametrize("length", [16, 43, 256])
def test_well_formed_lengths(length: int) -> None:
    token = ("A-_z9" * 60)[:length]
    assert is_well_formed(token)
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()


def test_tokens_equal_uses_compare_digest_sec_iv_05(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(opaque.hmac, "compare_digest", spy)
    token = new_token()
    assert tokens_equal(token, token)
    assert not tokens_equal(token, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not tokens_equal(token, "ü-not-ascii")  # non-ASCII never raises
    assert len(calls) == 3
