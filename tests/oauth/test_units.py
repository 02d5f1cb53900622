"""The pure parts: the redirect allowlist, query building, provider settings."""

from __future__ import annotations

import pytest

from usermgmt.config import Settings
from usermgmt.errors import ConfigurationError
from usermgmt.oauth import append_query, build_providers, safe_redirect

ALLOW = ["https://app.example.com/oauth/complete", "https://spa.example.org/done?x=1"]
APP = "https://app.example.com"


@pytest.mark.parametrize(
    "candidate",
    [
        None, "", 42, "//evil.com", "https://evil.com", "/\\evil.com", "\\\\evil.com",
        "https:evil.com", "%2F%2Fevil.com", "javascript:alert(1)",
        "https://app.example.com@evil.com/oauth/complete",
        "https://app.example.com.evil.com/oauth/complete",
        "https://app.example.com/oauth/complete/", "https://app.example.com/oauth/complete?a=1",
        "https://APP.example.com/oauth/complete", "https://app.example.com/oauth/complete\n",
        "https://app.example.com/oauth/%63omplete", "/oauth/complete/../x", "//app.example.com/oauth/complete",
        "https://spa.example.org/done", "/done?x=1", "x" * 3000,
    ],
)  # fmt: skip
def test_anything_not_allowlisted_falls_back_to_the_default(candidate: object) -> None:
    assert safe_redirect(candidate, ALLOW, APP) == ALLOW[0]


def test_allowlisted_targets_exactly() -> None:
    assert safe_redirect(ALLOW[1], ALLOW, APP) == ALLOW[1]
    assert safe_redirect("/oauth/complete", ALLOW, APP) == ALLOW[0]


def test_append_query_keeps_query_and_fragment() -> None:
    assert append_query("https://a.example/p", code="c d") == "https://a.example/p?code=c+d"
    assert (
        append_query("https://a.example/p?x=1#top", code="z")
        == "https://a.example/p?x=1&code=z#top"
    )


@pytest.mark.parametrize(
    ("providers", "extra", "message"),
    [
        ([{"name": "a", "client_id": "c", "client_secret": "s"}], {}, "discovery_url or issuer"),
        ([{"name": "a", "issuer": "ftp://x", "client_id": "c", "client_secret": "s"}], {}, "http(s) URL"),
        ([{"name": "a", "issuer": "https://x", "client_id": "c", "client_secret": "s",
           "scopes": ["email"]}], {}, "openid"),
        ([{"name": "a", "issuer": "https://x", "client_id": "c", "client_secret": "s"}] * 2, {}, "unique"),
        ([{"name": "google", "issuer": "https://x", "client_id": "c", "client_secret": "s"}],
         {"google_client_id": "g", "google_client_secret": "gs"}, "unique"),
        ([], {"google_client_id": "g"}, "GOOGLE_CLIENT_SECRET"),
        ([{"name": "Bad Name", "issuer": "https://x", "client_id": "c", "client_secret": "s"}], {}, "OIDC_PROVIDERS"),
        ([{"name": "a", "issuer": "https://x", "client_id": "c", "client_secret": "s", "x": 1}], {}, "OIDC_PROVIDERS"),
    ],
)  # fmt: skip
def test_provider_settings_are_checked_at_start(
    providers: list[dict[str, object]], extra: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match="invalid settings") as raised:
        Settings.for_tests(oidc_providers=providers, **extra)
    assert message in str(raised.value)
    assert "s3cr" not in str(raised.value)


def test_providers_from_settings() -> None:
    settings = Settings.for_tests(
        google_client_id="g-id",
        google_client_secret="g-secret",
        oidc_providers='[{"name": "okta", "issuer": "https://example.okta.com/", '
        '"client_id": "o", "client_secret": "os", "display_name": "Okta"}, '
        '{"name": "gl", "discovery_url": "https://gitlab.example/.well-known/openid-configuration", '
        '"client_id": "l", "client_secret": "gl-secret-xyz"}]',
    )
    providers = build_providers(settings)
    assert list(providers) == ["google", "okta", "gl"]
    google, okta, gl = providers.values()
    assert google.config.issuers == ("https://accounts.google.com", "accounts.google.com")
    assert google.config.discovery_url == (
        "https://accounts.google.com/.well-known/openid-configuration"
    )
    assert okta.config.discovery_url == "https://example.okta.com/.well-known/openid-configuration"
    assert okta.config.issuers == ("https://example.okta.com/",)  # exact, as configured
    assert okta.display_name == "Okta"
    assert gl.config.issuers == ()  # taken from discovery, which must match the URL
    assert "gl-secret-xyz" not in repr(gl.config)  # the secret stays out of reprs
