"""Amazon SES delivery with boto3 (extra ``aws``).

Uses ``send_email`` with a Text and, when there is one, an Html body. The region is
``AWS_SES_REGION``; ``AWS_ENDPOINT_URL`` (a stand-in such as moto in tests) and the
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` settings are honoured, otherwise
boto3's usual credential chain applies.
"""

from __future__ import annotations

from typing import Any

from usermgmt.backends import require_module
from usermgmt.backends.email._headers import checked_fields, split_address
from usermgmt.config import Settings
from usermgmt.errors import ConfigurationError, EmailDeliveryError
from usermgmt.ports import EmailMessage

__all__ = ["SesEmailSender", "build"]

_TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestThrottled",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
    "RequestTimeout",
    "RequestTimeoutException",
}


class SesEmailSender:
    """An :class:`~usermgmt.ports.EmailSender` over Amazon SES (``SendEmail``)."""

    def __init__(
        self,
        *,
        region: str,
        default_sender: str,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout: float = 10.0,
        max_attempts: int = 2,
    ) -> None:
        boto3 = require_module("boto3", "boto3", "aws")
        botocore_config = require_module("botocore.config", "boto3", "aws")
        self._botocore = require_module("botocore.exceptions", "boto3", "aws")
        config = botocore_config.Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
        )
        kwargs: dict[str, Any] = {"region_name": region, "config": config}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        if access_key_id and secret_access_key:
            kwargs["aws_access_key_id"] = access_key_id
            kwargs["aws_secret_access_key"] = secret_access_key
        self._client: Any = boto3.session.Session().client("ses", **kwargs)
        self.region = region
        self.endpoint_url = endpoint_url
        self.default_sender = default_sender
        self.last_message_id: str | None = None

    def __repr__(self) -> str:  # never shows credentials
        return f"SesEmailSender(region={self.region!r}, endpoint_url={self.endpoint_url!r})"

    def send(self, message: EmailMessage) -> None:
        """Deliver or raise EmailDeliveryError (``transient`` says whether to retry)."""
        sender, to, subject = checked_fields(message, self.default_sender)
        split_address(sender)
        body: dict[str, Any] = {"Text": {"Data": message.text, "Charset": "UTF-8"}}
        if message.html is not None:
            body["Html"] = {"Data": message.html, "Charset": "UTF-8"}
        errors = self._botocore
        try:
            response = self._client.send_email(
                Source=sender,
                Destination={"ToAddresses": [to]},
                Message={"Subject": {"Data": subject, "Charset": "UTF-8"}, "Body": body},
            )
            self.last_message_id = str(response.get("MessageId", ""))
        except errors.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            transient = code in _TRANSIENT_CODES or status >= 500 or status == 429
            text = str(error.get("Message", ""))[:200]
            raise EmailDeliveryError(
                f"SES refused the message ({code}{': ' + text if text else ''}).",
                transient=transient,
            ) from None
        except errors.NoCredentialsError:
            raise EmailDeliveryError("No AWS credentials for SES.", transient=False) from None
        except (errors.BotoCoreError, OSError) as exc:
            # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ...
            raise EmailDeliveryError(
                f"Could not reach SES ({type(exc).__name__}).", transient=True
            ) from None


def build(settings: Settings) -> SesEmailSender:
    """The sender for ``EMAIL_PROVIDER=ses``."""
    if not settings.aws_ses_region:
        raise ConfigurationError("EMAIL_PROVIDER=ses needs AWS_SES_REGION")
    secret = settings.aws_secret_access_key
    return SesEmailSender(
        region=settings.aws_ses_region,
        default_sender=settings.email_from,
        endpoint_url=settings.aws_endpoint_url,
        access_key_id=settings.aws_access_key_id,
        secret_access_key=None if secret is None else secret.get_secret_value(),
    )
