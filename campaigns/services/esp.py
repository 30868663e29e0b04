"""Sending through an ESP's API (django-anymail) with the same exactly-once line as SMTP.

The line is the API request. `on_handover` (which commits HANDED_OVER) runs right before anymail sends it;
everything before that (building the backend, its client, credentials) cannot deliver anything. After it:

- an error known to come before the request left (connection refused, connect timeout, TLS handshake) →
  DEFERRED, nothing delivered;
- the ESP's error response is a verdict: throttling or 503 → DEFERRED; the account's fault (credentials,
  unverified sender, suspended account) → ACCOUNT_ERROR (the account is paused, the send deferred); the
  message or recipient rejected → FAILED / BOUNCED; any other 5xx → UNKNOWN (the ESP itself does not say);
- a timeout or a dropped connection after the request was sent → UNKNOWN, never retried automatically.

Neither client retries on its own: botocore's retries are switched off (its default resends after a read
timeout), and requests does not retry a request it has sent. The ESP assigns its own message id (Amazon SES
rewrites the Message-ID header too): it comes back in `DeliveryResult.provider_message_id` and is stored beside
our RFC Message-ID. Moto server's SESv2 endpoint stands in for Amazon SES in the tests (`esp_endpoint_url`).
"""

from __future__ import annotations

import email
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.policy import compat32
from typing import Any

from anymail.exceptions import AnymailAPIError, AnymailConfigurationError, AnymailError, AnymailRecipientsRefused
from botocore.exceptions import BotoCoreError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection

from campaigns.models import SenderAccount
from campaigns.services.destinations import esp_refusal
from campaigns.services.outcomes import DeliveryResult, Outcome
from campaigns.services.templating import HEADER_POLICY

Esp = SenderAccount.Esp

# The account's fault: its credentials, its standing with the ESP, or a sender the ESP does not accept.
_ACCOUNT_ERROR_CODES = {
    "AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "UnrecognizedClientException",
    "SignatureDoesNotMatch", "IncompleteSignature", "MissingAuthenticationToken", "ExpiredToken",
    "AccountSuspendedException", "SendingPausedException", "MailFromDomainNotVerifiedException",
    "NotFoundException",  # Amazon SES: the account's configuration set does not exist
}  # fmt: skip
_THROTTLE_CODES = {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException"}
_NOT_VERIFIED = ("not verified", "did not have authority to send")
# Making the backend and its client (before anything is sent): unknown ESP, not installed, bad settings.
_SETUP_ERRORS = (AnymailConfigurationError, ImproperlyConfigured, ImportError, ValueError, TypeError, BotoCoreError)


# --- one backend per account --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EspKind:
    """How one anymail ESP is configured from an account: its backend and that backend's keyword arguments."""

    backend: str
    options: Callable[[SenderAccount, float], dict[str, Any]]


def _timeouts(timeout: float) -> tuple[float, float]:
    return min(10.0, timeout), timeout


def _amazon_ses_options(account: SenderAccount, timeout: float) -> dict[str, Any]:
    session: dict[str, Any] = {}
    if account.esp_key_id:
        session = {"aws_access_key_id": account.esp_key_id, "aws_secret_access_key": account.esp_secret}
    if account.esp_region:
        session["region_name"] = account.esp_region
    connect, read = _timeouts(timeout)
    # No retries: botocore's would send again after a read timeout, when the first request may have gone through.
    config = {"retries": {"total_max_attempts": 1}, "connect_timeout": connect, "read_timeout": read}
    client: dict[str, Any] = {"config": config}
    if account.esp_endpoint_url:
        client["endpoint_url"] = account.esp_endpoint_url
    options: dict[str, Any] = {"session_params": session, "client_params": client}
    if account.esp_configuration_set:
        options["configuration_set_name"] = account.esp_configuration_set
    return options


def _api_key_options(key_name: str) -> Callable[[SenderAccount, float], dict[str, Any]]:
    """ESPs over anymail's requests backends: one API key, an optional API URL, the request timeout."""

    def options(account: SenderAccount, timeout: float) -> dict[str, Any]:
        values: dict[str, Any] = {key_name: account.esp_secret, "timeout": _timeouts(timeout)}
        if account.esp_endpoint_url:
            values["api_url"] = account.esp_endpoint_url
        return values

    return options


ESP_KINDS: dict[str, EspKind] = {
    Esp.AMAZON_SES: EspKind("anymail.backends.amazon_ses.EmailBackend", _amazon_ses_options),
    Esp.MANDRILL: EspKind("anymail.backends.mandrill.EmailBackend", _api_key_options("api_key")),
    Esp.POSTMARK: EspKind("anymail.backends.postmark.EmailBackend", _api_key_options("server_token")),
    Esp.SENDGRID: EspKind("anymail.backends.sendgrid.EmailBackend", _api_key_options("api_key")),
}

_backends: dict[tuple[int | None, str], Any] = {}
_backends_lock = threading.Lock()


def _backend(account: SenderAccount) -> Any:
    """The account's anymail backend, opened (boto3 client or requests session) and kept for this process: a
    boto3 client costs tens of milliseconds to make. Changed settings or secrets make a new one."""
    kind = ESP_KINDS.get(account.esp_name)
    if kind is None:
        raise ImproperlyConfigured(f"no such ESP {account.esp_name!r}; known: {', '.join(ESP_KINDS)}")
    options = kind.options(account, settings.CAMPAIGN_SMTP_TIMEOUT)
    fingerprint = hashlib.sha256(json.dumps([kind.backend, options], sort_keys=True, default=str).encode()).hexdigest()
    key = (account.pk, fingerprint)
    with _backends_lock:
        backend = _backends.get(key)
        if backend is None:
            for stale in [k for k in _backends if k[0] == account.pk]:
                _backends.pop(stale).close()
            backend = get_connection(kind.backend, fail_silently=False, **options)
            backend.open()
            _backends[key] = backend
    return backend


def esp_backends_close() -> None:
    with _backends_lock:
        for backend in _backends.values():
            backend.close()
        _backends.clear()


# --- the message ------------------------------------------------------------------------------------------


_FIELD_HEADERS = {"from", "to", "cc", "bcc", "subject", "mime-version", "content-type", "content-transfer-encoding"}


def _header_text(value: str) -> str:
    return str(make_header(decode_header(value)))


class RawMimeMessage(EmailMultiAlternatives):
    """A message built by `message_build`, sent as it is where the ESP takes raw MIME (Amazon SES calls
    `message()`), and as its fields (subject, bodies, headers) where the ESP's API wants those."""

    def __init__(self, raw: bytes) -> None:
        self.raw_mime = raw
        parsed = email.message_from_bytes(raw, policy=compat32)
        text, html = "", ""
        for part in parsed.walk():
            if part.is_multipart() or part.get_content_maintype() != "text":
                continue
            payload = part.get_payload(decode=True) or b""
            content = payload.decode(part.get_content_charset() or "utf-8", errors="replace")
            if part.get_content_subtype() == "html" and not html:
                html = content
            elif part.get_content_subtype() == "plain" and not text:
                text = content
        headers = {name: _header_text(value) for name, value in parsed.items() if name.lower() not in _FIELD_HEADERS}
        super().__init__(
            subject=_header_text(parsed.get("Subject", "")),
            body=text,
            from_email=_header_text(parsed.get("From", "")),
            to=[_header_text(parsed.get("To", ""))],
            headers=headers,
        )
        if html:
            self.attach_alternative(html, "text/html")

    def message(self, *args, **kwargs):  # noqa: ANN201 - Django's signature
        return email.message_from_bytes(self.raw_mime, policy=HEADER_POLICY)  # unfolded, as message_build made it


# --- sending --------------------------------------------------------------------------------------------------


def esp_send(
    *, account: SenderAccount, message: EmailMessage | bytes | str, on_handover: Callable[[], bool]
) -> DeliveryResult:
    """One message through the account's ESP, waiting for the API's answer. `on_handover()` is called (and must
    commit) right before the request; if it returns False nothing is sent."""
    if isinstance(message, str):
        message = message.encode()
    if isinstance(message, bytes):
        message = RawMimeMessage(message)
    refusal = esp_refusal(account)
    if refusal is not None:  # nothing was sent: the secret may not go there, or there is none
        return DeliveryResult(Outcome.ACCOUNT_ERROR, f"{_label(account)}: {refusal}")
    try:
        backend = _backend(account)
    except _SETUP_ERRORS as error:  # nothing was sent
        return DeliveryResult(Outcome.ACCOUNT_ERROR, f"ESP not configured: {type(error).__name__}: {error}")
    if not on_handover():
        return DeliveryResult(Outcome.DEFERRED, "claim lost before handover; nothing sent")
    try:
        sent = backend.send_messages([message])
    except AnymailRecipientsRefused as error:
        return DeliveryResult(Outcome.BOUNCED, f"{_label(account)} refused the recipient: {_first_line(error)}")
    except AnymailAPIError as error:
        return esp_classify_error(error, account=account)
    except AnymailError as error:  # the payload could not be built (unsupported feature, bad address): not sent
        return DeliveryResult(Outcome.FAILED, f"not sent: {type(error).__name__}: {_first_line(error)}")
    status = getattr(message, "anymail_status", None)
    provider_id = status.message_id if status is not None else None
    if not sent or not provider_id:
        return DeliveryResult(Outcome.FAILED, f"{_label(account)} sent nothing (no recipient?)")
    if isinstance(provider_id, set):  # one id per recipient where they differ; we send to one recipient
        provider_id = ",".join(sorted(str(one) for one in provider_id))
    return DeliveryResult(
        Outcome.SENT, f"{_label(account)} accepted, id {provider_id}", provider_message_id=str(provider_id)
    )


# --- what an error means ----------------------------------------------------------------------------------


def _label(account: SenderAccount) -> str:
    return SenderAccount.Esp(account.esp_name).label if account.esp_name in Esp.values else account.esp_name


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:500]


def esp_classify_error(error: AnymailAPIError, *, account: SenderAccount) -> DeliveryResult:
    """What an anymail API error says about delivery: the exception anymail raised from (botocore's or
    requests') tells whether the request left; an error response is the ESP's verdict."""
    from botocore import exceptions as boto

    cause = error.__cause__
    label = _label(account)
    if isinstance(cause, boto.ClientError):
        details = cause.response.get("Error", {})
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return _rejection(account, status, details.get("Code", ""), details.get("Message", "") or str(cause))
    if isinstance(cause, boto.EndpointConnectionError | boto.ConnectTimeoutError | boto.ProxyConnectionError):
        return DeliveryResult(Outcome.DEFERRED, f"{label} before the request: {cause}", account_fault=True)
    if isinstance(cause, boto.SSLError):  # the handshake failed: no request was sent
        return DeliveryResult(Outcome.DEFERRED, f"{label} before the request: {cause}", account_fault=True)
    if isinstance(cause, boto.NoCredentialsError | boto.PartialCredentialsError | boto.NoRegionError):
        return DeliveryResult(Outcome.ACCOUNT_ERROR, f"{label}: {cause}")
    if isinstance(cause, boto.HTTPClientError | boto.ConnectionError):  # read timeout, connection closed, …
        return DeliveryResult(Outcome.UNKNOWN, f"{label} after the request: {type(cause).__name__}: {cause}")
    if isinstance(cause, boto.BotoCoreError):  # parameter validation and the like: the request never left
        return DeliveryResult(Outcome.FAILED, f"{label} not sent: {type(cause).__name__}: {cause}")
    result = _requests_error(cause, label)
    if result is not None:
        return result
    if error.status_code is not None:
        return _rejection(account, error.status_code, "", error.describe_response() or _first_line(error))
    # The ESP answered 2xx but its answer could not be read: it may have accepted the message.
    return DeliveryResult(Outcome.UNKNOWN, f"{label} answer unreadable: {_first_line(error)}")


def _requests_error(cause: BaseException | None, label: str) -> DeliveryResult | None:
    import requests
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    if not isinstance(cause, requests.RequestException):
        return None
    if isinstance(cause, requests.ConnectTimeout):
        return DeliveryResult(Outcome.DEFERRED, f"{label} before the request: {cause}", account_fault=True)
    if isinstance(cause, requests.ConnectionError):
        reason = getattr(cause.args[0], "reason", None) if cause.args else None  # urllib3's MaxRetryError
        before = isinstance(reason, NewConnectionError | ConnectTimeoutError)
        if before or isinstance(cause, requests.exceptions.SSLError):  # refused, unreachable, TLS handshake
            return DeliveryResult(Outcome.DEFERRED, f"{label} before the request: {cause}", account_fault=True)
    return DeliveryResult(Outcome.UNKNOWN, f"{label} after the request: {type(cause).__name__}: {cause}")


def _rejection(account: SenderAccount, status: int | None, code: str, message: str) -> DeliveryResult:
    label = _label(account)
    detail = f"{label} {status or '?'} {code}: {message}".replace("  ", " ")[:1000]
    lowered = message.lower()
    sender = account.email.lower()
    if status == 429 or code in _THROTTLE_CODES:
        return DeliveryResult(Outcome.DEFERRED, detail, status, account_fault=True)
    if status in (401, 403) or code in _ACCOUNT_ERROR_CODES:
        return DeliveryResult(Outcome.ACCOUNT_ERROR, detail, status)
    if any(words in lowered for words in _NOT_VERIFIED) and (sender in lowered or sender.partition("@")[2] in lowered):
        return DeliveryResult(Outcome.ACCOUNT_ERROR, f"sender {account.email} is not verified: {detail}", status)
    if status == 503:
        return DeliveryResult(Outcome.DEFERRED, detail, status, account_fault=True)
    if status is not None and status >= 500:
        return DeliveryResult(Outcome.UNKNOWN, detail, status)
    return DeliveryResult(Outcome.FAILED, detail, status)


# --- checking an account --------------------------------------------------------------------------------------


def esp_account_check(*, account: SenderAccount) -> tuple[bool, str]:
    """A cheap API call that proves the credentials and the sender: Amazon SES is asked whether the sender's
    address (or its domain) is a verified identity. Sends nothing. Never reveals the secret."""
    label = _label(account)
    refusal = esp_refusal(account)
    if refusal is not None:
        return False, f"{label}: {refusal}"
    if account.esp_name != Esp.AMAZON_SES:
        return False, f"{label}: no check without sending; send a test email to check the API key"
    from botocore import exceptions as boto

    try:
        client = _backend(account).client
    except _SETUP_ERRORS as error:
        return False, f"{label} client: {type(error).__name__}: {error}"
    for identity in (account.email, account.email.rpartition("@")[2]):
        try:
            found = client.get_email_identity(EmailIdentity=identity)
        except boto.ClientError as error:
            if error.response.get("Error", {}).get("Code") == "NotFoundException":
                continue
            return False, f"{label}: {error.response.get('Error', {}).get('Code')}: {_first_line(error)}"
        except (boto.BotoCoreError, OSError) as error:
            return False, f"{label}: {type(error).__name__}: {error}"
        verified = found.get("VerifiedForSendingStatus") or found.get("VerificationStatus") == "SUCCESS"
        where = account.esp_region or client.meta.region_name
        if verified:
            return True, f"{label} ({where}): {identity} is verified for sending"
        return False, f"{label} ({where}): {identity} is not verified yet ({found.get('VerificationStatus')})"
    return False, f"{label}: neither {account.email} nor its domain is a verified identity"
