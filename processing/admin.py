"""Admin pages of inbound mail: mailboxes (cursor, lag, lease, last warning; never the webhook secret) and
messages (parsed headers, text, the raw MIME escaped in a <pre>, the result and its signals). Read-only: rows are
the provider's truth, written by the sync; actions call services (a sync request, a re-classify)."""

import json

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from emailsys.admin import ReadOnlyAdmin, preformatted
from processing.models import EmailResult, InboundEmail, Mailbox
from processing.parsing import email_parse
from processing.services.classify import email_reclassify
from processing.services.sync import sync_request


@admin.register(Mailbox)
class MailboxAdmin(ReadOnlyAdmin):
    list_display = [
        "address",
        "enabled",
        "last_history_id",
        "wanted_history_id",
        "provider_history_id",
        "lag",
        "last_synced_at",
        "last_warning_at",
    ]
    list_filter = ["enabled", "provider"]
    search_fields = ["address"]
    exclude = ["webhook_secret"]
    readonly_fields = [
        "address",
        "provider",
        "provider_url",
        "enabled",
        "last_history_id",
        "wanted_history_id",
        "provider_history_id",
        "lag",
        "sync_lease_owner",
        "sync_lease_until",
        "poison_history_id",
        "poison_attempts",
        "last_synced_at",
        "last_warning",
        "last_warning_at",
        "created_at",
    ]
    actions = ["sync_now"]

    @admin.display(description="lag")
    def lag(self, mailbox: Mailbox) -> int:
        """History entries the provider had beyond the cursor at the last sync."""
        return max(mailbox.provider_history_id - (mailbox.last_history_id or 0), 0)

    @admin.action(description="Sync selected mailboxes now", permissions=["sync_mailbox"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet[Mailbox]) -> None:
        for mailbox in queryset:
            sync_request(mailbox_id=mailbox.pk, source="backfill")
        self.message_user(request, f"Sync requested for {queryset.count()} mailbox(es).", messages.SUCCESS)


@admin.register(InboundEmail)
class InboundEmailAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "classification", "confidence", "sender", "subject", "mailbox", "status"]
    list_filter = ["status", "result__classification", "source", "mailbox"]
    search_fields = ["email_id", "sender", "subject", "message_id"]
    date_hierarchy = "received_at"
    list_select_related = ["result", "mailbox"]
    exclude = ["raw"]
    readonly_fields = [
        "mailbox",
        "email_id",
        "history_id",
        "status",
        "source",
        "attempts",
        "last_error",
        "sender",
        "sender_name",
        "recipients",
        "subject",
        "sent_at",
        "received_at",
        "created_at",
        "message_id",
        "in_reply_to",
        "references",
        "size_bytes",
        "parse_error",
        "result_shown",
        "headers_shown",
        "text_shown",
        "raw_shown",
    ]
    actions = ["reclassify"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[InboundEmail]:
        queryset = super().get_queryset(request)
        return (
            queryset
            if request.resolver_match and request.resolver_match.url_name.endswith("change")
            else (queryset.defer("raw"))
        )

    @staticmethod
    def _result(email: InboundEmail) -> EmailResult | None:
        try:
            return email.result
        except EmailResult.DoesNotExist:
            return None

    @admin.display(description="class", ordering="result__classification")
    def classification(self, email: InboundEmail) -> str:
        result = self._result(email)
        return result.classification if result else "—"

    @admin.display(description="confidence", ordering="result__confidence")
    def confidence(self, email: InboundEmail) -> str:
        result = self._result(email)
        return f"{result.confidence:.2f}" if result else "—"

    @admin.display(description="result")
    def result_shown(self, email: InboundEmail) -> SafeString:
        result = self._result(email)
        if result is None:
            return format_html("{}", "not classified yet")
        rows = [
            ("classification", result.classification),
            ("confidence", f"{result.confidence:.3f}"),
            ("processor", result.processor_id),
            ("processing time", f"{result.processing_time_ms:.1f} ms"),
            ("processed at", result.processed_at.isoformat()),
        ]
        table = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        return format_html("<table>{}</table>{}", table, preformatted(json.dumps(result.signals, indent=2)))

    @admin.display(description="headers")
    def headers_shown(self, email: InboundEmail) -> SafeString:
        parsed = email_parse(bytes(email.raw))
        return preformatted("\n".join(f"{name}: {value}" for name, value in parsed.message.items()))

    @admin.display(description="text")
    def text_shown(self, email: InboundEmail) -> SafeString:
        return preformatted(email_parse(bytes(email.raw)).text)

    @admin.display(description="raw MIME")
    def raw_shown(self, email: InboundEmail) -> SafeString:
        return preformatted(bytes(email.raw).decode("utf-8", errors="replace"))

    @admin.action(description="Re-classify selected emails", permissions=["classify_inboundemail"])
    def reclassify(self, request: HttpRequest, queryset: QuerySet[InboundEmail]) -> None:
        done = 0
        for email in queryset:
            try:
                email_reclassify(email=email)
                done += 1
            except Exception as error:  # noqa: BLE001 - one message's failure is reported, the rest go on
                self.message_user(request, f"{email.email_id}: {type(error).__name__}: {error}", messages.ERROR)
        self.message_user(request, f"{done} email(s) re-classified.", messages.SUCCESS)
