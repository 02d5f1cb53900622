"""Request and response bodies of the OAuth routes (shared by both adapters)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

from usermgmt import models
from usermgmt.schemas import Input, Output, Token

if TYPE_CHECKING:
    from usermgmt.oauth.service import ProviderInfo

__all__ = [
    "AuthorizationUrlOut",
    "AuthorizeQuery",
    "CallbackQuery",
    "ExchangeIn",
    "LinkIn",
    "OAuthAccountOut",
    "ProviderOut",
]


class ExchangeIn(Input):
    """``POST /auth/oauth/exchange``: the one-time code of the callback's redirect."""

    code: Token


class LinkIn(Input):
    """``POST /auth/oauth/{provider}/link``: where to land afterwards (allowlisted)."""

    redirect_url: Annotated[str, Field(max_length=2048)] | None = None


class AuthorizationUrlOut(Output):
    """Where to send the browser to link the provider (the cookie is set already)."""

    authorization_url: str


class ProviderOut(Output):
    name: str
    display_name: str
    authorize_path: str

    @classmethod
    def of(cls, provider: ProviderInfo) -> ProviderOut:
        return cls(
            name=provider.name,
            display_name=provider.display_name,
            authorize_path=f"/auth/oauth/{provider.name}/authorize",
        )


class OAuthAccountOut(Output):
    provider: str
    email: str | None
    created_at: datetime

    @classmethod
    def of(cls, account: models.OAuthAccount) -> OAuthAccountOut:
        return cls(provider=account.provider, email=account.email, created_at=account.created_at)


QueryText = Annotated[str, Field(max_length=4096)]


class AuthorizeQuery(BaseModel):
    """Query of ``GET /auth/oauth/{provider}/authorize`` (unknown parameters ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    redirect_url: QueryText | None = None


class CallbackQuery(BaseModel):
    """Query of the provider's redirect to ``GET /auth/oauth/{provider}/callback``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    state: QueryText | None = None
    code: QueryText | None = None
    error: QueryText | None = None
