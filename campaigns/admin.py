"""Operator console for campaigns. Actions, the send-test page and adding a lead or a suppression call services;
lists and panels read the selectors (one query for the rows, whatever the page size).

Secrets: an account's SMTP password and ESP secret are write-only here. The form fields never render a value,
an empty submission keeps the stored secret, and secrets are in no list, read-only field or log message.
Send records, activities, dry runs, test sends and usage counters are read-only: they are the record of
what happened, changed only by services (e.g. "mark sent" on an unknown send).
"""

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from campaigns import tasks
from campaigns.models import (
    AccountDailyUsage,
    Activity,
    Campaign,
    CampaignAccount,
    DryRunRecord,
    EmailTemplate,
    Lead,
    OperatorTestSend,
    Recipient,
    SenderAccount,
    SendRecord,
    SequenceStep,
    Suppression,
)
from campaigns.selectors import account_list, account_stats, campaign_list, campaign_progress, lead_list
from campaigns.services.accounts import account_reset_limits, account_set_status
from campaigns.services.delivery import account_check
from campaigns.services.leads import lead_create, leads_stop
from campaigns.services.lifecycle import campaign_reset_progress, campaign_set_status, lead_reset_progress
from campaigns.services.previews import campaign_dry_run, step_send_test
from campaigns.services.sends import send_record_resolve
from campaigns.services.suppressions import suppression_add, suppression_parse
from campaigns.services.templating import TemplateRenderError, template_context, template_render
from emailsys import clock
from emailsys.admin import ReadOnlyAdmin, SendAttemptAdmin, instance_adopt, preformatted, request_actor

# --- helpers -----------------------------------------------------------------------------------------------


def _counts_html(counts: dict[Any, int], skip_zero: bool = True) -> SafeString | str:
    shown = [(str(key), value) for key, value in counts.items() if value or not skip_zero]
    return format_html_join(", ", "{}: {}", shown) or "—"


# --- templates ---------------------------------------------------------------------------------------------


@admin.register(EmailTemplate)
class EmailTemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "subject", "updated_at"]
    search_fields = ["name", "subject"]
    readonly_fields = ["preview", "created_at", "updated_at"]
    fields = ["name", "subject", "body_text", "body_html", "preview", "created_at", "updated_at"]

    @admin.display(description="Preview (sample recipient Jane Doe)")
    def preview(self, template: EmailTemplate) -> SafeString | str:
        if not template.pk:
            return "Save to see a preview."
        context = template_context(
            recipient=Recipient(email="jane@example.com", first_name="Jane", last_name="Doe",
                                company_name="Example Inc", website="example.com"),
            account=SenderAccount(email="sender@example.com", first_name="Sam", last_name="Sender"),
            campaign=Campaign(), step_order=1, custom_fields={},
        )  # fmt: skip
        try:
            rendered = template_render(template=template, context=context, signature="")
        except TemplateRenderError as error:
            return format_html('<p class="errornote">{}</p>', str(error))
        return preformatted(f"Subject: {rendered.subject}\n\n{rendered.text or rendered.html}")


# --- sender accounts ---------------------------------------------------------------------------------------


class SenderAccountForm(forms.ModelForm):
    """The SMTP password and the ESP secret are write-only: never rendered back; empty on edit keeps the stored
    one."""

    smtp_password = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=False,
        label="SMTP password",
        help_text="Write-only. Leave empty to keep the stored password.",
    )
    esp_secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=False,
        label="ESP secret",
        help_text="Write-only. Amazon SES: the secret access key; other ESPs: the API key. Leave empty to keep it.",
    )

    esp_endpoint_url = forms.URLField(
        required=False,
        assume_scheme="https",
        label="ESP endpoint URL",
        help_text=SenderAccount._meta.get_field("esp_endpoint_url").help_text,
    )

    class Meta:
        model = SenderAccount
        fields = ["email", "from_name", "first_name", "last_name", "provider", "signature", "transport", "smtp_host",
                  "smtp_port", "security", "smtp_username", "smtp_password", "esp_name", "esp_key_id", "esp_secret",
                  "esp_region", "esp_endpoint_url", "esp_configuration_set", "time_zone", "daily_limit",
                  "min_wait_seconds", "jitter_seconds"]  # fmt: skip

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.initial.pop("smtp_password", None)  # the plaintext never reaches the page, not even hidden
        self.initial.pop("esp_secret", None)
        if "transport" in self.fields:
            self.fields["transport"].required = False

    def clean_smtp_password(self) -> str:
        password = self.cleaned_data.get("smtp_password", "")
        if not password and self.instance.pk:
            return self.instance.smtp_password
        return password

    def clean_transport(self) -> str:
        """Optional in a submission (forms written before ESP accounts existed): SMTP."""
        return self.cleaned_data.get("transport") or SenderAccount.Transport.SMTP

    def clean_esp_secret(self) -> str:
        secret = self.cleaned_data.get("esp_secret", "")
        if not secret and self.instance.pk:
            return self.instance.esp_secret
        return secret


@admin.register(SenderAccount)
class SenderAccountAdmin(admin.ModelAdmin):
    form = SenderAccountForm
    list_display = ["email", "status", "status_reason", "usage_today", "daily_limit", "transport", "smtp_host",
                    "esp_name", "provider"]  # fmt: skip
    list_filter = ["status", "transport", "esp_name", "security", "provider"]
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
        ("State", {"fields": ["status", "status_reason", "consecutive_failures", "last_reserved_at",
                              "next_available_at", "busy_until", "stats_panel", "created_at"]}),
    ]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[SenderAccount]:
        return account_list()

    @admin.display(description="Reserved today / limit", ordering="reserved_today")
    def usage_today(self, account: SenderAccount) -> str:
        return f"{account.reserved_today} / {account.daily_limit}"

    @admin.display(description="Password stored", boolean=True)
    def has_password(self, account: SenderAccount) -> bool:
        return bool(account.smtp_password)

    @admin.display(description="ESP secret stored", boolean=True)
    def has_esp_secret(self, account: SenderAccount) -> bool:
        return bool(account.esp_secret)

    @admin.display(description="Today")
    def stats_panel(self, account: SenderAccount) -> SafeString | str:
        if not account.pk:
            return "—"
        stats = account_stats(account=account, now=clock.now())
        rows = [
            ("Day (account time)", stats["day"].isoformat()),
            ("Reserved / limit", f"{stats['reserved_today']} / {stats['daily_limit']}"),
            ("Sent today", stats["sent_today"]),
            ("Last sent", stats["last_sent_at"] or "—"),
            ("Sends by state", _counts_html(stats["sends"])),
        ]
        return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))

    @admin.action(description="Test SMTP login (or ESP credentials and sender) of selected accounts")
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

    @admin.action(description="Pause selected accounts")
    def pause(self, request: HttpRequest, queryset: QuerySet[SenderAccount]) -> None:
        self._set_status(request, queryset, SenderAccount.Status.PAUSED)

    @admin.action(description="Resume selected accounts")
    def resume(self, request: HttpRequest, queryset: QuerySet[SenderAccount]) -> None:
        self._set_status(request, queryset, SenderAccount.Status.ACTIVE)

    @admin.action(description="Disable selected accounts")
    def disable(self, request: HttpRequest, queryset: QuerySet[SenderAccount]) -> None:
        self._set_status(request, queryset, SenderAccount.Status.DISABLED)

    @admin.action(description="Reset today's limits of selected accounts")
    def reset_limits(self, request: HttpRequest, queryset: QuerySet[SenderAccount]) -> None:
        for account in queryset:
            account_reset_limits(account=account)
        self.message_user(request, f"Limits reset for {queryset.count()} account(s).", messages.SUCCESS)


@admin.register(AccountDailyUsage)
class AccountDailyUsageAdmin(ReadOnlyAdmin):
    list_display = ["account", "day", "reserved"]
    list_select_related = ["account"]
    list_filter = ["day", "account"]
    search_fields = ["account__email"]
    date_hierarchy = "day"
    ordering = ["-day", "account__email"]


# --- campaigns ---------------------------------------------------------------------------------------------


class CampaignAccountInline(admin.TabularInline):
    model = CampaignAccount
    extra = 0
    fields = ["account", "daily_limit", "min_wait_seconds", "usage_day", "usage_reserved"]
    readonly_fields = ["usage_day", "usage_reserved"]
    autocomplete_fields = ["account"]
    verbose_name = "sender account (with this campaign's limits)"
    verbose_name_plural = "sender accounts (with this campaign's limits)"


class SequenceStepInline(admin.TabularInline):
    model = SequenceStep
    extra = 0
    fields = ["order", "delay_seconds", "template", "threaded"]
    autocomplete_fields = ["template"]
    ordering = ["order"]


class SendTestForm(forms.Form):
    step = forms.ModelChoiceField(queryset=SequenceStep.objects.none())
    to_email = forms.EmailField(label="Send to", help_text="Your address; the campaign's recipients get nothing.")
    account = forms.ModelChoiceField(queryset=SenderAccount.objects.order_by("email"), label="Through account")
    lead = forms.IntegerField(
        required=False,
        min_value=1,
        label="Render for lead (id)",
        help_text="Optional: render with this lead's first recipient; empty: sample values.",
    )

    def __init__(self, *args, campaign: Campaign, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.campaign = campaign
        self.fields["step"].queryset = campaign.steps.select_related("template").order_by("order")
        self.fields["step"].label_from_instance = lambda step: f"Step {step.order}: {step.template.name}"

    def clean_lead(self) -> Lead | None:
        lead_id = self.cleaned_data.get("lead")
        if lead_id is None:
            return None
        lead = Lead.objects.filter(campaign=self.campaign, pk=lead_id).first()
        if lead is None:
            raise ValidationError(f"Campaign {self.campaign.pk} has no lead {lead_id}.")
        return lead


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "leads_in_progress", "leads_finished", "leads_stopped", "sent_today",
                    "unknown_sends", "time_zone", "starts_at", "created_at"]  # fmt: skip
    list_filter = ["status", "time_zone", "created_at"]
    search_fields = ["name"]
    ordering = ["-created_at", "-id"]
    inlines = [CampaignAccountInline, SequenceStepInline]
    actions = ["pause", "resume", "reset_progress", "dry_run"]
    readonly_fields = ["status", "progress_panel", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "status", "progress_panel"]}),
        ("Schedule", {"fields": ["starts_at", "ends_at", "time_zone", "send_days", "send_hour_start",
                                 "send_hour_end", "batch_size"]}),
        ("Record", {"fields": ["created_at", "updated_at"]}),
    ]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        return campaign_list()

    @admin.display(description="In progress", ordering="leads_in_progress")
    def leads_in_progress(self, campaign: Campaign) -> int:
        return campaign.leads_in_progress

    @admin.display(description="Finished", ordering="leads_finished")
    def leads_finished(self, campaign: Campaign) -> int:
        return campaign.leads_finished

    @admin.display(description="Stopped", ordering="leads_stopped")
    def leads_stopped(self, campaign: Campaign) -> int:
        return campaign.leads_stopped

    @admin.display(description="Sent today", ordering="sent_today")
    def sent_today(self, campaign: Campaign) -> int:
        return campaign.sent_today

    @admin.display(description="Unknown outcome", ordering="unknown_count")
    def unknown_sends(self, campaign: Campaign) -> int:
        return campaign.unknown_count

    @admin.display(description="Progress")
    def progress_panel(self, campaign: Campaign) -> SafeString | str:
        if not campaign.pk:
            return "—"
        progress = campaign_progress(campaign=campaign)
        unknown = progress["send_records"].get(SendRecord.State.UNKNOWN, 0)
        unknown_url = reverse("admin:campaigns_sendrecord_changelist")
        unknown_link = format_html(
            '<a href="{}?campaign__id__exact={}&amp;state__exact=unknown">{} with unknown outcome</a>',
            unknown_url, campaign.pk, unknown,
        ) if unknown else "none with unknown outcome"  # fmt: skip
        rows = [
            ("Leads", _counts_html(progress["leads"], skip_zero=False)),
            ("Leads by current step", _counts_html({f"step {k}": v for k, v in progress["leads_by_step"].items()})),
            ("Recipients", _counts_html(progress["recipients"])),
            ("Send records", format_html("{} ({})", _counts_html(progress["send_records"]), unknown_link)),
            ("Sent today", progress["sent_today"]),
        ]
        return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Campaign], status: str) -> None:
        changed = 0
        for campaign in queryset:
            try:
                reason = f"{status} by {request_actor(request)} (admin)"
                campaign_set_status(campaign=campaign, status=status, reason=reason)
            except ValidationError as error:
                self.message_user(request, f"{campaign.name}: {' '.join(error.messages)}", messages.ERROR)
            else:
                changed += 1
        if changed:
            self.message_user(request, f"{changed} campaign(s) now {status}.", messages.SUCCESS)

    @admin.action(description="Pause selected campaigns")
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._set_status(request, queryset, Campaign.Status.PAUSED)

    @admin.action(description="Resume (activate) selected campaigns")
    def resume(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._set_status(request, queryset, Campaign.Status.ACTIVE)

    @admin.action(description="Reset progress of selected campaigns…")
    def reset_progress(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> HttpResponse | None:
        if request.POST.get("confirm") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Reset campaign progress?",
                "opts": self.model._meta,
                "campaigns": list(queryset),
            }
            return TemplateResponse(request, "admin/campaigns/campaign/reset_progress.html", context)
        for campaign in queryset:
            count = campaign_reset_progress(campaign=campaign)
            self.message_user(request, f"{campaign.name}: {count} lead(s) start over at step 1.", messages.SUCCESS)
        return None

    @admin.action(description="Dry run selected campaigns (due leads, nothing sent)")
    def dry_run(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            records = campaign_dry_run(campaign_id=campaign.pk)
            errors = sum(1 for record in records if record.error)
            if not records:
                note = "nothing due (only due leads of active campaigns with an active account are dry-run)"
                self.message_user(request, f"{campaign.name}: {note}.", messages.WARNING)
                continue
            level = messages.WARNING if errors else messages.SUCCESS
            self.message_user(
                request,
                f"{campaign.name}: {len(records)} message(s) rendered as dry runs, {errors} with errors.",
                level,
            )

    # The send-test page: /admin/campaigns/campaign/<id>/send-test/, linked from the change page.

    def get_urls(self) -> list:
        info = (self.opts.app_label, self.opts.model_name)
        return [
            path(
                "<path:object_id>/send-test/",
                self.admin_site.admin_view(self.send_test_view),
                name="{}_{}_send_test".format(*info),
            ),
            *super().get_urls(),
        ]

    def send_test_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        campaign = self.get_object(request, object_id)
        if campaign is None:
            raise Http404(f"No campaign with id {object_id!r}.")
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        initial = {"to_email": request.user.email, "account": campaign.accounts.order_by("id").first()}
        form = SendTestForm(request.POST or None, campaign=campaign, initial=initial)
        if request.method == "POST" and form.is_valid():
            step, account = form.cleaned_data["step"], form.cleaned_data["account"]
            to_email = form.cleaned_data["to_email"]
            test = step_send_test(step=step, to_email=to_email, account=account, lead=form.cleaned_data["lead"])
            if test.sent_at:
                text = f"Test of step {step.order} sent to {to_email} through {account.email} ({test.message_id})."
                self.message_user(request, text, messages.SUCCESS)
            else:
                self.message_user(request, f"Test of step {step.order} to {to_email} failed: {test.error}",
                                  messages.ERROR)  # fmt: skip
            return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Send a test of {campaign.name}",
            "opts": self.opts,
            "campaign": campaign,
            "form": form,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/send_test.html", context)


@admin.register(CampaignAccount)
class CampaignAccountAdmin(admin.ModelAdmin):
    list_display = ["campaign", "account", "daily_limit", "min_wait_seconds", "usage_day", "usage_reserved"]
    list_select_related = ["campaign", "account"]
    list_filter = ["campaign"]
    search_fields = ["campaign__name", "account__email"]
    autocomplete_fields = ["campaign", "account"]
    readonly_fields = ["usage_day", "usage_reserved"]


@admin.register(SequenceStep)
class SequenceStepAdmin(admin.ModelAdmin):
    list_display = ["campaign", "order", "template", "delay_seconds", "threaded"]
    list_select_related = ["campaign", "template"]
    list_filter = ["campaign", "threaded"]
    search_fields = ["campaign__name", "template__name"]
    autocomplete_fields = ["campaign", "template"]
    ordering = ["campaign", "order"]


# --- leads and recipients ----------------------------------------------------------------------------------


class RecipientInline(admin.TabularInline):
    model = Recipient
    extra = 0
    fields = ["position", "email", "name", "first_name", "last_name", "company_name", "website", "provider",
              "status", "last_contacted_at", "last_step"]  # fmt: skip
    readonly_fields = ["last_contacted_at", "last_step"]
    ordering = ["position"]


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = ["id", "external_id", "campaign", "state", "current_step", "recipient_count", "first_email",
                    "next_due_at", "last_sent_at"]  # fmt: skip
    list_select_related = ["campaign"]
    list_filter = ["campaign", "state", "current_step"]
    search_fields = ["external_id", "recipients__email"]
    ordering = ["-id"]
    inlines = [RecipientInline]
    actions = ["reset_progress", "stop"]
    readonly_fields = ["state", "stop_reason", "current_step", "last_sent_at", "next_due_at", "created_at"]
    fields = ["campaign", "external_id", "custom_fields", *readonly_fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Lead]:
        return lead_list()

    def get_readonly_fields(self, request: HttpRequest, obj: Lead | None = None) -> list[str]:
        # Moving a lead to another campaign would orphan its send records' meaning.
        return [*self.readonly_fields, "campaign"] if obj else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Lead, form: forms.ModelForm, change: bool) -> None:
        """A new lead is created by the service, due now like imported ones; its recipients (the inline) are
        saved right after. Editing external id or custom fields saves the row."""
        if change:
            super().save_model(request, obj, form, change)
            return
        created = lead_create(campaign=obj.campaign, external_id=obj.external_id, custom_fields=obj.custom_fields)
        instance_adopt(obj, created)

    @admin.display(description="Recipients", ordering="recipient_count")
    def recipient_count(self, lead: Lead) -> int:
        return lead.recipient_count

    @admin.display(description="First recipient", ordering="first_email")
    def first_email(self, lead: Lead) -> str:
        return lead.first_email or "—"

    @admin.action(description="Reset progress of selected leads (start over at step 1)")
    def reset_progress(self, request: HttpRequest, queryset: QuerySet[Lead]) -> None:
        for lead in queryset:
            lead_reset_progress(lead=lead)
        self.message_user(request, f"{queryset.count()} lead(s) start over at step 1, due now.", messages.SUCCESS)

    @admin.action(description="Stop selected leads (no more emails)")
    def stop(self, request: HttpRequest, queryset: QuerySet[Lead]) -> None:
        stopped = leads_stop(leads=queryset, reason=f"stopped by {request_actor(request)} in the admin")
        self.message_user(request, f"{stopped} lead(s) stopped.", messages.SUCCESS)


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin):
    list_display = ["email", "name", "company_name", "lead_link", "campaign_name", "status", "last_contacted_at",
                    "last_step"]  # fmt: skip
    list_select_related = ["lead__campaign"]
    list_filter = ["status", "lead__campaign"]
    search_fields = ["email", "name", "company_name"]
    raw_id_fields = ["lead"]
    readonly_fields = ["last_contacted_at", "last_step", "unsubscribe_token"]
    ordering = ["-id"]

    @admin.display(description="Lead", ordering="lead_id")
    def lead_link(self, recipient: Recipient) -> SafeString:
        url = reverse("admin:campaigns_lead_change", args=[recipient.lead_id])
        return format_html('<a href="{}">{}</a>', url, recipient.lead.external_id or f"lead {recipient.lead_id}")

    @admin.display(description="Campaign", ordering="lead__campaign__name")
    def campaign_name(self, recipient: Recipient) -> str:
        return recipient.lead.campaign.name


# --- what was sent -----------------------------------------------------------------------------------------


@admin.register(SendRecord)
class SendRecordAdmin(SendAttemptAdmin):
    """Filter state = "Unknown outcome" for the sends an operator must decide on (mark sent / failed / resend)."""

    list_display = ["id", "state", "campaign", "recipient", "step_order", "account", "attempts", "handed_over_at",
                    "sent_at", "resolved_by", "updated_at"]  # fmt: skip
    list_select_related = ["campaign", "recipient", "step", "account"]
    list_filter = ["state", "campaign", "account"]
    search_fields = ["recipient__email", "message_id", "subject"]
    fields = ["state", "campaign", "lead", "recipient", "step", "account", "message_id", "subject", "message_text",
              "attempts", "last_error", "next_attempt_at", "claimed_until", "handed_over_at", "sent_at",
              "resolved_by", "created_at", "updated_at"]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="Step", ordering="step__order")
    def step_order(self, record: SendRecord) -> int:
        return record.step.order

    def resolve(self, *, record_id: int, action: str, actor: str) -> None:
        send_record_resolve(record_id=record_id, action=action, actor=actor)

    def after_resend(self, record_id: int) -> None:
        tasks.send_resend.delay_on_commit(record_id)


@admin.register(DryRunRecord)
class DryRunRecordAdmin(ReadOnlyAdmin):
    deletable = True
    list_display = ["id", "campaign", "recipient", "step_order", "account", "subject", "failed", "created_at"]
    list_select_related = ["campaign", "recipient", "step", "account"]
    list_filter = ["campaign"]
    search_fields = ["recipient__email", "subject"]
    ordering = ["-id"]
    fields = ["campaign", "recipient", "step", "account", "subject", "error", "message_text", "created_at"]
    readonly_fields = fields

    @admin.display(description="Step", ordering="step__order")
    def step_order(self, record: DryRunRecord) -> int:
        return record.step.order

    @admin.display(description="Error", boolean=True)
    def failed(self, record: DryRunRecord) -> bool:
        return bool(record.error)

    @admin.display(description="Message (as it would be sent)")
    def message_text(self, record: DryRunRecord) -> SafeString:
        return preformatted(record.message)


@admin.register(OperatorTestSend)
class OperatorTestSendAdmin(ReadOnlyAdmin):
    deletable = True
    list_display = ["id", "to_email", "campaign_name", "step_order", "account", "sent_at", "error", "created_at"]
    list_select_related = ["step__campaign", "account"]
    search_fields = ["to_email", "subject"]
    ordering = ["-id"]
    fields = ["step", "account", "to_email", "lead", "message_id", "subject", "sent_at", "error", "message_text",
              "created_at"]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="Campaign", ordering="step__campaign__name")
    def campaign_name(self, test: OperatorTestSend) -> str:
        return test.step.campaign.name

    @admin.display(description="Step", ordering="step__order")
    def step_order(self, test: OperatorTestSend) -> int:
        return test.step.order

    @admin.display(description="Message")
    def message_text(self, test: OperatorTestSend) -> SafeString:
        return preformatted(test.message)


# --- suppression and activity ------------------------------------------------------------------------------


class SuppressionAddForm(forms.ModelForm):
    value = forms.CharField(max_length=254, help_text="An address (jane@example.com) or a domain (example.com).")

    class Meta:
        model = Suppression
        fields = ["value", "reason"]

    def clean_value(self) -> str:
        kind, value = suppression_parse(self.cleaned_data["value"])  # raises ValidationError with the reason
        self.instance.kind = kind
        return value


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """Add (through `suppression_add`, idempotent) and delete; a suppression is never edited in place."""

    list_display = ["value", "kind", "reason", "created_at"]
    list_filter = ["kind"]
    search_fields = ["value", "reason"]
    ordering = ["-created_at"]

    def has_change_permission(self, request: HttpRequest, obj: Suppression | None = None) -> bool:
        return False

    def get_form(self, request: HttpRequest, obj: Suppression | None = None, **kwargs):
        if obj is None:
            kwargs["form"] = SuppressionAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Suppression | None = None) -> list[str]:
        return ["value", "reason"] if obj is None else ["kind", "value", "reason", "created_at"]

    def save_model(self, request: HttpRequest, obj: Suppression, form: forms.ModelForm, change: bool) -> None:
        saved = suppression_add(value=form.cleaned_data["value"], reason=form.cleaned_data.get("reason", ""))
        instance_adopt(obj, saved)


@admin.register(Activity)
class ActivityAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "campaign", "account", "lead_id", "step_order", "message"]
    list_select_related = ["campaign", "account"]
    list_filter = ["kind", "campaign", "account"]
    search_fields = ["message"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = ["created_at", "kind", "campaign", "lead", "recipient", "account", "step_order", "message",
              "detail_json"]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="Detail")
    def detail_json(self, activity: Activity) -> SafeString:
        return preformatted(json.dumps(activity.detail, indent=2, sort_keys=True, ensure_ascii=False, default=str))
