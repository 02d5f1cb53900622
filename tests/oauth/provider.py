"""A small but real OpenID Connect provider on loopback, for the negative cases.

It speaks real HTTP (``http.server`` on 127.0.0.1), signs ID tokens with a real RSA key
and serves the public half as JWKS, checks the client's secret, the redirect URI and the
PKCE S256 verifier at the token endpoint, and can be told to misbehave in exactly one
way per test: another nonce, no nonce, another audience or issuer, an expired token, a
signature by a key it does not publish, a rotated key, a 5xx, an error answer.

oidc-provider-mock (a subprocess, see ``conftest.py``) covers the happy paths with a
third-party implementation; this one exists because it cannot produce bad tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.email import free_port

CLIENT_ID = "usermgmt-test-client"
CLIENT_SECRET = "test-client-secret-0123456789"


def _key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


@dataclass
class Grant:
    identity: dict[str, Any]
    redirect_uri: str
    nonce: str | None
    challenge: str | None
    method: str | None


@dataclass
class TestProvider:
    """State of the provider; tests set ``identity`` and ``misbehave`` before the flow."""

    __test__ = False  # not a test class

    issuer: str = ""
    key: RSAKey = field(default_factory=lambda: _key("key-1"))
    identity: dict[str, Any] = field(default_factory=dict)
    #: one of: nonce_other, nonce_missing, aud, aud_multi_no_azp, iss, expired,
    #: foreign_key, alg_none, token_500, token_error, no_id_token, discovery_issuer,
    #: exp_nan, exp_infinite, iat_missing, iat_nan, iat_old, iat_future,
    #: http_endpoint (a non-loopback http:// token endpoint in discovery),
    #: discovery_huge (an endless discovery body), discovery_slow (a valid discovery
    #: document sent a few bytes at a time, slower than the client's deadline)
    misbehave: str | None = None
    #: bytes of the last discovery_huge / discovery_slow body the client took
    streamed_bytes: int = 0
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    jwks_fetches: int = 0
    discovery_fetches: int = 0
    grants: dict[str, Grant] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what tests use ----------------------------------------------------------------

    def settings_entry(self, name: str = "test") -> dict[str, Any]:
        return {
            "name": name,
            "issuer": self.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "display_name": "the test provider",
        }

    def login(self, authorization_url: str) -> str:
        """What a user approving the request gets: the redirect URL back to the app."""
        import httpx

        response = httpx.get(authorization_url, follow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        return response.headers["location"]

    def rotate_key(self) -> None:
        self.key = _key(f"key-{secrets.token_hex(4)}")

    # --- the protocol ------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        self.discovery_fetches += 1
        return {
            "issuer": self.issuer + ("/mixed-up" if self.misbehave == "discovery_issuer" else ""),
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": "http://idp.example/token"
            if self.misbehave == "http_endpoint"
            else f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }

    def jwks(self) -> dict[str, Any]:
        self.jwks_fetches += 1
        return {"keys": [self.key.as_dict(private=False)]}

    def authorize(self, query: dict[str, str]) -> str:
        self.authorize_requests.append(query)
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.grants[code] = Grant(
                identity=dict(self.identity),
                redirect_uri=query["redirect_uri"],
                nonce=query.get("nonce"),
                challenge=query.get("code_challenge"),
                method=query.get("code_challenge_method"),
            )
        back = {"code": code, "state": query.get("state", "")}
        return query["redirect_uri"] + "?" + urlencode(back)

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.token_requests.append({"form": form, "authorization": authorization})
        if self.misbehave == "token_500":
            return 500, {"error": "server_error"}
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if authorization != expected:
            return 401, {"error": "invalid_client"}
        with self.lock:
            grant = self.grants.pop(form.get("code", ""), None)
        if grant is None or self.misbehave == "token_error":
            return 400, {"error": "invalid_grant"}
        if form.get("redirect_uri") != grant.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if grant.method != "S256" or challenge != grant.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE"}
        body: dict[str, Any] = {
            "access_token": "provider-access-" + secrets.token_urlsafe(16),
            "refresh_token": "provider-refresh-" + secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 3600,
        }
        if self.misbehave != "no_id_token":
            body["id_token"] = self.id_token(grant)
        return 200, body

    def id_token(self, grant: Grant) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": grant.nonce,
            **grant.identity,
        }
        m = self.misbehave
        if m == "nonce_other":
            claims["nonce"] = secrets.token_urlsafe(32)
        elif m == "nonce_missing":
            del claims["nonce"]
        elif m == "aud":
            claims["aud"] = "some-other-client"
        elif m == "aud_multi_no_azp":
            claims["aud"] = [CLIENT_ID, "some-other-client"]
        elif m == "iss":
            claims["iss"] = self.issuer + "/other"
        elif m == "expired":
            claims["iat"], claims["exp"] = now - 3600, now - 600
        elif m == "exp_nan":
            claims["exp"] = float("nan")
        elif m == "exp_infinite":
            claims["exp"] = float("inf")
        elif m == "iat_missing":
            del claims["iat"]
        elif m == "iat_nan":
            claims["iat"] = float("nan")
        elif m == "iat_old":  # issued an hour ago, still valid for a long time
            claims["iat"], claims["exp"] = now - 3600, now + 86400
        elif m == "iat_future":
            claims["iat"] = now + 600
        key = self.key
        if m == "foreign_key":
            key = _key(self.key.kid or "key-1")  # same kid, another key: bad signature
        if m == "alg_none":
            header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
            payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
            return (header + b"." + payload + b".").decode()
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


def _handler(provider: TestProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, slow: bool) -> None:
            """A body without a length (read until close): 50 MB of JSON whitespace then a document (huge), or a valid
            document padded to 2,000 bytes, 100 bytes every 0.1 s (slow)."""
            document = json.dumps(provider.discovery()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if slow:
                body = document + b" " * (2000 - len(document))
                chunks = [body[i : i + 100] for i in range(0, len(body), 100)]
            else:
                chunks = [b" " * 65536] * 800 + [document]
            provider.streamed_bytes = 0
            try:
                for chunk in chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    provider.streamed_bytes += len(chunk)
                    if slow:
                        time.sleep(0.1)
            except OSError:  # the client hung up
                pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/.well-known/openid-configuration" and provider.misbehave in (
                "discovery_huge",
                "discovery_slow",
            ):
                self._stream(provider.misbehave == "discovery_slow")
            elif parts.path == "/.well-known/openid-configuration":
                self._json(200, provider.discovery())
            elif parts.path == "/jwks":
                self._json(200, provider.jwks())
            elif parts.path == "/authorize":
                self.send_response(302)
                self.send_header("Location", provider.authorize(query))
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            form = {k: v[-1] for k, v in parse_qs(raw).items()}
            if urlsplit(self.path).path == "/token":
                status, body = provider.token(form, self.headers.get("Authorization"))
                self._json(status, body)
            else:
                self._json(404, {"error": "not_found"})

    return Handler


@contextmanager
def running_provider() -> Iterator[TestProvider]:
    """A TestProvider serving on a free loopback port, stopped afterwards."""
    port = free_port()
    provider = TestProvider(issuer=f"http://127.0.0.1:{port}")
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(provider))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
