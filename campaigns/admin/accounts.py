"""Sender accounts in the admin: secrets write-only, today's usage from the selectors, pause/resume/test/reset."""

import zoneinfo

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from campaigns.models import AccountDailyUsage, SenderAccount
from campaigns.selectors import account_cells, account_list, account_stats
from campaigns.services.accounts import account_reset_limits, account_set_status
from campaigns.services.delivery import account_check
from campaigns.services.destinations import (
    SECRET_DESTINATIONS,
    account_secrets_bind,
    account_secrets_cleared_message,
)
from campaigns.services.live import ACCOUNT_KIND, account_fragments
from emailsys import clock
from emailsys.admin import ActionPermissionsAdmin, FriendlyFieldsMixin, ReadOnlyAdmin, counts_html, request_actor
from emailsys.live import live_current


class SenderAccountForm(forms.ModelForm):
    """The SMTP password and the ESP secret are write-only: never rendered back; empty on edit keeps the stored
    one, unless the edit changes where it would be sent (`account_secrets_bind`): then it is cleared, and
    `secrets_cleared` says which and why."""

    smtp_password = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=False,
        label="SMTP password",
        help_text="Write-only. Leave empty to keep the stored password — unless you change the transport, host, "
        "port, security or username: then the stored password is cleared; enter it again to keep it.",
    )
    esp_secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=False,
        label="ESP secret",
        help_text="Write-only. Amazon SES: the secret access key; other ESPs: the API key. Leave empty to keep it "
        "— unless you change the transport, ESP, endpoint, key id or region: then it is cleared; enter it again "
        "to keep it.",
    )

    esp_endpoint_url = forms.URLField(
        required=False,
        assume_scheme="https",
        label="ESP endpoint URL",
        help_text=SenderAccount._meta.get_field("esp_endpoint_url").help_text
        + " Only endpoints in ESP_ENDPOINT_ALLOWLIST.",
    )

    class Meta:
        model = SenderAccount
        fields = ["email", "from_name", "first_name", "last_name", "provider", "signature", "transport", "smtp_host",
                  "smtp_port", "security", "smtp_username", "smtp_password", "esp_name", "esp_key_id", "esp_secret",
                  "esp_region", "esp_endpoint_url", "esp_configuration_set", "time_zone", "daily_limit",
                  "min_wait_seconds", "jitter_seconds"]  # fmt: skip
        # The acronyms as people write them (the columns' verbose names would show "Smtp host", "Esp name").
        labels = {"smtp_host": "SMTP host", "smtp_port": "SMTP port", "smtp_username": "SMTP username",
                  "esp_name": "ESP", "esp_key_id": "ESP key id", "esp_region": "ESP region",
                  "esp_configuration_set": "ESP configuration set"}  # fmt: skip
        help_texts = {
            "security": "None: no TLS; logging in without TLS is refused except to loopback or "
            "SMTP_PLAINTEXT_AUTH_HOSTS."
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.initial.pop("smtp_password", None)  # the plaintext never reaches the page, not even hidden
        self.initial.pop("esp_secret", None)
        if "transport" in self.fields:
            self.fields["transport"].required = False
        self.secrets_cleared: dict[str, list[str]] = {}

    def clean_transport(self) -> str:
        """Optional in a submission (forms written before ESP accounts existed): SMTP."""
        return self.cleaned_data.get("transport") or SenderAccount.Transport.SMTP

    def clean(self) -> dict:
        """A secret left empty is the stored one, or "" when the edit moves it elsewhere; then the model's
        checks (plaintext AUTH, endpoint allow-list) see what will be stored. `self.instance` is still the
        stored row here."""
        cleaned = super().clean()
        entered = {name: value for name, value in cleaned.items() if name not in SECRET_DESTINATIONS or value}
        bound, self.secrets_cleared = account_secrets_bind(account=self.instance, changes=entered)
        for secret in SECRET_DESTINATIONS:
            if secret in self.fields:
                cleaned[secret] = bound.get(secret, getattr(self.instance, secret))
        return cleaned


@admin.register(SenderAccount)
class SenderAccountAdmin(FriendlyFieldsMixin, ActionPermissionsAdmin):
    """The list's status, usage, sent-today and next-available cells and the change page's panel are live
    fragments (campaigns/services/live.py), kept current over the page's socket."""

    form = SenderAccountForm
    duration_fields = ("min_wait_seconds", "jitter_seconds")
    time_zone_fields = ("time_zone",)
    change_list_template = "admin/campaigns/senderaccount/change_list.html"
    list_display = ["email", "status_cell", "usage_cell", "sent_today_cell", "next_cell", "transport", "smtp_host",
                    "esp_name", "provider"]  # fmt: skip
    list_filter = ["status", "transport", "esp_name", "security", "provider", "campaign_settings__campaign",
                   "last_reserved_at", "created_at"]  # fmt: skip
    search_fields = ["email", "from_name", "smtp_host", "provider"]
    ordering = ["email"]
    actions = ["test_smtp", "pause", "resume", "disable", "reset_limits"]
    readonly_fields = ["status", "status_reason", "has_password", "has_esp_secret", "consecutive_failures",
                       "last_reserved_at", "next_available_at", "busy_until", "stats_panel", "created_at"]  # fmt: skip
    fieldsets = [
        (None, {"fields": ["email", "from_name", "first_name", "last_name", "provider", "signature", "transport"]}),
        ("SMTP", {"fields": ["smtp_host", "smtp_port", "security", "smtp_username", "smtp_password", "has_password"]}),
        ("ESP (django-anymail)", {"fields": ["esp_name", "esp_key_id", "esp_secret", "has_esp_secret", "esp_region",
                                             "esp_endpoint_url", "esp_configuration_set"]}),
        ("Limits", {"fields": ["time_zone", "daily_limit", "min_wait_seconds", "jitter_seconds"]}),
        # Status, pause reason, failures and the next available time are the live panel's, above the form.
        ("State", {"fields": ["last_reserved_at", "busy_until", "stats_panel", "created_at"]}),
    ]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[SenderAccount]:
        return account_list()

    def save_model(self, request: HttpRequest, obj: SenderAccount, form: SenderAccountForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if form.secrets_cleared:
            self.message_user(request, account_secrets_cleared_message(form.secrets_cleared), messages.WARNING)

    def _cell(self, account: SenderAccount, part: str) -> SafeString:
        """One live cell of an `account_list` row; the row's cells are rendered once."""
        cells = getattr(account, "_live_cells", None)
        if cells is None:
            data = account_cells(account=account, reserved_today=account.reserved_today,
                                 sent_today=account.sent_today, now=clock.now())  # fmt: skip
            key = f"{ACCOUNT_KIND}-{account.pk}"
            cells = account._live_cells = account_fragments(
                account.pk, {"key": key, "version": account.live_version, "data": data}
            )
        return mark_safe(cells[f"{ACCOUNT_KIND}-{account.pk}-{part}"])  # noqa: S308 - rendered by our templates

    @admin.display(description="Status", ordering="status")
    def status_cell(self, account: SenderAccount) -> SafeString:
        return self._cell(account, "status")

    @admin.display(description="Reserved today / limit", ordering="reserved_today")
    def usage_cell(self, account: SenderAccount) -> SafeString:
        return self._cell(account, "usage")

    @admin.display(description="Sent today", ordering="sent_today")
    def sent_today_cell(self, account: SenderAccount) -> SafeString:
        return self._cell(account, "sent-today")

    @admin.display(description="Next available", ordering="next_available_at")
    def next_cell(self, account: SenderAccount) -> SafeString:
        return self._cell(account, "next")

    def render_change_form(self, request: HttpRequest, context: dict, add=False, change=False, form_url="", obj=None):
        """The live panel of a saved account, as it stands (after the admin's own permission checks)."""
        if obj is not None and obj.pk:
            payload = live_current(ACCOUNT_KIND, obj.pk)
            if payload is not None:
                context["live"] = {"key": payload["key"], "fragments": {
                    part: mark_safe(payload["fragments"][f"{payload['key']}-{part}"])  # noqa: S308 - ours
                    for part in ("status", "panel")
                }}  # fmt: skip
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @admin.display(description="Password stored", boolean=True)
    def has_password(self, account: SenderAccount) -> bool:
        return bool(account.smtp_password)

    @admin.display(description="ESP secret stored", boolean=True)
    def has_esp_secret(self, account: SenderAccount) -> bool:
        return bool(account.esp_secret)

    @admin.display(description="All time")
    def stats_panel(self, account: SenderAccount) -> SafeString | str:
        """What the live panel above the form does not show: every send by state, and the last delivery."""
        if not account.pk:
            return "—"
        stats = account_stats(account=account, now=clock.now())
        last_sent = stats["last_sent_at"]  # in the account's time zone, as the live panel shows times
        if last_sent:
            last_sent = (
                f"{last_sent.astimezone(zoneinfo.ZoneInfo(account.time_zone)):%Y-%m-%d %H:%M} ({account.time_zone})"
            )
        rows = [
            ("Sends by state", counts_html(stats["sends"])),
            ("Last sent", last_sent or "—"),
        ]
        return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))

    @admin.action(
        description="Test SMTP login (or ESP credentials and sender) of selected accounts",
        permissions=["test_senderaccount"],
    )
    def test_smtp(self, request: HttpRequest, queryset: QuerySet[SenderAccount]) -> None:
        for account in queryset:
            ok, detail = account_check(account=account)
            level = messages.SUCCESS if ok else messages.ERROR
            self.message_user(request, f"{account.email}: {'OK' if ok else 'FAILED'} — {detail}", level)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[SenderAccount], status: str) -> None:
        reason = "" if status == SenderAccount.Status.ACTIVE else f"{status} by {request_actor(request)} in the admin"
        for account in queryset:
            account_set_status(account=account, status=status, reason=reason)
        self.message_user(request, f"{queryset.count()} account(s) now {status}.", messages.SUCCESS)

    @admin.action(description="Pause selected accounts", permissions=["operate_senderaccount"])
    def pause(self, request: HttpRequest, queryset: QuerySet[SenderAccount]) -> None:
        self._set_status(request, queryset, SenderAccount.Status.PAUSED)

    @admin.action(description="Resume selected accounts", permissions=["operate_senderaccount"])
    def resume(self, request: HttpRequest, queryset: QuerySet[SenderAccount]) -> None:
        self._set_status(request, queryset, SenderAccount.Status.ACTIVE)

    @admin.action(description="Disable selected accounts", permissions=["operate_senderaccount"])
    def disable(self, request: HttpRequest, queryset: QuerySet[SenderAccount]) -> None:
        self._set_status(request, queryset, SenderAccount.Status.DISABLED)

    @admin.action(description="Reset today's limits of selected accounts", permissions=["operate_senderaccount"])
    def reset_limits(self, request: HttpRequest, queryset: QuerySet[SenderAccount]) -> None:
        woken = [work_order_id for account in queryset for work_order_id in account_reset_limits(account=account)]
        self.message_user(request, f"Limits reset for {queryset.count()} account(s).", messages.SUCCESS)
        if woken:
            self.message_user(request, f"Woke work order(s) {', '.join(map(str, woken))}, waiting on them.")


@admin.register(AccountDailyUsage)
class AccountDailyUsageAdmin(ReadOnlyAdmin):
    list_display = ["account", "day", "reserved"]
    list_select_related = ["account"]
    list_filter = ["day", "account"]
    search_fields = ["account__email"]
    date_hierarchy = "day"
    ordering = ["-day", "account__email"]


# --- campaigns ---------------------------------------------------------------------------------------------
