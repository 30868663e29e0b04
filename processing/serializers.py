"""JSON shapes of the inbound API: the seed's (`/results/{email_id}`, `/emails`, `/stats`) so its clients work
unchanged, with our extra fields added, never renamed."""

from rest_framework import serializers

from processing.models import EmailResult, InboundEmail
from processing.parsing import email_parse


class ResultSerializer(serializers.ModelSerializer):
    """The seed's structured output. `processed_at` is ISO 8601 with its offset (UTC: "Z" or "+00:00")."""

    email_id = serializers.CharField(source="email.email_id", read_only=True)

    class Meta:
        model = EmailResult
        fields = ["email_id", "classification", "confidence", "processed_at", "processor_id", "processing_time_ms"]
        read_only_fields = fields


class ResultDetailSerializer(ResultSerializer):
    """The result with what decided it (the rule or the model's probabilities)."""

    class Meta(ResultSerializer.Meta):
        fields = [*ResultSerializer.Meta.fields, "model_version", "signals"]
        read_only_fields = fields


class EmailSerializer(serializers.ModelSerializer):
    """A row of GET /emails: the parsed columns and the result (null until classified)."""

    mailbox = serializers.EmailField(source="mailbox.address", read_only=True)
    result = ResultSerializer(read_only=True, allow_null=True, default=None)
    classification = serializers.SerializerMethodField()

    class Meta:
        model = InboundEmail
        fields = [
            "email_id",
            "mailbox",
            "history_id",
            "subject",
            "sender",
            "sender_name",
            "received_at",
            "sent_at",
            "status",
            "classification",
            "result",
        ]
        read_only_fields = fields

    def get_classification(self, email: InboundEmail) -> str | None:
        result = getattr(email, "result", None) if _has_result(email) else None
        return None if result is None else result.classification


def _has_result(email: InboundEmail) -> bool:
    try:
        email.result  # noqa: B018 - a reverse one-to-one raises when absent
    except EmailResult.DoesNotExist:
        return False
    return True


class EmailDetailSerializer(EmailSerializer):
    """GET /emails/{email_id}: the parsed fields, the text body, the raw MIME (as text) and the result with its
    signals."""

    result = ResultDetailSerializer(read_only=True, allow_null=True, default=None)
    text = serializers.SerializerMethodField()
    raw = serializers.SerializerMethodField(help_text="The message as received (RFC 5322), decoded as UTF-8.")

    class Meta(EmailSerializer.Meta):
        fields = [
            *EmailSerializer.Meta.fields,
            "message_id",
            "in_reply_to",
            "references",
            "recipients",
            "size_bytes",
            "source",
            "attempts",
            "last_error",
            "parse_error",
            "created_at",
            "text",
            "raw",
        ]
        read_only_fields = fields

    def get_text(self, email: InboundEmail) -> str:
        return email_parse(bytes(email.raw)).text

    def get_raw(self, email: InboundEmail) -> str:
        return bytes(email.raw).decode("utf-8", errors="replace")

    def to_representation(self, email: InboundEmail) -> dict:
        data = super().to_representation(email)
        if not _has_result(email):
            data["result"] = None
        return data


class _Totals(serializers.Serializer):
    received = serializers.IntegerField()
    classified = serializers.IntegerField()
    failed = serializers.IntegerField()
    queued = serializers.IntegerField()


class _Day(serializers.Serializer):
    date = serializers.DateField()
    received = serializers.IntegerField()
    classified = serializers.IntegerField()
    failed = serializers.IntegerField()


class _Percentiles(serializers.Serializer):
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class StatsSerializer(serializers.Serializer):
    """GET /stats (documentation of selectors.inbound_stats's dict)."""

    totals = _Totals()
    by_class = serializers.DictField(child=serializers.IntegerField(), help_text="Results per classification.")
    per_day = _Day(many=True, help_text="The last 30 days (UTC), oldest first, by received date.")
    queue_depth = serializers.DictField(
        child=serializers.IntegerField(allow_null=True), help_text="inbound and inbound_backfill; null: broker down."
    )
    processing_time_ms = _Percentiles()
