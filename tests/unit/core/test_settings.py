"""Settings read from the environment (SPEC §2; SEC-PW-01, SEC-JW-06, SEC-IV-04)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import pytest

from tests.unit.core.support import make_secret
from usermgmt.config import Settings
from usermgmt.errors import ConfigurationError

SecretsFixture = Callable[..., tuple[str, str]]


def load() -> Settings:
    return Settings(_env_file=None)


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> ConfigurationError:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load()
    return info.value


def production(monkeypatch: pytest.MonkeyPatch, secrets: SecretsFixture) -> None:
    """A valid production environment (secrets and a real email provider)."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("EMAIL_PROVIDER", "smtp")
    monkeypatch.setenv("SMTP_URL", "smtp://mail.example.com:587")
    secrets()


# --- defaults --------------------------------------------------------------------------


def test_every_default_of_the_spec() -> None:
    s = load()
    assert s.database_url == "sqlite:///./usermgmt.db"
    assert s.database_read_replica_urls == []
    assert s.redis_url is None
    assert s.redis_cluster is False
    assert s.jwt_algorithm == "HS256"
    assert s.access_token_ttl_seconds == 900
    assert s.refresh_token_ttl_seconds == 30 * 86400
    assert s.app_url == "http://localhost:8000"
    assert s.environment == "development"
    assert s.email_provider == "console"
    assert s.sendgrid_api_url == "https://api.sendgrid.com"
    assert s.oauth_redirect_urls == ["http://localhost:8000/oauth/complete"]
    assert s.oidc_providers == []
    assert s.audit_archive_after_days == 90
    assert s.storage_backend == "local"
    assert s.queue_backend == "inline"
    assert s.queue_redis_url is None
    assert s.rate_limit_enabled is True
    assert s.rate_limit_window_ms == 60000
    assert s.rate_limit_max_requests == 100
    assert s.trusted_proxies == []
    assert s.prevent_enumeration is True
    assert s.require_verified_email is False
    assert s.password_min_length == 15
    assert (
        s.password_argon2_memory_kib,
        s.password_argon2_time_cost,
        s.password_argon2_parallelism,
    ) == (65536, 3, 4)
    assert s.login_max_failures == 10
    assert s.login_lockout_seconds == 60
    assert s.login_lockout_max_seconds == 3600
    assert s.email_verification_ttl_seconds == 86400
    assert s.password_reset_ttl_seconds == 3600
    assert s.invitation_ttl_seconds == 604800
    assert s.log_level == "info"
    assert s.log_format == "json"


def test_values_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCESS_TOKEN_TTL_SECONDS", "600")
    monkeypatch.setenv("RATE_LIMIT_ENABLED", "false")
    monkeypatch.setenv("PASSWORD_MIN_LENGTH", "8")
    monkeypatch.setenv("app_name", "Lower Case Works")  # names are case-insensitive
    s = load()
    assert s.access_token_ttl_seconds == 600
    assert s.rate_limit_enabled is False
    assert s.password_min_length == 8
    assert s.app_name == "Lower Case Works"


# --- environment and its NODE_ENV alias -------------------------------------------------------


def test_node_env_acts_as_environment(
    monkeypatch: pytest.MonkeyPatch, core_secrets: SecretsFixture
) -> None:
    production(monkeypatch, core_secrets)
    monkeypatch.delenv("ENVIRONMENT")
    monkeypatch.setenv("NODE_ENV", "production")
    assert load().environment == "production"


def test_node_env_production_alone_demands_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = refused(monkeypatch, NODE_ENV="production")
    assert "JWT_SECRET" in exc.detail


@pytest.mark.parametrize(
    ("environment", "node_env"), [("development", "production"), ("test", "production")]
)
def test_environment_wins_over_node_env(
    monkeypatch: pytest.MonkeyPatch, environment: str, node_env: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    monkeypatch.setenv("NODE_ENV", node_env)
    assert load().environment == environment


def test_environment_wins_when_it_says_production(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = refused(monkeypatch, ENVIRONMENT="production", NODE_ENV="development")
    assert "JWT_SECRET" in exc.detail


# --- JWT secrets (SEC-JW-06, SEC-IV-04) --------------------------------------------------------


def test_production_accepts_valid_secrets(
    monkeypatch: pytest.MonkeyPatch, core_secrets: SecretsFixture
) -> None:
    production(monkeypatch, core_secrets)
    s = load()
    assert s.is_production
    assert s.secret("jwt_secret") == make_secret(40, "access")


@pytest.mark.parametrize("missing", ["JWT_SECRET", "JWT_REFRESH_SECRET"])
def test_production_requires_both_secrets(
    monkeypatch: pytest.MonkeyPatch, core_secrets: SecretsFixture, missing: str
) -> None:
    production(monkeypatch, core_secrets)
    monkeypatch.delenv(missing)
    exc = refused(monkeypatch)
    assert missing in exc.detail


def _assert_secret_hidden(exc: ConfigurationError, secret: str) -> None:
    assert secret not in str(exc)
    assert secret not in repr(exc.to_dict())
    assert secret not in "".join(traceback.format_exception(exc))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JWT_SECRET", "Sh0rt-but-random-9f8e7d6c5b4a3"),  # 30 chars
        ("JWT_REFRESH_SECRET", "Sh0rt-but-random-9f8e7d6c5b4a3"),
        ("JWT_SECRET", "your-secret-key-min-32-chars-xxxxxxxx"),
        ("JWT_REFRESH_SECRET", "your-refresh-secret-min-32-chars-xxxxxxxx"),
        ("JWT_SECRET", "please-changeme-before-deploying-this-thing"),
        ("JWT_SECRET", "abababababababababababababababababababab"),  # too little variety
    ],
)
@pytest.mark.parametrize("environment", ["production", "development"])
def test_weak_or_sample_secret_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
    core_secrets: SecretsFixture,
    variable: str,
    value: str,
    environment: str,
) -> None:
    production(monkeypatch, core_secrets)
    exc = refused(monkeypatch, ENVIRONMENT=environment, **{variable: value})
    assert variable in exc.detail
    _assert_secret_hidden(exc, value)


def test_equal_secrets_refused(
    monkeypatch: pytest.MonkeyPatch, core_secrets: SecretsFixture
) -> None:
    production(monkeypatch, core_secrets)
    same = make_secret(40, "same")
    exc = refused(monkeypatch, JWT_SECRET=same, JWT_REFRESH_SECRET=same)
    assert "JWT_SECRET" in exc.detail
    assert "JWT_REFRESH_SECRET" in exc.detail
    _assert_secret_hidden(exc, same)


@pytest.mark.parametrize(("algorithm", "minimum"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_secret_length_follows_the_algorithm(
    monkeypatch: pytest.MonkeyPatch, core_secrets: SecretsFixture, algorithm: str, minimum: int
) -> None:
    monkeypatch.setenv("JWT_ALGORITHM", algorithm)
    core_secrets(minimum)
    assert load().jwt_algorithm == algorithm
    short = make_secret(minimum - 1, "short")
    exc = refused(monkeypatch, JWT_SECRET=short)
    assert "JWT_SECRET" in exc.detail
    assert str(minimum) in exc.detail
    _assert_secret_hidden(exc, short)


def test_previous_secrets_are_checked_too(
    monkeypatch: pytest.MonkeyPatch, core_secrets: SecretsFixture
) -> None:
    core_secrets()
    good, bad = make_secret(40, "old-1"), "old-and-short-7f3a"
    monkeypatch.setenv("JWT_PREVIOUS_SECRETS", good)
    assert [s.get_secret_value() for s in load().jwt_previous_secrets] == [good]
    exc = refused(monkeypatch, JWT_PREVIOUS_SECRETS=f"{good},{bad}")
    assert "JWT_PREVIOUS_SECRETS" in exc.detail
    _assert_secret_hidden(exc, bad)


def test_development_generates_a_random_secret_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "development")
    with caplog.at_level(logging.WARNING, logger="usermgmt.config"):
        first = load()
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "JWT_SECRET" in warned
    assert "JWT_REFRESH_SECRET" in warned
    second = load()
    for name in ("jwt_secret", "jwt_refresh_secret"):
        value = first.secret(name)
        assert len(value) >= 32
        assert value not in warned
        assert value != second.secret(name)
    assert first.secret("jwt_secret") != first.secret("jwt_refresh_secret")


def test_secrets_are_masked_in_repr(
    monkeypatch: pytest.MonkeyPatch, core_secrets: SecretsFixture
) -> None:
    access, refresh = core_secrets()
    monkeypatch.setenv("SMTP_URL", "smtp://user:Smtp-Pa55word@mail.example.com:587")
    text = repr(load())
    assert access not in text
    assert refresh not in text
    assert "Smtp-Pa55word" not in text


# --- passwords and argon2 (SEC-PW-01) ----------------------------------------------------------


@pytest.mark.parametrize("value", ["7", "0", "-1"])
def test_password_min_length_below_8_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    exc = refused(monkeypatch, PASSWORD_MIN_LENGTH=value)
    assert "PASSWORD_MIN_LENGTH" in exc.detail


def test_password_min_length_8_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASSWORD_MIN_LENGTH", "8")
    assert load().password_min_length == 8


def test_password_min_length_above_max_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = refused(monkeypatch, PASSWORD_MIN_LENGTH="100", PASSWORD_MAX_LENGTH="64")
    assert "PASSWORD_MIN_LENGTH" in exc.detail
    assert "PASSWORD_MAX_LENGTH" in exc.detail


CHEAP_ARGON2 = [
    {"PASSWORD_ARGON2_MEMORY_KIB": "19455"},
    {"PASSWORD_ARGON2_TIME_COST": "1"},
    {"PASSWORD_ARGON2_MEMORY_KIB": "1024", "PASSWORD_ARGON2_TIME_COST": "1"},
]


@pytest.mark.parametrize("cheap", CHEAP_ARGON2)
def test_argon2_below_owasp_refused_in_development(
    monkeypatch: pytest.MonkeyPatch, cheap: dict[str, str]
) -> None:
    exc = refused(monkeypatch, ENVIRONMENT="development", **cheap)
    assert "PASSWORD_ARGON2" in exc.detail


@pytest.mark.parametrize("cheap", CHEAP_ARGON2)
def test_argon2_below_owasp_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, core_secrets: SecretsFixture, cheap: dict[str, str]
) -> None:
    production(monkeypatch, core_secrets)
    exc = refused(monkeypatch, **cheap)
    assert "PASSWORD_ARGON2" in exc.detail


@pytest.mark.parametrize("cheap", CHEAP_ARGON2)
def test_argon2_cheap_profile_allowed_in_test(
    monkeypatch: pytest.MonkeyPatch, cheap: dict[str, str]
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "test")
    for name, value in cheap.items():
        monkeypatch.setenv(name, value)
    assert load().environment == "test"


def test_argon2_owasp_minimum_accepted_in_production(
    monkeypatch: pytest.MonkeyPatch, core_secrets: SecretsFixture
) -> None:
    production(monkeypatch, core_secrets)
    monkeypatch.setenv("PASSWORD_ARGON2_MEMORY_KIB", "19456")
    monkeypatch.setenv("PASSWORD_ARGON2_TIME_COST", "2")
    monkeypatch.setenv("PASSWORD_ARGON2_PARALLELISM", "1")
    s = load()
    assert (s.password_argon2_memory_kib, s.password_argon2_time_cost) == (19456, 2)


# --- derived defaults --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "provider"), [("development", "console"), ("test", "memory")]
)
def test_email_provider_default_per_environment(
    monkeypatch: pytest.MonkeyPatch, environment: str, provider: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    assert load().email_provider == provider


@pytest.mark.parametrize("provider", ["console", "memory", None])
def test_non_delivering_email_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, core_secrets: SecretsFixture, provider: str | None
) -> None:
    production(monkeypatch, core_secrets)
    if provider is None:
        monkeypatch.delenv("EMAIL_PROVIDER")  # the derived default must not slip through
    else:
        monkeypatch.setenv("EMAIL_PROVIDER", provider)
    exc = refused(monkeypatch)
    assert "EMAIL_PROVIDER" in exc.detail


def test_storage_is_s3_with_a_bucket_and_local_without(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load().storage_backend == "local"
    monkeypatch.setenv("AWS_S3_BUCKET", "audit-archive")
    assert load().storage_backend == "s3"


def test_s3_storage_without_bucket_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = refused(monkeypatch, STORAGE_BACKEND="s3")
    assert "AWS_S3_BUCKET" in exc.detail


@pytest.mark.parametrize(
    ("env", "queue", "cluster"),
    [
        ({}, "inline", False),
        # a standalone queue Redis selects RQ; a Cluster alone cannot hold RQ queues
        ({"REDIS_URL": "redis://cache:6379/0"}, "rq", False),
        ({"REDIS_URL": "rediss://cache:6380/0"}, "rq", False),
        ({"REDIS_URL": "redis+cluster://a:7000,b:7001"}, "inline", True),
        ({"REDIS_URL": "redis://a:7000", "REDIS_CLUSTER": "true"}, "inline", True),
        (
            {"REDIS_URL": "redis+cluster://a:7000", "QUEUE_REDIS_URL": "redis://queue:6379/1"},
            "rq",
            True,
        ),
        ({"REDIS_URL": "redis://cache:6379/0", "QUEUE_BACKEND": "inline"}, "inline", False),
        ({"REDIS_URL": "redis://cache:6379/0", "QUEUE_BACKEND": "rq"}, "rq", False),
    ],
)
def test_queue_and_cluster_derived_from_redis(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], queue: str, cluster: bool
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load()
    assert s.queue_backend == queue
    assert s.redis_cluster is cluster


def test_rq_on_a_cluster_needs_queue_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = refused(monkeypatch, REDIS_URL="redis+cluster://a:7000,b:7001", QUEUE_BACKEND="rq")
    assert "QUEUE_REDIS_URL" in exc.detail


def test_rq_without_any_redis_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = refused(monkeypatch, QUEUE_BACKEND="rq")
    assert "QUEUE_REDIS_URL" in exc.detail


@pytest.mark.parametrize(
    "app_url", ["https://app.example.com", "https://app.example.com/", "https://x.io/base/"]
)
def test_oauth_redirect_default_follows_app_url(
    monkeypatch: pytest.MonkeyPatch, app_url: str
) -> None:
    monkeypatch.setenv("APP_URL", app_url)
    assert load().oauth_redirect_urls == [app_url.rstrip("/") + "/oauth/complete"]


def test_oauth_redirect_urls_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTH_REDIRECT_URLS", "https://a.example/done, https://b.example/x")
    assert load().oauth_redirect_urls == ["https://a.example/done", "https://b.example/x"]
    exc = refused(monkeypatch, OAUTH_REDIRECT_URLS="https://a.example/done,/relative")
    assert "OAUTH_REDIRECT_URLS" in exc.detail


# --- comma-separated lists and JSON --------------------------------------------------------------


def test_read_replicas_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_READ_REPLICA_URLS", " postgresql://r1/app , postgresql://r2/app ,")
    assert load().database_read_replica_urls == ["postgresql://r1/app", "postgresql://r2/app"]


def test_trusted_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7,2001:db8::/32")
    assert load().trusted_proxies == ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]


@pytest.mark.parametrize("bad", ["300.1.1.1/24", "10.0.0.0/33", "proxy.internal"])
def test_trusted_proxies_bad_cidr_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    exc = refused(monkeypatch, TRUSTED_PROXIES=f"10.0.0.0/8,{bad}")
    assert "TRUSTED_PROXIES" in exc.detail
    assert bad in exc.detail


def test_app_permissions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PERMISSIONS", "project:read, project:write,billing_v2:view")
    assert load().app_permissions == ["project:read", "project:write", "billing_v2:view"]


@pytest.mark.parametrize("bad", ["Project:Read", "project", "project:read:all", ":read", "a b:c"])
def test_app_permissions_malformed_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    exc = refused(monkeypatch, APP_PERMISSIONS=f"project:read,{bad}")
    assert "APP_PERMISSIONS" in exc.detail


OKTA = (
    '[{"name": "okta", "discovery_url": "https://okta.example/.well-known/openid-configuration",'
    ' "client_id": "cid", "client_secret": "Okta-Client-Secret-123"}]'
)


def test_oidc_providers_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OIDC_PROVIDERS", OKTA)
    (okta,) = load().oidc_providers
    assert okta.name == "okta"
    assert okta.client_id == "cid"
    assert okta.client_secret.get_secret_value() == "Okta-Client-Secret-123"
    assert okta.scopes == ["openid", "email", "profile"]


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        '{"name": "okta"}',
        OKTA.replace('"okta"', '"Okta!"'),
        OKTA.replace(', "client_secret": "Okta-Client-Secret-123"', ""),
        OKTA.replace('"client_id"', '"surprise": 1, "client_id"'),
    ],
)
def test_oidc_providers_bad_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    exc = refused(monkeypatch, OIDC_PROVIDERS=bad)
    assert "OIDC_PROVIDERS" in exc.detail
    assert "Okta-Client-Secret-123" not in str(exc)


@pytest.mark.parametrize(
    ("given", "level"), [("warn", "warning"), ("WARN", "warning"), ("DEBUG", "debug")]
)
def test_log_level(monkeypatch: pytest.MonkeyPatch, given: str, level: str) -> None:
    monkeypatch.setenv("LOG_LEVEL", given)
    assert load().log_level == level


# --- every invalid value: ConfigurationError naming the variable -----------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENVIRONMENT", "staging"),
        ("JWT_ALGORITHM", "RS256"),
        ("JWT_ALGORITHM", "none"),
        ("ACCESS_TOKEN_TTL_SECONDS", "soon"),
        ("ACCESS_TOKEN_TTL_SECONDS", "0"),
        ("REFRESH_TOKEN_TTL_SECONDS", "-5"),
        ("EMAIL_PROVIDER", "pigeon"),
        ("STORAGE_BACKEND", "floppy"),
        ("QUEUE_BACKEND", "celery"),
        ("RATE_LIMIT_ENABLED", "perhaps"),
        ("RATE_LIMIT_WINDOW_MS", "abc"),
        ("RATE_LIMIT_MAX_REQUESTS", "0"),
        ("PREVENT_ENUMERATION", "maybe"),
        ("PASSWORD_ARGON2_PARALLELISM", "0"),
        ("LOGIN_MAX_FAILURES", "0"),
        ("LOGIN_LOCKOUT_SECONDS", "x"),
        ("AUDIT_ARCHIVE_AFTER_DAYS", "0"),
        ("EMAIL_VERIFICATION_TTL_SECONDS", "1"),
        ("PASSWORD_RESET_TTL_SECONDS", "lots"),
        ("INVITATION_TTL_SECONDS", "0"),
        ("LOG_LEVEL", "verbose"),
        ("LOG_FORMAT", "xml"),
        ("APP_URL", "https://app.example.com/?tenant=1"),
        ("APP_URL", "https://app.example.com/#top"),
        ("APP_URL", "ftp://app.example.com"),
        ("APP_URL", "app.example.com"),
        ("VERIFY_EMAIL_PATH", "verify"),
        ("RESET_PASSWORD_PATH", "//evil.example/reset"),
        ("ACCEPT_INVITATION_PATH", "/accept?x=1"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, core_secrets: SecretsFixture, variable: str, value: str
) -> None:
    access, refresh = core_secrets()
    exc = refused(monkeypatch, **{variable: value})
    assert isinstance(exc, ConfigurationError)
    assert exc.code == "configuration_error"
    assert variable in exc.detail
    assert "\n" not in exc.detail
    _assert_secret_hidden(exc, access)
    _assert_secret_hidden(exc, refresh)


def test_errors_in_code_are_configuration_errors_too() -> None:
    with pytest.raises(ConfigurationError, match="PASSWORD_MIN_LENGTH"):
        Settings(_env_file=None, password_min_length=4)
    with pytest.raises(ConfigurationError, match="PASSWORD_MIN_LENGTH"):
        Settings.for_tests(password_min_length=7)


# --- links -----------------------------------------------------------------------------------------


def test_link_builds_from_app_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", "https://app.example.com/base/")
    s = load()
    assert s.app_url == "https://app.example.com/base"
    assert s.link("/verify-email", "tok_123-x") == (
        "https://app.example.com/base/verify-email?token=tok_123-x"
    )
    assert (
        s.link(s.reset_password_path, "t") == "https://app.example.com/base/reset-password?token=t"
    )
