"""Admin pages of inbound mail: mailboxes (cursor, lag, lease, last warning; never the webhook secret) and
messages (parsed headers, text, the raw MIME escaped in a <pre>, the result and its signals). Read-only: rows are
the provider's truth, written by the sync; actions call services (a sync request, a re-classify)."""

import json

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from emailsys.admin import ActionPermissionsAdmin, ReadOnlyAdmin, preformatted
from processing.models import EmailResult, ImapAccount, InboundEmail, Mailbox
from processing.parsing import email_parse
from processing.services.classify import email_reclassify
from processing.services.imap import (
    imap_connection_test,
    imap_mailbox_ensure,
    imap_password_cleared_message,
    imap_poll_request,
    imap_settings_bind,
)
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
            if mailbox.provider == Mailbox.Provider.IMAP:
                imap_poll_request(mailbox_id=mailbox.pk)
            else:
                sync_request(mailbox_id=mailbox.pk, source="backfill")
        self.message_user(request, f"Sync requested for {queryset.count()} mailbox(es).", messages.SUCCESS)


@admin.register(InboundEmail)
class InboundEmailAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "classification", "confidence", "sender", "subject", "mailbox", "status"]
    list_filter = ["status", "result__classification", "source", "mailbox"]
    search_fields = ["email_id", "sender", "sender_name", "subject", "message_id"]
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


class ImapAccountForm(forms.ModelForm):
    """The password is write-only as SMTP's is: never rendered back; empty on edit keeps the stored one, unless
    the edit changes the host, port, security or username (`imap_settings_bind`): then it is cleared, and
    `password_cleared` names the fields that moved it."""

    password = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=False,
        label="IMAP password",
        help_text="Write-only. Leave empty to keep the stored password — unless you change the host, port, "
        "security or username: then the stored password is cleared; enter it again to keep it.",
    )

    class Meta:
        model = ImapAccount
        fields = ["sender_account", "host", "port", "security", "username", "password", "folder", "enabled"]
        help_texts = {
            "security": "None: no TLS; logging in without TLS is refused except to loopback or "
            "IMAP_PLAINTEXT_AUTH_HOSTS."
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.initial.pop("password", None)  # the plaintext never reaches the page, not even hidden
        self.password_cleared: list[str] = []

    def clean(self) -> dict:
        """An empty password is the stored one, or "" when the edit moves it elsewhere; `self.instance` is still
        the stored row here. A sender account whose address is already another provider's mailbox is refused."""
        cleaned = super().clean()
        entered = {name: value for name, value in cleaned.items() if name != "password" or value}
        bound, self.password_cleared = imap_settings_bind(account=self.instance, changes=entered)
        cleaned["password"] = bound.get("password", self.instance.password)
        sender = cleaned.get("sender_account")
        if sender is not None:
            taken = Mailbox.objects.filter(address=sender.email.strip().lower()).exclude(provider=Mailbox.Provider.IMAP)
            if taken.exists():
                self.add_error("sender_account", f"{sender.email} is already a mailbox of another provider.")
        return cleaned


@admin.register(ImapAccount)
class ImapAccountAdmin(ActionPermissionsAdmin):
    """IMAP settings of sender accounts: editable (Django's change permission), the password write-only; the
    cursor, IDLE support and the mailbox's last warning read-only; test and poll as actions."""

    form = ImapAccountForm
    list_display = ["sender_account", "host", "port", "security", "folder", "enabled", "uidvalidity", "last_uid",
                    "has_idle", "last_polled_at", "warning"]  # fmt: skip
    list_filter = ["enabled", "security", "has_idle"]
    list_select_related = ["sender_account", "mailbox"]
    search_fields = ["sender_account__email", "host", "username"]
    ordering = ["sender_account__email"]
    actions = ["test_connection", "poll_now"]
    readonly_fields = ["has_password", "mailbox", "state_folder", "uidvalidity", "last_uid", "resync_until_uid",
                       "has_idle", "last_polled_at", "warning", "warning_at", "created_at"]  # fmt: skip
    fieldsets = [
        (None, {"fields": ["sender_account", "enabled"]}),
        ("Server", {"fields": ["host", "port", "security", "username", "password", "has_password", "folder"]}),
        ("State", {"fields": ["mailbox", "state_folder", "uidvalidity", "last_uid", "resync_until_uid", "has_idle",
                              "last_polled_at", "warning", "warning_at", "created_at"]}),
    ]  # fmt: skip

    def get_readonly_fields(self, request: HttpRequest, obj: ImapAccount | None = None) -> list[str]:
        """The sender account is chosen once: the messages already stored belong to its mailbox."""
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "sender_account"] if obj is not None else fields

    def save_model(self, request: HttpRequest, obj: ImapAccount, form: ImapAccountForm, change: bool) -> None:
        imap_mailbox_ensure(account=obj)
        super().save_model(request, obj, form, change)
        if form.password_cleared:
            self.message_user(request, imap_password_cleared_message(form.password_cleared), messages.WARNING)

    @admin.display(description="Password stored", boolean=True)
    def has_password(self, account: ImapAccount) -> bool:
        return bool(account.password)

    @admin.display(description="Last warning")
    def warning(self, account: ImapAccount) -> str:
        return account.mailbox.last_warning if account.mailbox_id else ""

    @admin.display(description="Warned at")
    def warning_at(self, account: ImapAccount):
        return account.mailbox.last_warning_at if account.mailbox_id else None

    @admin.action(description="Test IMAP connection of selected settings", permissions=["poll_imapaccount"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ImapAccount]) -> None:
        for account in queryset:
            ok, detail = imap_connection_test(account=account)
            level = messages.SUCCESS if ok else messages.ERROR
            self.message_user(request, f"{account.sender_account.email}: {'OK' if ok else 'FAILED'} — {detail}", level)

    @admin.action(description="Poll selected IMAP mailboxes now", permissions=["poll_imapaccount"])
    def poll_now(self, request: HttpRequest, queryset: QuerySet[ImapAccount]) -> None:
        for account in queryset:
            imap_poll_request(mailbox_id=account.mailbox_id)
        self.message_user(request, f"Poll requested for {queryset.count()} IMAP mailbox(es).", messages.SUCCESS)
