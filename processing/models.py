"""Inbound mail: the mailboxes we read, the messages they received (stored once, with their raw MIME), the one
classification result each message gets, and the webhook deliveries already seen.

Constraints carry the exactly-once contract: one message per (mailbox, provider message id), one result per
message, one receipt per webhook id; the cursor only moves forward (services/sync.py advances it with a
conditional UPDATE).
"""

from django.db import models
from django.db.models import Q

from emailsys.crypto import EncryptedTextField
from emailsys.fields import LowerCaseEmailField


class Mailbox(models.Model):
    """A provider mailbox we are subscribed to. `last_history_id` is the forward-only cursor: every history entry
    up to it has been stored. `wanted_history_id` is the highest id a notification announced (coalesced)."""

    class Provider(models.TextChoices):
        SIMULATOR = "simulator", "Simulator (FakeMail)"
        IMAP = "imap", "IMAP (a sender account's mailbox)"

    address = LowerCaseEmailField(unique=True)
    provider = models.CharField(max_length=20, choices=Provider.choices, default=Provider.SIMULATOR)
    # The provider's API base URL ("" = the INBOUND_PROVIDER_URL setting).
    provider_url = models.URLField(blank=True, default="")
    # Standard Webhooks secret ("whsec_" + base64) the provider signs this mailbox's notifications with.
    webhook_secret = EncryptedTextField(blank=True, default="")
    enabled = models.BooleanField(default=True)
    last_history_id = models.BigIntegerField(null=True, blank=True)  # None: never synced (a full sync comes first)
    wanted_history_id = models.BigIntegerField(default=0)
    provider_history_id = models.BigIntegerField(default=0)  # the provider's current id at the last sync (lag)
    # One sync at a time per mailbox (across hosts): a lease taken by a conditional UPDATE.
    sync_lease_owner = models.CharField(max_length=100, blank=True, default="")
    sync_lease_until = models.DateTimeField(null=True, blank=True)
    # The history entry that keeps failing, and how often it failed; skipped (with a warning) at 3.
    poison_history_id = models.BigIntegerField(null=True, blank=True)
    poison_attempts = models.PositiveSmallIntegerField(default=0)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    last_warning = models.TextField(blank=True, default="")
    last_warning_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "mailboxes"
        permissions = [("sync_mailbox", "Can sync a mailbox and reconnect its webhook")]
        constraints = [
            models.CheckConstraint(
                condition=Q(last_history_id__gte=0) | Q(last_history_id__isnull=True),
                name="mailbox_cursor_not_negative",
            ),  # fmt: skip
        ]

    def __str__(self) -> str:
        return self.address


class InboundEmail(models.Model):
    """One message of one mailbox, as the provider delivered it. `email_id` is the provider's message id (the
    seed's `email_id`, unique across mailboxes for the simulator); the raw MIME is the truth, the parsed columns
    are for lists and filters."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        CLASSIFIED = "classified"
        FAILED = "failed"

    class Source(models.TextChoices):
        WEBHOOK = "webhook"  # a notification led to it: fresh mail, the high-priority queue
        BACKFILL = "backfill"  # full sync, resync after expiry, fallback sync: the low-priority queue

    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="emails")
    email_id = models.CharField(max_length=200)
    history_id = models.BigIntegerField()
    raw = models.BinaryField()
    message_id = models.CharField(max_length=998, blank=True, default="")  # the Message-ID header, without <>
    in_reply_to = models.CharField(max_length=998, blank=True, default="")
    references = models.TextField(blank=True, default="")
    sender = models.CharField(max_length=998, blank=True, default="")  # the From address, lower-case
    sender_name = models.CharField(max_length=998, blank=True, default="")
    recipients = models.JSONField(default=list, blank=True)  # To and Cc addresses
    subject = models.TextField(blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)  # the Date header, when it parses
    received_at = models.DateTimeField()  # the provider's internal date
    size_bytes = models.PositiveIntegerField(default=0)
    parse_error = models.TextField(blank=True, default="")  # why the parsed columns are partial, if they are
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.WEBHOOK)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)  # when we stored it (webhook-to-result latency)

    class Meta:
        permissions = [("classify_inboundemail", "Can re-classify inbound emails")]
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "email_id"], name="one_email_per_mailbox_provider_id"),
        ]
        indexes = [
            models.Index(fields=["email_id"]),
            models.Index(fields=["-received_at"]),
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["sender"]),
        ]

    def __str__(self) -> str:
        return f"{self.subject or '(no subject)'} from {self.sender or '?'}"


class EmailResult(models.Model):
    """The classification of one message: exactly one per message (a redelivered or concurrent classification
    inserts nothing). A manual re-classify replaces it in one transaction (services/classify.py)."""

    class Classification(models.TextChoices):
        MEETING = "meeting"
        PROMOTION = "promotion"
        INTRO = "intro"
        REPLY = "reply"
        AUTO_REPLY = "auto_reply"
        BOUNCE = "bounce"
        UNKNOWN = "unknown"

    email = models.OneToOneField(InboundEmail, on_delete=models.CASCADE, related_name="result")
    classification = models.CharField(max_length=12, choices=Classification.choices)
    confidence = models.FloatField()
    processor_id = models.CharField(max_length=200)  # "<worker node>/<classifier name>@<model version>"
    model_version = models.CharField(max_length=100)
    processing_time_ms = models.FloatField()
    processed_at = models.DateTimeField()
    # What decided it: {"rule": "text/calendar METHOD=REQUEST"} or {"model": {"meeting": 0.81, ...}}, per classifier.
    signals = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(confidence__gte=0) & Q(confidence__lte=1), name="result_confidence_in_0_1"
            ),  # fmt: skip
        ]
        indexes = [models.Index(fields=["classification", "-processed_at"])]

    def __str__(self) -> str:
        return f"{self.classification} ({self.confidence:.2f})"


class WebhookReceipt(models.Model):
    """A provider notification we accepted, by its `webhook-id`: a second delivery of the same id does nothing."""

    webhook_id = models.CharField(max_length=200, unique=True)
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="webhook_receipts")
    history_id = models.BigIntegerField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["received_at"])]

    def __str__(self) -> str:
        return self.webhook_id


class ImapAccount(models.Model):
    """A sender account's mailbox read over IMAP, and where reading it got to. The password is bound to its
    destination as SMTP's is (#7): an edit of host, port, security or username that does not enter it again clears
    it (services/imap.py `imap_settings_bind`). Its messages are InboundEmails of `mailbox` (provider "imap"),
    email_id "<uidvalidity>:<uid>".

    The cursor is (`state_folder`, `uidvalidity`, `last_uid`): every message of that folder up to `last_uid` in that
    UIDVALIDITY is stored. `last_uid` only moves forward within one UIDVALIDITY (a conditional UPDATE); a new
    UIDVALIDITY (or folder) starts it again at 0, and the messages up to `resync_until_uid` are then checked
    against what the mailbox stored already, by Message-ID (or the raw bytes), so nothing is processed twice."""

    class Security(models.TextChoices):
        TLS = "tls", "Implicit TLS (IMAPS)"
        STARTTLS = "starttls", "STARTTLS"
        NONE = "none", "None (loopback only)"

    sender_account = models.OneToOneField(
        "campaigns.SenderAccount", on_delete=models.CASCADE, related_name="imap_settings"
    )
    mailbox = models.OneToOneField(Mailbox, on_delete=models.PROTECT, related_name="imap_account")
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=993)
    security = models.CharField(max_length=10, choices=Security.choices, default=Security.TLS)
    username = models.CharField(max_length=255)
    password = EncryptedTextField(blank=True, default="")
    folder = models.CharField(max_length=255, default="INBOX")
    enabled = models.BooleanField(default=True)
    # The cursor (see above). state_folder "" and uidvalidity None: never polled.
    state_folder = models.CharField(max_length=255, blank=True, default="")
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    last_uid = models.BigIntegerField(default=0)
    resync_until_uid = models.BigIntegerField(default=0)  # messages up to it are deduplicated by Message-ID
    has_idle = models.BooleanField(null=True, blank=True)  # CAPABILITY IDLE at the last connection (None: unknown)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "IMAP settings"
        verbose_name_plural = "IMAP settings"
        permissions = [("poll_imapaccount", "Can poll an IMAP mailbox and test its connection")]
        constraints = [
            models.CheckConstraint(condition=Q(port__gte=1) & Q(port__lte=65535), name="imap_port_valid"),
            models.CheckConstraint(condition=Q(last_uid__gte=0), name="imap_last_uid_not_negative"),
            models.CheckConstraint(condition=Q(resync_until_uid__gte=0), name="imap_resync_until_not_negative"),
            models.CheckConstraint(
                condition=Q(uidvalidity__isnull=True) | Q(uidvalidity__gt=0), name="imap_uidvalidity_positive"
            ),  # fmt: skip
            # No cursor without the UIDVALIDITY it belongs to.
            models.CheckConstraint(
                condition=Q(uidvalidity__isnull=False) | Q(last_uid=0), name="imap_last_uid_needs_uidvalidity"
            ),  # fmt: skip
        ]

    def __str__(self) -> str:
        return f"{self.username}@{self.host}:{self.port}/{self.folder}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from processing.services.imap import imap_settings_errors

        errors = imap_settings_errors(self)
        if errors:
            raise ValidationError(errors)
