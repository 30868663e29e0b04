"""Campaigns: sequences of steps sent to multi-recipient leads through throttled sender accounts.

The rows are the truth; tasks move state machines by claiming transitions atomically. Constraints make the
wrong states impossible: one send record per (recipient, step), one usage row per (account, day).
"""

import uuid
import zoneinfo

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce, Lower

from campaigns.validators import account_destination_errors
from emailsys.crypto import EncryptedTextField
from emailsys.fields import LowerCaseEmailField


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known time zone (e.g. Europe/Berlin, America/New_York).")


def validate_weekdays(value: list) -> None:
    if not isinstance(value, list) or any(day not in range(7) for day in value) or len(set(value)) != len(value):
        raise ValidationError("Send days are a list of distinct weekdays, 0 = Monday … 6 = Sunday.")


class EmailTemplate(models.Model):
    """Jinja2 source for subject, text and HTML bodies (rendered in a sandbox)."""

    name = models.CharField(max_length=200, unique=True)
    subject = models.CharField(max_length=500)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(body_text="", body_html=""), name="template_has_a_body"),
        ]

    def __str__(self) -> str:
        return self.name


class SenderAccount(models.Model):
    """A mailbox we send from: over SMTP, or through an ESP's API (django-anymail). Limits hold across all
    campaigns; "today" is in the account's time zone. Secrets (SMTP password, ESP secret) are encrypted at rest
    and never shown back."""

    class Transport(models.TextChoices):
        SMTP = "smtp", "SMTP"
        ESP = "esp", "ESP API (django-anymail)"

    class Esp(models.TextChoices):
        AMAZON_SES = "amazon_ses", "Amazon SES"
        MANDRILL = "mandrill", "Mailchimp Transactional (Mandrill)"
        POSTMARK = "postmark", "Postmark"
        SENDGRID = "sendgrid", "SendGrid"

    class Security(models.TextChoices):
        STARTTLS = "starttls", "STARTTLS"
        TLS = "tls", "Implicit TLS"
        NONE = "none", "None (local relays only)"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        DISABLED = "disabled", "Disabled"

    email = models.EmailField(unique=True)
    from_name = models.CharField(max_length=200, blank=True)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    transport = models.CharField(max_length=10, choices=Transport.choices, default=Transport.SMTP)
    smtp_host = models.CharField(max_length=255, blank=True, help_text="Required for an SMTP account.")
    smtp_port = models.PositiveIntegerField(default=587)
    smtp_username = models.CharField(max_length=255, blank=True)
    smtp_password = EncryptedTextField(blank=True)
    security = models.CharField(max_length=10, choices=Security.choices, default=Security.STARTTLS)
    esp_name = models.CharField(
        max_length=30, choices=Esp.choices, blank=True, help_text="Required for an ESP account."
    )
    esp_key_id = models.CharField(
        max_length=255, blank=True, help_text="Amazon SES: the access key id. Empty: boto3's usual credential chain."
    )
    esp_secret = EncryptedTextField(blank=True, help_text="Amazon SES: the secret access key; others: the API key.")
    esp_region = models.CharField(max_length=30, blank=True, help_text="Amazon SES region, e.g. eu-west-1.")
    esp_endpoint_url = models.URLField(
        blank=True, help_text="Another API endpoint (a local test server); empty: the ESP's."
    )
    esp_configuration_set = models.CharField(max_length=64, blank=True, help_text="Amazon SES configuration set.")
    signature = models.TextField(blank=True)
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    daily_limit = models.PositiveIntegerField(default=50)
    min_wait_seconds = models.PositiveIntegerField(default=240, help_text="Seconds between two sends.")
    jitter_seconds = models.PositiveIntegerField(default=0, help_text="Random extra wait, 0…this many seconds.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    status_reason = models.TextField(blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    # Arbiter state, moved only under this row's lock.
    last_reserved_at = models.DateTimeField(null=True, blank=True)
    next_available_at = models.DateTimeField(null=True, blank=True)
    busy_until = models.DateTimeField(null=True, blank=True, help_text="A send holds the account until then.")
    live_version = models.PositiveBigIntegerField(
        default=0, editable=False, help_text="Incremented with each live change (emailsys.live): pages keep the newest."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [
            ("operate_senderaccount", "Can pause, resume and disable sender accounts and reset their limits"),
            ("test_senderaccount", "Can test a sender account's login"),
        ]
        indexes = [models.Index(fields=["status", "last_reserved_at"])]
        constraints = [
            models.CheckConstraint(
                condition=(Q(transport="smtp") & ~Q(smtp_host="")) | (Q(transport="esp") & ~Q(esp_name="")),
                name="account_transport_is_configured",
                violation_error_message="An SMTP account needs a host; an ESP account needs its ESP.",
            ),
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        """The constraint's rule, said on the field that is missing; then where its secrets may go (plaintext
        AUTH, ESP endpoints: `campaigns.validators`, which the sending path checks again)."""
        if self.transport == self.Transport.SMTP and not self.smtp_host:
            raise ValidationError({"smtp_host": "An SMTP account needs a host."})
        if self.transport == self.Transport.ESP and not self.esp_name:
            raise ValidationError({"esp_name": "An ESP account needs its ESP."})
        errors = account_destination_errors(self)
        if errors:
            raise ValidationError(errors)

    @property
    def sender_name(self) -> str:
        return self.from_name or " ".join(filter(None, [self.first_name, self.last_name])) or self.email


class AccountDailyUsage(models.Model):
    """Sends reserved per account per local day: the counter the daily limit is checked against."""

    account = models.ForeignKey(SenderAccount, on_delete=models.CASCADE, related_name="daily_usage")
    day = models.DateField()
    reserved = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "day"], name="one_usage_row_per_account_day")]

    def __str__(self) -> str:
        return f"{self.account.email} on {self.day}: {self.reserved} reserved"


class ReservationHold(models.Model):
    """Sends a reservation counted against an account's day (`AccountDailyUsage.reserved`) whose send rows do
    not exist yet. Written in the reservation's transaction; each send row claimed takes one off `outstanding`
    in its own transaction (and renews `expires_at`), and a send given up before its row was claimed takes one
    off as it gives the count back. A worker killed in between leaves the rest outstanding: once `expires_at`
    passes, the arbiter deletes the row and gives that many back (`throttling`). The conditional update or the
    delete, whichever comes first, decides: no count is given back twice, none used without a hold."""

    account = models.ForeignKey(SenderAccount, on_delete=models.CASCADE, related_name="reservation_holds")
    campaign_account = models.ForeignKey(
        "CampaignAccount", null=True, blank=True, on_delete=models.CASCADE, related_name="reservation_holds"
    )  # the campaign's own count also given back; None for an event mailing
    day = models.DateField()
    outstanding = models.PositiveIntegerField()
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["account", "expires_at"], name="hold_account_expiry")]

    def __str__(self) -> str:
        return f"{self.account_id} {self.day}: {self.outstanding} until {self.expires_at:%H:%M:%S}"


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"

    class SenderPolicy(models.TextChoices):
        STICKY = "sticky", "Sticky: a lead's first sender sends all its steps"
        ROTATE = "rotate", "Rotate: each unthreaded step goes to the next account with room"

    name = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    batch_size = models.PositiveIntegerField(default=20, validators=[MinValueValidator(1)])
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    send_days = models.JSONField(default=list, blank=True, validators=[validate_weekdays],
                                 help_text="Weekdays to send on, 0 = Monday; empty: every day.")  # fmt: skip
    send_hour_start = models.PositiveSmallIntegerField(null=True, blank=True)
    send_hour_end = models.PositiveSmallIntegerField(null=True, blank=True)
    accounts = models.ManyToManyField(SenderAccount, through="CampaignAccount", related_name="campaigns")
    sender_policy = models.CharField(
        max_length=10,
        choices=SenderPolicy.choices,
        default=SenderPolicy.STICKY,
        help_text="Sticky: one conversation per lead, from one mailbox. A threaded step never rotates.",
    )
    stop_on_reply = models.BooleanField(
        default=True, help_text="A reply from any recipient of a lead stops the whole lead."
    )
    stop_on_domain_reply = models.BooleanField(
        default=False,
        help_text="A reply from anyone at a lead's domain (not a free-mail domain) stops the lead, even from an "
        "address we never wrote to.",
    )
    live_version = models.PositiveBigIntegerField(
        default=0, editable=False, help_text="Incremented with each live change (emailsys.live): pages keep the newest."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [
            ("run_campaign", "Can activate, pause and resume campaigns, dry-run and reset their progress"),
            ("send_test_campaign", "Can send test emails of a campaign's steps"),
            ("import_campaign", "Can import campaigns and their leads"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(sender_policy__in=["sticky", "rotate"]), name="campaign_sender_policy_known"
            ),
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(starts_at__isnull=True) | Q(ends_at__gt=models.F("starts_at")),
                name="campaign_ends_after_it_starts",
            ),
            models.CheckConstraint(
                condition=(Q(send_hour_start__isnull=True) & Q(send_hour_end__isnull=True))
                | (
                    Q(send_hour_start__lte=23)
                    & Q(send_hour_end__gte=1)
                    & Q(send_hour_end__lte=24)
                    & Q(send_hour_end__gt=models.F("send_hour_start"))
                ),
                name="campaign_send_hours_are_a_window",
            ),  # fmt: skip
        ]

    def __str__(self) -> str:
        return self.name


class CampaignAccount(models.Model):
    """An account used by a campaign, with this campaign's own (tighter) limits."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="account_settings")
    account = models.ForeignKey(SenderAccount, on_delete=models.CASCADE, related_name="campaign_settings")
    daily_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the account's limit.")
    min_wait_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the account's wait.")
    # Sends reserved today for this campaign (day in the account's time zone), moved under the account's lock.
    usage_day = models.DateField(null=True, blank=True)
    usage_reserved = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "account"], name="one_setting_per_campaign_account")]

    def __str__(self) -> str:
        return f"{self.account.email} via {self.campaign.name}"


class SequenceStep(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="steps")
    order = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    delay_seconds = models.PositiveIntegerField(default=0, help_text="Wait after the previous step.")
    template = models.ForeignKey(EmailTemplate, on_delete=models.PROTECT, related_name="steps")
    threaded = models.BooleanField(default=False, help_text="Send as a reply (Re:) to this recipient's previous email.")

    class Meta:
        ordering = ["campaign", "order"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "order"], name="one_step_per_order"),
            models.CheckConstraint(condition=Q(order__gte=1), name="step_order_from_one"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign.name}, step {self.order}"

    def clean(self) -> None:
        """A placeholder subject ("-") means "Re: the previous email": only a threaded step after the first has one."""
        cached = SequenceStep.template.is_cached(self)  # an import's template may not be saved yet
        template = (
            self._state.fields_cache.get("template")  # None: a form refused the template (its error is shown)
            if cached
            else EmailTemplate.objects.filter(id=self.template_id).first()
        )
        if template is None or any(character.isalnum() for character in template.subject):
            return
        if not self.threaded or (self.order or 0) <= 1:
            raise ValidationError(
                {"template": f"Its subject {template.subject!r} is a placeholder: only a threaded step after the "
                             "first may have one (it replies with “Re:” the previous subject). Give it a real subject."}
            )  # fmt: skip


class Lead(models.Model):
    """A company or person we write to, with one or more recipients and its progress through the steps."""

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        FINISHED = "finished", "Finished"
        STOPPED = "stopped", "Stopped"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="leads")
    external_id = models.CharField(max_length=200, blank=True, help_text="Your id, for imports.")
    custom_fields = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.IN_PROGRESS)
    stop_reason = models.TextField(blank=True)
    current_step = models.PositiveIntegerField(default=1)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    next_due_at = models.DateTimeField(null=True, blank=True)
    # When the current step first became due: the dispatcher's order (a lead that waited keeps its place) and the
    # batch's guard (no step before its delay, whatever the broker redelivers). Empty: due since next_due_at.
    step_due_at = models.DateTimeField(null=True, blank=True)
    # The dispatcher's current claim: only a batch carrying this token may act on the lead; it clears it.
    claim_token = models.UUIDField(null=True, blank=True)
    sender_account = models.ForeignKey(
        SenderAccount,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The account that sent the lead's first email; it sends the lead's later steps.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [("operate_lead", "Can stop leads, reset their progress and mark replies")]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "external_id"], condition=~Q(external_id=""), name="one_lead_per_external_id"
            ),
        ]
        indexes = [
            # The dispatcher's scan: finished and stopped leads leave this index, so its cost follows due work.
            models.Index(fields=["next_due_at"], condition=Q(state="in_progress"), name="lead_due_in_progress"),
            # Its order (longest waiting first): with a large backlog the claim reads this in order and stops at
            # its limit instead of sorting every due lead.
            models.Index(
                Coalesce("step_due_at", "next_due_at"), "id", condition=Q(state="in_progress"), name="lead_due_order"
            ),
        ]

    def __str__(self) -> str:
        """ "Acme (lead 12, Spring outreach)": the first recipient's company, name or address, else the external
        id (one query for the first recipient unless they are prefetched)."""
        label = self.external_id
        if self.pk:
            first = (
                min(self.recipients.all(), key=lambda r: r.position, default=None)
                if ("recipients" in getattr(self, "_prefetched_objects_cache", {}))
                else self.recipients.order_by("position").first()
            )
            if first is not None:
                label = first.company_name or first.display_name or first.email
        where = f"lead {self.pk}, {self.campaign.name}" if self.pk else self.campaign.name
        return f"{label} ({where})" if label else where


class Recipient(models.Model):
    class Status(models.TextChoices):
        NOT_CONTACTED = "not_contacted", "Not contacted"
        CONTACTED = "contacted", "Contacted"
        REPLIED = "replied", "Replied"
        BOUNCED = "bounced", "Bounced"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"

    # The statuses that still get a sequence's next step; replied, bounced and unsubscribed get nothing more.
    MAILABLE_STATUSES = (Status.NOT_CONTACTED, Status.CONTACTED)

    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="recipients")
    position = models.PositiveIntegerField(help_text="Order within the lead, from 0.")
    email = LowerCaseEmailField(help_text="Stored lower-case.")
    name = models.CharField(max_length=200, blank=True)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    company_name = models.CharField(max_length=200, blank=True)
    website = models.CharField(max_length=300, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.NOT_CONTACTED)
    last_contacted_at = models.DateTimeField(null=True, blank=True)
    last_step = models.PositiveIntegerField(null=True, blank=True)
    unsubscribe_token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["lead", "position"]
        # Inbound mail finds the recipient who wrote to us by address (a reply without our Message-ID).
        indexes = [models.Index(fields=["email"], name="recipient_email")]
        constraints = [
            models.UniqueConstraint(fields=["lead", "position"], name="one_recipient_per_position"),
            models.UniqueConstraint(fields=["lead", "email"], name="one_recipient_per_email_per_lead"),
            models.CheckConstraint(
                condition=Q(email=Lower("email")),
                name="recipient_email_lowercase",
                violation_error_message="The email must be lower-case.",
            ),
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def display_name(self) -> str:
        """The name on the To: line: the one given, or the first and last names."""
        return self.name or " ".join(filter(None, [self.first_name, self.last_name]))


class SendAttempt(models.Model):
    """What every sent email records, a campaign's (SendRecord) or an event mailing's (MailingSend): the
    exactly-once protocol's state, claim and verdict, and a copy of what was sent.

    CLAIMED → (after the 354 reply to DATA, before the content) HANDED_OVER → SENT on the final 250.
    A crash before HANDED_OVER is known not to have delivered; after it, the outcome is UNKNOWN.
    """

    class State(models.TextChoices):
        CLAIMED = "claimed", "Claimed"
        HANDED_OVER = "handed_over", "Handed over (awaiting reply)"
        SENT = "sent", "Sent"
        DEFERRED = "deferred", "Deferred (will retry)"
        FAILED = "failed", "Failed"
        BOUNCED = "bounced", "Bounced"
        SKIPPED = "skipped", "Skipped"
        UNKNOWN = "unknown", "Unknown outcome"

    FINAL_STATES = (State.SENT, State.FAILED, State.BOUNCED, State.SKIPPED, State.UNKNOWN)

    state = models.CharField(max_length=12, choices=State.choices, default=State.CLAIMED)
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    message_id = models.CharField(max_length=300, blank=True)
    provider_message_id = models.CharField(
        max_length=300, blank=True, help_text="The ESP's id for the sent message (an ESP assigns its own)."
    )
    subject = models.TextField(blank=True)
    message = models.TextField(blank=True, help_text="The exact MIME message handed to SMTP.")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    handed_over_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True, help_text="Who resolved an unknown outcome.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        # A concrete model's own `constraints` replace these: it lists `*SendAttempt.Meta.constraints` first.
        constraints = [
            # A claim (token and lease) is held exactly while the record is in flight: a settled or deferred
            # record holds none, so a lost worker's stale claim can never be taken for a live one.
            models.CheckConstraint(
                condition=(
                    Q(state__in=["claimed", "handed_over"]) & Q(claim_token__isnull=False, claimed_until__isnull=False)
                )
                | (~Q(state__in=["claimed", "handed_over"]) & Q(claim_token__isnull=True, claimed_until__isnull=True)),
                name="%(app_label)s_%(class)s_claimed_while_in_flight",
                violation_error_message="A claimed or handed-over send has a claim token and lease; others have none.",
            ),
            # When the content may have left: what `mark sent` records as the time sent.
            models.CheckConstraint(
                condition=~Q(state="handed_over") | Q(handed_over_at__isnull=False),
                name="%(app_label)s_%(class)s_handed_over_has_time",
                violation_error_message="A handed-over send has the time it was handed over.",
            ),
        ]


class SendRecord(SendAttempt):
    """One email to one recipient for one step: claimed and committed before SMTP, so it is sent at most once."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="send_records")
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="send_records")
    # Each send writes its record three times: no index that another one already covers
    # (recipient: one_send_per_recipient_step; account: the (account, sent_at) index).
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="send_records", db_index=False)
    step = models.ForeignKey(SequenceStep, on_delete=models.PROTECT, related_name="send_records")
    account = models.ForeignKey(
        SenderAccount, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )

    class Meta(SendAttempt.Meta):
        permissions = [("resolve_sendrecord", "Can resolve send records whose outcome is unknown")]
        constraints = [
            *SendAttempt.Meta.constraints,
            models.UniqueConstraint(fields=["recipient", "step"], name="one_send_per_recipient_step"),
            models.CheckConstraint(
                condition=~Q(state="sent") | (Q(sent_at__isnull=False) & ~Q(message_id="")), name="sent_has_proof"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "claimed_until"], name="send_in_flight",
                         condition=Q(state__in=["claimed", "handed_over"])),
            models.Index(fields=["state"], name="send_unknown", condition=Q(state="unknown")),
            models.Index(fields=["account", "sent_at"]),
            # Inbound mail: a reply's In-Reply-To/References and a bounce's quoted headers name our Message-ID.
            models.Index(fields=["message_id"], name="send_message_id", condition=~Q(message_id="")),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.recipient.email} via {self.campaign.name}, step {self.step.order} ({self.get_state_display()})"


class DryRunRecord(models.Model):
    """What a real send would have been: rendered and stored, nothing sent, no limit used, nothing advanced."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="dry_runs")
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="dry_runs")
    step = models.ForeignKey(SequenceStep, on_delete=models.CASCADE, related_name="dry_runs")
    account = models.ForeignKey(SenderAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    subject = models.TextField(blank=True)
    message = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"dry run of {self.campaign.name} to {self.recipient.email}"


class OperatorTestSend(models.Model):
    """A step sent to an operator's address; never counts as the recipient's email."""

    step = models.ForeignKey(SequenceStep, on_delete=models.CASCADE, related_name="test_sends")
    account = models.ForeignKey(SenderAccount, on_delete=models.CASCADE, related_name="test_sends")
    to_email = models.EmailField()
    lead = models.ForeignKey(Lead, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    message_id = models.CharField(max_length=300, blank=True)
    subject = models.TextField(blank=True)
    message = models.TextField(blank=True)
    error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"test of {self.step} to {self.to_email}"


class Suppression(models.Model):
    """Never send to this address, or to any address at this domain."""

    class Kind(models.TextChoices):
        ADDRESS = "address", "Address"
        DOMAIN = "domain", "Domain"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    value = models.CharField(max_length=254, help_text="Lower-case address or domain.")
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "value"], name="one_suppression_per_value"),
            models.CheckConstraint(condition=Q(value=models.functions.Lower("value")), name="suppression_lowercase"),
        ]

    def __str__(self) -> str:
        return f"{self.value} ({self.get_kind_display().lower()})"


class Activity(models.Model):
    """Every send, skip, failure and status change, with structured detail."""

    class Kind(models.TextChoices):
        SENT = "sent", "Sent"
        SKIPPED = "skipped", "Skipped"
        DEFERRED = "deferred", "Deferred"
        FAILED = "failed", "Failed"
        BOUNCED = "bounced", "Bounced"
        UNKNOWN = "unknown", "Unknown outcome"
        TEMPLATE_ERROR = "template_error", "Template error"
        STATUS_CHANGED = "status_changed", "Status changed"
        ACCOUNT_PAUSED = "account_paused", "Account paused"
        STEP_COMPLETED = "step_completed", "Step completed"
        DRY_RUN = "dry_run", "Dry run"
        TEST_SENT = "test_sent", "Test sent"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        REPLIED = "replied", "Replied"
        SENDER_CHANGED = "sender_changed", "Sender changed"
        AUTO_REPLIED = "auto_replied", "Auto-reply received"
        SOFT_BOUNCED = "soft_bounced", "Soft bounce"

    created_at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # Indexed with its time by activity_campaign_recent (the campaign page's stream), not on its own.
    campaign = models.ForeignKey(
        Campaign, null=True, blank=True, on_delete=models.CASCADE, related_name="activities", db_index=False
    )
    lead = models.ForeignKey(Lead, null=True, blank=True, on_delete=models.CASCADE, related_name="activities")
    recipient = models.ForeignKey(Recipient, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    account = models.ForeignKey(SenderAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    step_order = models.PositiveIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "activities"
        # Every send writes activity rows: one plain index on kind (db_index would add a second, LIKE one).
        indexes = [
            models.Index(fields=["kind"], name="activity_kind"),
            # A campaign's latest activities (its live page, a few times a second while it sends) without sorting
            # all of them; it serves the campaign's foreign key too, so a send still writes one index for it.
            models.Index(fields=["campaign", "-created_at", "-id"], name="activity_campaign_recent"),
        ]

    def __str__(self) -> str:
        where = f" in {self.campaign.name}" if self.campaign_id else ""
        return f"{self.get_kind_display()}{where} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class BounceRecord(models.Model):
    """One bounced address reported by one inbound message (a DSN or an MTA's own format): hard (5.x.x, the
    address is suppressed) or soft (4.x.x, only counted). Unique per (message, address), so a redelivered or
    re-processed bounce never counts twice; the account's bounce rate counts distinct bounced sends."""

    class Kind(models.TextChoices):
        HARD = "hard", "Hard (permanent)"
        SOFT = "soft", "Soft (temporary)"

    inbound_email = models.ForeignKey("processing.InboundEmail", on_delete=models.CASCADE, related_name="+")
    email = LowerCaseEmailField(help_text="The address that bounced, lower-case.")
    kind = models.CharField(max_length=4, choices=Kind.choices)
    status = models.CharField(max_length=20, blank=True, help_text="The enhanced status code (5.1.1), if given.")
    diagnostic = models.TextField(blank=True)
    # The original send, when the bounce quotes our Message-ID or X-Emailsys-Send (empty: matched by address).
    message_id = models.CharField(max_length=300, blank=True)
    send_record = models.ForeignKey(SendRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    account = models.ForeignKey(SenderAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    original_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["inbound_email", "email"], name="one_bounce_per_message_address"),
            models.CheckConstraint(condition=Q(kind__in=["hard", "soft"]), name="bounce_kind_known"),
        ]
        indexes = [models.Index(fields=["account", "original_sent_at"], name="bounce_account_sent")]

    def __str__(self) -> str:
        return f"{self.kind} bounce of {self.email}"
