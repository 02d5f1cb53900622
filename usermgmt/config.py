"""Settings: every variable of the deployment guide, validated once at start.

``Settings()`` reads the environment (and a ``.env`` file if present);
``Settings(database_url=..., ...)`` sets values in code. Invalid values raise
:class:`~usermgmt.errors.ConfigurationError` with one readable line per problem.
Nothing below the composition root reads ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import secrets
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from usermgmt.errors import ConfigurationError

logger = logging.getLogger("usermgmt.config")

Environment = Literal["development", "test", "production"]
EmailProvider = Literal["sendgrid", "ses", "smtp", "console", "memory"]
StorageBackendName = Literal["s3", "local", "memory"]
QueueBackendName = Literal["inline", "rq"]

#: OWASP / ASVS 5 Appendix C minimum for argon2id.
ARGON2_MIN_MEMORY_KIB = 19456
ARGON2_MIN_TIME_COST = 2
ARGON2_MIN_PARALLELISM = 1

#: Seed and documentation sample values that must never reach a running system.
_SAMPLE_SECRETS = frozenset(
    {
        "your-secret-key-min-32-chars",
        "your-refresh-secret-min-32-chars",
        "changeme",
        "secret",
    }
)
_SAMPLE_MARKERS = ("your-secret", "your-refresh-secret", "change-me", "changeme", "replace-me")
_PERMISSION_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}:[a-z][a-z0-9_-]{0,62}$")


def _split_csv(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def provider_url_allowed(url: str) -> bool:
    """An OpenID provider URL we may talk to: ``https://``, or ``http://`` on a loopback
    host only (127.0.0.1, ::1, localhost: local development and tests)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and host in _LOOPBACK_HOSTS)


class OIDCProviderSettings(BaseModel):
    """One OpenID Connect provider of ``OIDC_PROVIDERS``."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    #: ``https://issuer/.well-known/openid-configuration``; derived from ``issuer`` if unset.
    discovery_url: str | None = None
    #: The exact ``iss`` of the provider's ID tokens; taken from discovery if unset
    #: (which must then be the discovery URL without ``/.well-known/openid-configuration``).
    issuer: str | None = None
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    #: What a sign-in button may call the provider ("Sign in with <display_name>").
    display_name: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _endpoints(self) -> OIDCProviderSettings:
        for url in (self.discovery_url, self.issuer):
            if url is not None and not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", url):
                raise ValueError(f"{url!r} is not an absolute http(s) URL")
            if url is not None and not provider_url_allowed(url):
                raise ValueError(f"{url!r} must use https:// (http:// only on a loopback host)")
        if self.discovery_url is None and self.issuer is None:
            raise ValueError(f"OIDC provider {self.name!r} needs discovery_url or issuer")
        if "openid" not in self.scopes:
            raise ValueError(f"OIDC provider {self.name!r}: scopes must include 'openid'")
        return self


class Settings(BaseSettings):
    """Configuration of a :class:`~usermgmt.UserManagement` (environment names as in the seed)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
        validate_default=True,
    )

    # --- storage ---------------------------------------------------------------------
    database_url: str = "sqlite:///./usermgmt.db"
    database_read_replica_urls: CsvList = Field(default_factory=list)

    # --- redis -------------------------------------------------------------------------
    redis_url: str | None = None
    redis_cluster: bool = False
    redis_socket_timeout_seconds: float = Field(default=0.25, gt=0, le=10)

    # --- tokens --------------------------------------------------------------------------
    jwt_secret: SecretStr | None = None
    jwt_refresh_secret: SecretStr | None = None
    jwt_previous_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    jwt_refresh_previous_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = Field(default="usermgmt", min_length=1, max_length=255)
    jwt_audience: str = Field(default="usermgmt", min_length=1, max_length=255)
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=60)
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86400)
    refresh_token_ttl_seconds: int = Field(default=30 * 86400, ge=60, le=365 * 86400)
    refresh_token_idle_ttl_seconds: int = Field(default=14 * 86400, ge=60, le=365 * 86400)

    # --- application ---------------------------------------------------------------------
    app_url: str = "http://localhost:8000"
    app_name: str = Field(default="usermgmt", min_length=1, max_length=100)
    environment: Environment = Field(
        default="development", validation_alias=AliasChoices("environment", "node_env")
    )
    verify_email_path: str = "/verify-email"
    reset_password_path: str = "/reset-password"
    accept_invitation_path: str = "/accept-invitation"
    app_permissions: CsvList = Field(default_factory=list)
    http_check_threads: int = Field(default=2, ge=1, le=64)

    # --- email ---------------------------------------------------------------------------
    email_provider: EmailProvider | None = None
    email_from: str = "usermgmt <no-reply@localhost>"
    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_url: str = "https://api.sendgrid.com"
    aws_ses_region: str | None = None
    smtp_url: SecretStr | None = None

    # --- aws -----------------------------------------------------------------------------
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_endpoint_url: str | None = None
    aws_s3_bucket: str | None = None
    aws_s3_region: str | None = None
    audit_archive_after_days: int = Field(default=90, ge=1, le=3650)
    #: gzip level of archive objects (1 fastest ... 9 smallest; see docs/audit.md).
    audit_archive_gzip_level: int = Field(default=3, ge=1, le=9)
    #: Streams (organizations) archived at once, one thread (up to 3 connections) each.
    audit_archive_concurrency: int = Field(default=3, ge=1, le=16)
    storage_backend: StorageBackendName | None = None
    storage_local_path: str = "./usermgmt-archive"
    #: Per-object S3 Object Lock retention (``none``: the bucket's default retention applies).
    aws_s3_object_lock_mode: Literal["none", "GOVERNANCE", "COMPLIANCE"] = "none"
    aws_s3_object_lock_retention_days: int | None = Field(default=None, ge=1, le=36500)
    #: Key prefix inside the bucket, e.g. ``usermgmt/audit`` (no leading slash, no ``..``).
    aws_s3_prefix: str = Field(default="", max_length=512)

    # --- oauth ---------------------------------------------------------------------------
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    oidc_providers: Annotated[list[OIDCProviderSettings], NoDecode] = Field(default_factory=list)
    oauth_redirect_urls: CsvList = Field(default_factory=list)
    oauth_link_verified_email: bool = False
    #: Public base URL of the API routes for the ``redirect_uri`` sent to providers
    #: (``{base}/auth/oauth/{provider}/callback``); default ``APP_URL``.
    oauth_callback_base_url: str | None = None

    # --- queues --------------------------------------------------------------------------
    queue_backend: QueueBackendName | None = None
    queue_redis_url: str | None = None
    queue_retry_max_attempts: int = Field(default=8, ge=1, le=100)
    queue_retry_backoff_seconds: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [10, 60, 300, 1800]
    )
    queue_job_timeout_seconds: int = Field(default=300, ge=1, le=86400)
    queue_audit_archive_job_timeout_seconds: int = Field(default=6 * 3600, ge=1, le=86400)
    queue_failed_ttl_seconds: int = Field(default=7 * 86400, ge=60, le=365 * 86400)
    queue_worker_ttl_seconds: int = Field(default=60, ge=20, le=3600)
    queue_email_backlog_threshold: int = Field(default=1000, ge=1)
    queue_email_failed_threshold: int = Field(default=10, ge=1)
    queue_audit_archive_backlog_threshold: int = Field(default=5, ge=1)
    queue_audit_archive_failed_threshold: int = Field(default=1, ge=1)
    schedule_audit_archive_at: str = Field(default="03:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    # --- rate limiting -------------------------------------------------------------------
    rate_limit_enabled: bool = True
    rate_limit_window_ms: int = Field(default=60000, ge=1000, le=86_400_000)
    rate_limit_max_requests: int = Field(default=100, ge=1, le=1_000_000)
    rate_limit_failure_mode: Literal["fallback", "closed"] = "fallback"
    trusted_proxies: CsvList = Field(default_factory=list)

    # --- accounts and passwords --------------------------------------------------------------
    prevent_enumeration: bool = True
    require_verified_email: bool = False
    password_min_length: int = Field(default=15, ge=8, le=1024)
    password_max_length: int = Field(default=1024, ge=64, le=4096)
    password_argon2_memory_kib: int = Field(default=65536, ge=8, le=4 * 1024 * 1024)
    password_argon2_time_cost: int = Field(default=3, ge=1, le=100)
    password_argon2_parallelism: int = Field(default=4, ge=1, le=64)
    password_hash_concurrency: int | None = Field(default=None, ge=1, le=256)
    login_max_failures: int = Field(default=10, ge=1, le=100)
    login_lockout_seconds: int = Field(default=60, ge=1, le=86400)
    login_lockout_max_seconds: int = Field(default=3600, ge=1, le=7 * 86400)

    # --- single-use token lifetimes --------------------------------------------------------
    email_verification_ttl_seconds: int = Field(default=86400, ge=60, le=30 * 86400)
    password_reset_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    invitation_ttl_seconds: int = Field(default=604800, ge=60, le=90 * 86400)

    # --- logging -------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "console"] = "json"

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except pydantic.ValidationError as exc:
            raise ConfigurationError(_describe(exc)) from None

    # --- field validators ------------------------------------------------------------------

    @field_validator(
        "database_read_replica_urls",
        "app_permissions",
        "oauth_redirect_urls",
        "trusted_proxies",
        "jwt_previous_secrets",
        "jwt_refresh_previous_secrets",
        "queue_retry_backoff_seconds",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("queue_retry_backoff_seconds")
    @classmethod
    def _backoff(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 0 or max(value) > 86400:
            raise ValueError("must be one or more whole seconds between 0 and 86400")
        return value

    @field_validator("oidc_providers", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    @field_validator("environment", mode="before")
    @classmethod
    def _environment(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return {"dev": "development", "prod": "production", "testing": "test"}.get(value, value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return "warning" if value == "warn" else value
        return value

    @field_validator("aws_s3_object_lock_mode", mode="before")
    @classmethod
    def _lock_mode(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return "none" if value.lower() in ("", "none") else value.upper()
        return value

    @field_validator("aws_s3_prefix")
    @classmethod
    def _s3_prefix(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and (
            value.startswith("/")
            or any(part in ("", ".", "..") for part in value.split("/"))
            or "\\" in value
            or "\x00" in value
        ):
            raise ValueError("AWS_S3_PREFIX must be a relative path such as 'usermgmt/audit'")
        return value

    @field_validator("app_url")
    @classmethod
    def _app_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
            raise ValueError("must be an absolute http(s) URL without query or fragment")
        return value.rstrip("/")

    @field_validator("verify_email_path", "reset_password_path", "accept_invitation_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith("//") or any(c in value for c in "?#\\ "):
            raise ValueError("must be a path starting with a single '/'")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP network (CIDR)") from None
        return value

    @field_validator("app_permissions")
    @classmethod
    def _permissions(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _PERMISSION_RE.match(name):
                raise ValueError(f"{name!r} is not of the form resource:action")
        return value

    @field_validator("oauth_redirect_urls")
    @classmethod
    def _redirects(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
                raise ValueError(f"{url!r} is not an absolute http(s) URL")
        return value

    # --- cross-field rules -------------------------------------------------------------------

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        self._check_secrets()
        self._check_argon2()
        if self.refresh_token_idle_ttl_seconds > self.refresh_token_ttl_seconds:
            self.refresh_token_idle_ttl_seconds = self.refresh_token_ttl_seconds
        if self.password_min_length > self.password_max_length:
            raise ValueError("PASSWORD_MIN_LENGTH must not exceed PASSWORD_MAX_LENGTH")
        if self.login_lockout_max_seconds < self.login_lockout_seconds:
            raise ValueError("LOGIN_LOCKOUT_MAX_SECONDS must be >= LOGIN_LOCKOUT_SECONDS")
        if self.email_provider is None:
            self.email_provider = "memory" if self.environment == "test" else "console"
        if self.environment == "production" and self.email_provider in ("console", "memory"):
            raise ValueError(
                f"EMAIL_PROVIDER={self.email_provider} does not deliver mail; "
                "choose smtp, sendgrid or ses in production"
            )
        if not self.oauth_redirect_urls:
            self.oauth_redirect_urls = [f"{self.app_url}/oauth/complete"]
        names = [p.name for p in self.oidc_providers]
        if self.google_client_id:
            names.append("google")
        if len(names) != len(set(names)):
            raise ValueError(
                "OIDC_PROVIDERS: provider names must be unique (and not 'google' when GOOGLE_CLIENT_ID is set)"
            )
        if self.google_client_id and self.google_client_secret is None:
            raise ValueError("GOOGLE_CLIENT_ID needs GOOGLE_CLIENT_SECRET")
        if self.oauth_callback_base_url is not None:
            if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", self.oauth_callback_base_url):
                raise ValueError("OAUTH_CALLBACK_BASE_URL must be an absolute http(s) URL")
            self.oauth_callback_base_url = self.oauth_callback_base_url.rstrip("/")
        if self.storage_backend is None:
            self.storage_backend = "s3" if self.aws_s3_bucket else "local"
        if self.storage_backend == "s3" and not self.aws_s3_bucket:
            raise ValueError("STORAGE_BACKEND=s3 needs AWS_S3_BUCKET")
        if (self.aws_s3_object_lock_mode == "none") != (
            self.aws_s3_object_lock_retention_days is None
        ):
            raise ValueError(
                "AWS_S3_OBJECT_LOCK_MODE (GOVERNANCE or COMPLIANCE) and "
                "AWS_S3_OBJECT_LOCK_RETENTION_DAYS must be set together"
            )
        if self.redis_url and self.redis_url.startswith("redis+cluster://"):
            self.redis_cluster = True
        if self.queue_backend is None:
            # in-process without Redis; RQ (``usermgmt worker``) as soon as a standalone
            # queue Redis is known (a Cluster REDIS_URL alone cannot hold RQ queues)
            standalone = self.queue_redis_url or (self.redis_url and not self.redis_cluster)
            self.queue_backend = "rq" if standalone else "inline"
        if self.queue_backend == "rq" and not (
            self.queue_redis_url or (self.redis_url and not self.redis_cluster)
        ):
            raise ValueError(
                "QUEUE_BACKEND=rq needs QUEUE_REDIS_URL (a standalone or Sentinel Redis; "
                "queues cannot run on Redis Cluster)"
            )
        return self

    def _check_secrets(self) -> None:
        production = self.environment == "production"
        for name in ("jwt_secret", "jwt_refresh_secret"):
            secret: SecretStr | None = getattr(self, name)
            if secret is None:
                if production:
                    raise ValueError(f"{name.upper()} is required when ENVIRONMENT=production")
                logger.warning(
                    "%s is not set: using a random per-process secret; tokens will not "
                    "survive a restart or work across processes",
                    name.upper(),
                )
                setattr(self, name, SecretStr(secrets.token_urlsafe(64)))
                continue
            _check_secret_value(name.upper(), secret.get_secret_value(), self.jwt_algorithm)
        for old in self.jwt_previous_secrets:
            _check_secret_value("JWT_PREVIOUS_SECRETS", old.get_secret_value(), self.jwt_algorithm)
        for old in self.jwt_refresh_previous_secrets:
            _check_secret_value(
                "JWT_REFRESH_PREVIOUS_SECRETS", old.get_secret_value(), self.jwt_algorithm
            )
        if self.jwt_secret is None or self.jwt_refresh_secret is None:  # pragma: no cover
            raise ValueError("JWT secrets missing")
        if self.jwt_secret.get_secret_value() == self.jwt_refresh_secret.get_secret_value():
            raise ValueError("JWT_SECRET and JWT_REFRESH_SECRET must be different")

    def _check_argon2(self) -> None:
        below = (
            self.password_argon2_memory_kib < ARGON2_MIN_MEMORY_KIB
            or self.password_argon2_time_cost < ARGON2_MIN_TIME_COST
        )
        if below and self.environment != "test":
            raise ValueError(
                "argon2id cost below the OWASP minimum (PASSWORD_ARGON2_MEMORY_KIB >= "
                f"{ARGON2_MIN_MEMORY_KIB}, PASSWORD_ARGON2_TIME_COST >= {ARGON2_MIN_TIME_COST}); "
                "a cheap profile is allowed only with ENVIRONMENT=test"
            )

    # --- derived values ------------------------------------------------------------------------

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def secret(self, name: Literal["jwt_secret", "jwt_refresh_secret"]) -> str:
        """The plain value of a JWT secret (always set after validation)."""
        value: SecretStr | None = getattr(self, name)
        if value is None:  # pragma: no cover - validation always sets it
            raise ConfigurationError(f"{name.upper()} is not set")
        return value.get_secret_value()

    def link(self, path: str, token: str) -> str:
        """An email link ``{APP_URL}{path}?token=...`` (never built from request headers)."""
        return f"{self.app_url}{path}?token={token}"

    @classmethod
    def for_tests(cls, **overrides: Any) -> Settings:
        """Settings for application test suites: test environment, cheap argon2, memory email."""
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": "memory://",
            "email_provider": "memory",
            "storage_backend": "memory",
            "queue_backend": "inline",
            # in-memory means no server: a REDIS_URL in the shell must not reach the tests
            "redis_url": None,
            "redis_cluster": False,
            "queue_redis_url": None,
            "jwt_secret": secrets.token_urlsafe(48),
            "jwt_refresh_secret": secrets.token_urlsafe(48),
            "password_argon2_memory_kib": 1024,
            "password_argon2_time_cost": 1,
            "password_argon2_parallelism": 1,
        }
        values.update(overrides)
        return cls(_env_file=None, **values)


_MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def _check_secret_value(name: str, value: str, algorithm: str) -> None:
    minimum = _MIN_SECRET_BYTES.get(algorithm, 32)
    if len(value.encode()) < minimum:
        raise ValueError(f"{name} must be at least {minimum} characters long for {algorithm}")
    lowered = value.lower()
    if lowered in _SAMPLE_SECRETS or any(marker in lowered for marker in _SAMPLE_MARKERS):
        raise ValueError(
            f"{name} is a sample value; generate one (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    if len(set(value)) < 8:
        raise ValueError(f"{name} has too little variety to be a secret")


def _describe(exc: pydantic.ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"]) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{loc.upper()}: {message}" if error["loc"] else message)
    return "invalid settings: " + "; ".join(lines)
