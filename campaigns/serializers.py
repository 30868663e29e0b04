"""JSON shapes of the campaigns API, and the validation of what clients send.

Writes check the model's own validators and constraints (`full_clean`) here, so bad input is a 400 with the
field named, never an IntegrityError. SMTP passwords and ESP secrets go in and never come out: `smtp_password`
and `esp_secret` are write-only and responses only say `has_password` / `has_esp_secret`.
"""

from typing import Any

from django.db.models import Q
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from campaigns.models import (
    Activity,
    Campaign,
    EmailTemplate,
    Lead,
    Recipient,
    SenderAccount,
    SendRecord,
    SequenceStep,
    Suppression,
)
from campaigns.services.destinations import SECRET_DESTINATIONS, account_secrets_bind
from campaigns.services.leads import leads_create
from campaigns.services.steps import step_create, step_update
from campaigns.services.suppressions import suppression_parse
from campaigns.services.templating import template_check
from emailsys.api import ModelCleanMixin
from emailsys.apijson import StorableJSONMixin

MAX_BULK_LEADS = 1000


# --- templates ---------------------------------------------------------------------------------------------


class EmailTemplateSerializer(ModelCleanMixin, serializers.ModelSerializer):
    """A template is checked before it is saved (`template_check`: syntax, unknown filters and tests, a render
    with sample values within the budget): one that cannot render is a 400 naming the field."""

    class Meta:
        model = EmailTemplate
        fields = ["id", "name", "subject", "body_text", "body_html", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        parts = ("subject", "body_text", "body_html")
        template = EmailTemplate(**{name: attrs.get(name, getattr(self.instance, name, "")) for name in parts})
        errors = template_check(template)
        if errors:
            raise serializers.ValidationError(errors)
        self._check_placeholder_steps(template.subject)
        return attrs

    def _check_placeholder_steps(self, subject: str) -> None:
        """A placeholder subject ("-": "Re:" the previous one) only suits threaded steps after the first
        (`SequenceStep.clean`): a template steps use does not become one under the others."""
        if self.instance is None or any(character.isalnum() for character in subject):
            return
        unfit = self.instance.steps.filter(Q(threaded=False) | Q(order__lte=1)).select_related("campaign")
        names = [f"{step.campaign.name!r} step {step.order}" for step in unfit[:5]]
        if names:
            raise serializers.ValidationError(
                {"subject": f"{subject!r} is a placeholder, and steps that are first or not threaded use this "
                            f"template: {', '.join(names)}. Give it a real subject."}
            )  # fmt: skip


# --- campaigns ---------------------------------------------------------------------------------------------


class CampaignSerializer(StorableJSONMixin, ModelCleanMixin, serializers.ModelSerializer):
    """Status changes go through /pause/ and /resume/ (they are checked and logged), so it is read-only here."""

    step_count = serializers.IntegerField(read_only=True)
    account_count = serializers.IntegerField(read_only=True)
    lead_count = serializers.IntegerField(read_only=True)
    in_progress_count = serializers.IntegerField(read_only=True, source="leads_in_progress")
    sent_today = serializers.IntegerField(read_only=True, help_text="since midnight in the campaign's time zone")
    unknown_count = serializers.IntegerField(read_only=True, help_text="sends whose outcome an operator must decide")

    class Meta:
        model = Campaign
        fields = [
            "id", "name", "status", "starts_at", "ends_at", "batch_size", "time_zone", "send_days",
            "send_hour_start", "send_hour_end", "sender_policy", "stop_on_reply", "stop_on_domain_reply",
            "step_count", "account_count", "lead_count", "in_progress_count",
            "sent_today", "unknown_count", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["status", "created_at", "updated_at"]


class CampaignStatusSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class LeadCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    in_progress = serializers.IntegerField()
    finished = serializers.IntegerField()
    stopped = serializers.IntegerField()


class CampaignProgressSerializer(serializers.Serializer):
    """`campaign_progress` as JSON; `leads_by_step` is keyed by step order (as a string, JSON keys are)."""

    campaign = serializers.IntegerField(source="campaign.id")
    status = serializers.CharField(source="campaign.status")
    leads = LeadCountsSerializer()
    leads_by_step = serializers.DictField(child=serializers.IntegerField())
    recipients = serializers.DictField(child=serializers.IntegerField(), help_text="Recipients by status.")
    send_records = serializers.DictField(child=serializers.IntegerField(), help_text="Send records by state.")
    sent_today = serializers.IntegerField(help_text="Sent since midnight in the campaign's time zone.")


# --- sequence steps ----------------------------------------------------------------------------------------


class SequenceStepSerializer(ModelCleanMixin, serializers.ModelSerializer):
    """A campaign's step, written through `campaigns.services.steps` (the campaign's state decides what may
    change: a refusal is a 409). Input errors — an order taken, a placeholder subject on a first or unthreaded
    step — are a 400 by field."""

    template_name = serializers.CharField(source="template.name", read_only=True)

    class Meta:
        model = SequenceStep
        fields = ["id", "campaign", "order", "delay_seconds", "template", "template_name", "threaded"]
        extra_kwargs = {
            "order": {"help_text": "1, 2, … the order steps are sent in; changes only while the campaign is a draft."},
            "delay_seconds": {"help_text": "Seconds to wait after the previous step's last email (0: at once)."},
        }
        validators = []  # (campaign, order) by the model's full_clean, with Django's message

    def create(self, validated_data: dict) -> SequenceStep:
        return step_create(**validated_data)

    def update(self, instance: SequenceStep, validated_data: dict) -> SequenceStep:
        return step_update(step=instance, changes=validated_data)


# --- suppressions ------------------------------------------------------------------------------------------


class SuppressionSerializer(serializers.ModelSerializer):
    """An address or a whole domain no campaign or mailing writes to, normalised by `suppression_parse`
    (lower-case; "@example.com" is the domain). Adding one that exists returns it unchanged (200, not 201): the
    suppression list is a set. Only the reason of a stored one changes; its value never does."""

    value = serializers.CharField(
        max_length=254, help_text="An address (jane@example.com) or a domain (example.com or @example.com)."
    )

    class Meta:
        model = Suppression
        fields = ["id", "kind", "value", "reason", "created_at"]
        read_only_fields = ["kind", "created_at"]
        validators = []  # (kind, value) is a set: `suppression_ensure` returns the existing row

    def validate_value(self, value: str) -> str:
        kind, normalised = suppression_parse(value)  # a Django ValidationError with the reason: a 400 on the field
        if self.instance is not None and (kind, normalised) != (self.instance.kind, self.instance.value):
            raise serializers.ValidationError(
                "A suppression's value does not change: delete this one and add the new value."
            )
        return normalised

    def update(self, instance: Suppression, validated_data: dict) -> Suppression:
        if "reason" in validated_data:
            instance.reason = validated_data["reason"]
            instance.save(update_fields=["reason"])
        return instance


# --- leads -------------------------------------------------------------------------------------------------


class RecipientSerializer(serializers.ModelSerializer):
    """Position is the order in the lead's list; emails are stored lower-case, like the CSV import."""

    class Meta:
        model = Recipient
        fields = [
            "id", "position", "email", "name", "first_name", "last_name", "company_name", "website", "provider",
            "status", "last_contacted_at", "last_step",
        ]  # fmt: skip
        read_only_fields = ["position", "status", "last_contacted_at", "last_step"]

    def validate_email(self, value: str) -> str:
        return value.strip().lower()


class _CampaignField(serializers.PrimaryKeyRelatedField):
    """Looks campaigns up in `context["campaigns"]` when the caller preloaded them (bulk: one query, not one
    per lead)."""

    def to_internal_value(self, data: Any) -> Campaign:
        preloaded = self.context.get("campaigns")
        if preloaded is None:
            return super().to_internal_value(data)
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("incorrect_type", data_type=type(data).__name__)
        try:
            campaign = preloaded.get(int(data))
        except ValueError:
            self.fail("incorrect_type", data_type=type(data).__name__)
        if campaign is None:
            self.fail("does_not_exist", pk_value=data)
        return campaign


class LeadSerializer(StorableJSONMixin, serializers.ModelSerializer):
    campaign = _CampaignField(queryset=Campaign.objects.all())
    recipients = RecipientSerializer(many=True, allow_empty=False)
    sender_email = serializers.EmailField(
        source="sender_account.email", read_only=True, allow_null=True,
        help_text="The account that sent the lead's first email; with the sticky policy it sends all its steps.",
    )  # fmt: skip

    class Meta:
        model = Lead
        fields = [
            "id", "campaign", "external_id", "custom_fields", "recipients", "state", "stop_reason", "current_step",
            "sender_account", "sender_email", "last_sent_at", "next_due_at", "created_at",
        ]  # fmt: skip
        read_only_fields = ["state", "stop_reason", "current_step", "sender_account", "last_sent_at", "next_due_at",
                            "created_at"]  # fmt: skip
        validators = []  # (campaign, external_id) is checked for a whole batch at once: `leads_check_unique`

    def validate_custom_fields(self, value: Any) -> dict:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Custom fields are an object of names to values.")
        return value

    def validate_recipients(self, value: list[dict]) -> list[dict]:
        """Errors keyed by position, as DRF reports other per-recipient errors."""
        seen: set[str] = set()
        errors: dict[int, dict] = {}
        for index, recipient in enumerate(value):
            if recipient["email"] in seen:
                errors[index] = {"email": ["This address is already listed for this lead."]}
            seen.add(recipient["email"])
        if errors:
            raise serializers.ValidationError(errors)
        return value

    def create(self, validated_data: dict) -> Lead:
        return leads_create(leads=[validated_data])[0]


class LeadRepliedSerializer(serializers.Serializer):
    email = serializers.EmailField(help_text="The recipient of this lead who replied.")
    replied_at = serializers.DateTimeField(required=False, help_text="When; default now.")


class LeadBulkErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the lead in the request list, from 0.")
    errors = serializers.DictField(help_text="Field errors of that lead, as for a single create.")


class LeadBulkErrorsSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = LeadBulkErrorSerializer(many=True, required=False, help_text="Absent when the body as a whole is wrong.")


# --- accounts ----------------------------------------------------------------------------------------------


class SenderAccountSerializer(ModelCleanMixin, serializers.ModelSerializer):
    """A sender account. Status moves through /pause/ and /resume/. Secrets (`smtp_password`, `esp_secret`) are
    write-only and bound to where they are sent: omitted or "" keeps the stored one, null removes it, and a
    change of its destination (SMTP password: transport, smtp_host, smtp_port, security, smtp_username; ESP
    secret: transport, esp_name, esp_endpoint_url, esp_key_id, esp_region) without the secret in the same request
    clears it (`has_password` / `has_esp_secret` become false). Logging in without TLS (security "none") is
    refused except to loopback or SMTP_PLAINTEXT_AUTH_HOSTS; `esp_endpoint_url` must be in ESP_ENDPOINT_ALLOWLIST.
    """

    smtp_password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Write-only. Omitted or empty: keep the stored password, unless the request changes transport, "
        "smtp_host, smtp_port, security or smtp_username: then it is cleared (send it again to keep it); null: "
        "remove it.",
    )
    has_password = serializers.SerializerMethodField()
    esp_secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Write-only. Amazon SES: the secret access key; other ESPs: the API key. Omitted or empty: keep "
        "the stored secret, unless the request changes transport, esp_name, esp_endpoint_url, esp_key_id or "
        "esp_region: then it is cleared (send it again to keep it); null: remove it.",
    )
    has_esp_secret = serializers.SerializerMethodField()

    class Meta:
        model = SenderAccount
        fields = [
            "id", "email", "from_name", "first_name", "last_name", "provider", "transport", "smtp_host", "smtp_port",
            "smtp_username", "smtp_password", "has_password", "security", "esp_name", "esp_key_id", "esp_secret",
            "has_esp_secret", "esp_region", "esp_endpoint_url", "esp_configuration_set", "signature", "time_zone",
            "daily_limit", "min_wait_seconds", "jitter_seconds", "status", "status_reason", "consecutive_failures",
            "next_available_at", "created_at",
        ]  # fmt: skip
        read_only_fields = ["status", "status_reason", "consecutive_failures", "next_available_at", "created_at"]

    def get_has_password(self, account: SenderAccount) -> bool:
        return bool(account.smtp_password)

    def get_has_esp_secret(self, account: SenderAccount) -> bool:
        return bool(account.esp_secret)

    def validate(self, attrs: dict) -> dict:
        """Secrets as entered (null: removed), then those the request moves elsewhere cleared
        (`account_secrets_bind`), then the model's checks on what will be stored."""
        for secret_field in SECRET_DESTINATIONS:
            if secret_field in attrs:
                secret = attrs.pop(secret_field)
                if secret is None:
                    attrs[secret_field] = ""
                elif secret:
                    attrs[secret_field] = secret
        attrs, self.secrets_cleared = account_secrets_bind(account=self.instance or SenderAccount(), changes=attrs)
        return super().validate(attrs)


class AccountStatusSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


# --- activity and sends ------------------------------------------------------------------------------------


class ActivitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Activity
        fields = ["id", "created_at", "kind", "campaign", "lead", "recipient", "account", "step_order", "message",
                  "detail"]  # fmt: skip


class SendRecordSerializer(serializers.ModelSerializer):
    recipient_email = serializers.EmailField(source="recipient.email", read_only=True)
    step_order = serializers.IntegerField(source="step.order", read_only=True)

    class Meta:
        model = SendRecord
        fields = [
            "id", "state", "campaign", "lead", "recipient", "recipient_email", "step", "step_order", "account",
            "message_id", "subject", "attempts", "last_error", "next_attempt_at", "handed_over_at", "sent_at",
            "resolved_by", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


@extend_schema_field({"type": "string", "description": "As in the list: " + ", ".join(SendRecord.State.values)})
class _SendStateField(serializers.ChoiceField):
    """The detail's state without a second enum component: two components sharing one enum under the name
    "state", next to the lead's, would make drf-spectacular fall back to a hashed enum name."""


class SendRecordDetailSerializer(SendRecordSerializer):
    state = _SendStateField(choices=SendRecord.State.choices, read_only=True)

    class Meta(SendRecordSerializer.Meta):
        fields = [*SendRecordSerializer.Meta.fields, "message"]
        read_only_fields = fields


class SendRecordResolveSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=["mark_sent", "mark_failed", "resend"],
        help_text="mark_sent: it arrived; mark_failed: it did not; resend: send it again now.",
    )
