"""POST /webhook: the provider's notifications, signed per Standard Webhooks (https://www.standardwebhooks.com/:
HMAC-SHA256 over "<webhook-id>.<webhook-timestamp>.<body>" with the mailbox's secret, a timestamp within ±5
minutes). It only checks, records and enqueues (processing.services.sync.mailbox_notify), so it answers within a
few milliseconds and a provider never times out on us; the inbound pool does the work.

Answers (JSON, never a 500): 202 accepted, 200 duplicate webhook id (nothing new happens), 400 malformed body,
401 unsigned / bad signature / stale timestamp / unknown mailbox, 405 not POST, 413 body over
INBOUND_WEBHOOK_MAX_BYTES.
"""

import json
import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from standardwebhooks.webhooks import Webhook

from emailsys.db import fetch_prepared
from processing.metrics import inbound_count
from processing.models import Mailbox, WebhookReceipt
from processing.services.sync import mailbox_notify

logger = logging.getLogger(__name__)

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
MAX_WEBHOOK_ID_LENGTH = WebhookReceipt._meta.get_field("webhook_id").max_length or 200
MAX_ADDRESS_LENGTH = Mailbox._meta.get_field("address").max_length or 254
HISTORY_ID_MAX = 2**63 - 1


class WebhookRefused(Exception):
    def __init__(self, status: int, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.outcome, self.detail = status, outcome, detail


@csrf_exempt
@never_cache
def webhook_receive(request: HttpRequest) -> JsonResponse:
    try:
        status, outcome, body = _receive(request)
    except WebhookRefused as refused:
        status, outcome, body = refused.status, refused.outcome, {"detail": refused.detail}
    inbound_count("webhook", label=outcome)
    response = JsonResponse(body, status=status)
    if status == 405:
        response["Allow"] = "POST"
    return response


def _receive(request: HttpRequest) -> tuple[int, str, dict]:
    if request.method != "POST":
        raise WebhookRefused(405, "not_allowed", "Use POST.")
    body = _body(request)
    headers = {name: request.headers.get(name, "") for name in SIGNATURE_HEADERS}
    missing = [name for name, value in headers.items() if not value]
    if missing:
        raise WebhookRefused(401, "unsigned", f"Missing signature header(s): {', '.join(missing)}.")
    address, history_id = _notification(body)
    mailbox = _mailbox_with_secret(address)
    if mailbox is None:
        raise WebhookRefused(401, "unknown_mailbox", f"No connected mailbox {address!r}: cannot verify.")
    _verify(mailbox, body, headers)
    webhook_id = headers["webhook-id"]
    if len(webhook_id) > MAX_WEBHOOK_ID_LENGTH:
        raise WebhookRefused(400, "malformed", f"webhook-id is longer than {MAX_WEBHOOK_ID_LENGTH} characters.")
    if not mailbox_notify(mailbox=mailbox, history_id=history_id, webhook_id=webhook_id):
        return 200, "duplicate", {"status": "duplicate", "detail": "This webhook id was received before."}
    return 202, "accepted", {"status": "accepted", "history_id": history_id}


def _mailbox_with_secret(address: str) -> Mailbox | None:
    """The enabled mailbox of that address with its (decrypted) secret, or None: one prepared query for the id and
    the secret (the ORM's query compilation cost more CPU than the rest of the webhook). The instance carries only
    pk, address and secret: all that verifying and mailbox_notify read."""
    secret_field = Mailbox._meta.get_field("webhook_secret")
    table, quote = Mailbox._meta.db_table, connection.ops.quote_name
    rows = fetch_prepared(
        f"SELECT id, {quote(secret_field.column)} FROM {quote(table)} WHERE address = %s AND enabled",  # noqa: S608 - names from the model
        [address],
    )
    if not rows:
        return None
    pk, stored = rows[0]
    secret = secret_field.from_db_value(stored, None, connection)
    return Mailbox(pk=pk, address=address, webhook_secret=secret) if secret else None


def _body(request: HttpRequest) -> bytes:
    limit = settings.INBOUND_WEBHOOK_MAX_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise WebhookRefused(413, "too_large", f"The body is larger than {limit} bytes.")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise WebhookRefused(413, "too_large", f"The body is larger than {limit} bytes.")
    return body


def _notification(body: bytes) -> tuple[str, int]:
    """The mailbox address and history id the body announces; 400 for anything else."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise WebhookRefused(400, "malformed", f"The body is not JSON (UTF-8): {error}.") from None
    if not isinstance(data, dict):
        raise WebhookRefused(400, "malformed", "The body must be a JSON object.")
    address, history_id = data.get("email_address"), data.get("history_id")
    if not isinstance(address, str) or not address.strip() or len(address) > MAX_ADDRESS_LENGTH:
        raise WebhookRefused(400, "malformed", '"email_address" must be the mailbox\'s address (a string).')
    if isinstance(history_id, bool) or not isinstance(history_id, int) or not 0 < history_id <= HISTORY_ID_MAX:
        raise WebhookRefused(400, "malformed", '"history_id" must be a positive integer.')
    return address.strip().lower(), history_id


def _verify(mailbox: Mailbox, body: bytes, headers: dict[str, str]) -> None:
    try:
        Webhook(mailbox.webhook_secret).verify(body, headers, json_parse=False)
    except Exception as error:  # noqa: BLE001 - the library raises ValueError/binascii.Error on garbage too
        message = str(error)
        if "timestamp" in message.lower() and "too" in message.lower():
            raise WebhookRefused(401, "stale_timestamp", "The webhook-timestamp is more than 5 minutes off.") from None
        logger.info("webhook for %s refused: %s", mailbox.address, type(error).__name__)
        raise WebhookRefused(401, "bad_signature", "The signature does not match.") from None
