"""Leads and their recipients in the admin; adding a lead goes through the create service."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from campaigns.models import Lead, Recipient
from campaigns.selectors import lead_list
from campaigns.services.leads import lead_create, leads_stop
from campaigns.services.lifecycle import lead_reset_progress
from campaigns.services.recipients import recipient_mark_replied
from emailsys.admin import ActionPermissionsAdmin, instance_adopt, request_actor


class RecipientInline(admin.TabularInline):
    model = Recipient
    extra = 0
    fields = ["position", "email", "name", "first_name", "last_name", "company_name", "website", "provider",
              "status", "last_contacted_at", "last_step"]  # fmt: skip
    readonly_fields = ["last_contacted_at", "last_step"]
    ordering = ["position"]


@admin.register(Lead)
class LeadAdmin(ActionPermissionsAdmin):
    list_display = ["id", "external_id", "campaign", "state", "current_step", "recipient_count", "first_email",
                    "sender_account", "next_due_at", "last_sent_at"]  # fmt: skip
    list_select_related = ["campaign", "sender_account"]
    list_filter = ["campaign", "state", "current_step", "sender_account", "next_due_at", "last_sent_at", "created_at"]
    search_fields = ["external_id", "recipients__email", "recipients__company_name", "recipients__name"]
    ordering = ["-id"]
    inlines = [RecipientInline]
    actions = ["reset_progress", "stop"]
    readonly_fields = ["state", "stop_reason", "current_step", "sender_account", "last_sent_at", "next_due_at",
                       "step_due_at", "created_at"]  # fmt: skip
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

    def save_formset(self, request: HttpRequest, form: forms.ModelForm, formset, change: bool) -> None:
        """A recipient set to replied in the inline is recorded as a reply (it may stop the lead)."""
        replied = [
            recipient_form.instance
            for recipient_form in formset.forms
            if recipient_form.instance.pk and "status" in recipient_form.changed_data
            and recipient_form.instance.status == Recipient.Status.REPLIED
        ]  # fmt: skip
        for recipient in replied:  # saved with its other changes first; the service then records the reply
            recipient.status = Recipient.objects.get(pk=recipient.pk).status
        super().save_formset(request, form, formset, change)
        for recipient in replied:
            recipient_mark_replied(recipient=recipient, source=f"marked by {request_actor(request)} in the admin")

    @admin.display(description="Recipients", ordering="recipient_count")
    def recipient_count(self, lead: Lead) -> int:
        return lead.recipient_count

    @admin.display(description="First recipient", ordering="first_email")
    def first_email(self, lead: Lead) -> str:
        return lead.first_email or "—"

    @admin.action(description="Reset progress of selected leads (start over at step 1)", permissions=["operate_lead"])
    def reset_progress(self, request: HttpRequest, queryset: QuerySet[Lead]) -> None:
        reset = 0
        for lead in queryset:
            try:
                lead_reset_progress(lead=lead)
                reset += 1
            except ValidationError as error:  # e.g. its campaign is completed: that lead only, the rest go on
                self.message_user(request, " ".join(error.messages), messages.ERROR)
        if reset:
            self.message_user(request, f"{reset} lead(s) start over at step 1, due now.", messages.SUCCESS)

    @admin.action(description="Stop selected leads (no more emails)", permissions=["operate_lead"])
    def stop(self, request: HttpRequest, queryset: QuerySet[Lead]) -> None:
        stopped = leads_stop(leads=queryset, reason=f"stopped by {request_actor(request)} in the admin")
        self.message_user(request, f"{stopped} lead(s) stopped.", messages.SUCCESS)


@admin.register(Recipient)
class RecipientAdmin(ActionPermissionsAdmin):
    list_display = ["email", "name", "company_name", "lead_link", "campaign_name", "status", "last_contacted_at",
                    "last_step"]  # fmt: skip
    list_select_related = ["lead__campaign"]
    list_filter = ["status", "lead__campaign", "lead__sender_account", "last_step", "last_contacted_at"]
    search_fields = ["email", "name", "company_name", "lead__external_id"]
    raw_id_fields = ["lead"]
    readonly_fields = ["last_contacted_at", "last_step", "unsubscribe_token"]
    ordering = ["-id"]
    actions = ["mark_replied"]

    def save_model(self, request: HttpRequest, obj: Recipient, form: forms.ModelForm, change: bool) -> None:
        """Setting the status to replied records a reply (it may stop the lead)."""
        replied = change and "status" in form.changed_data and obj.status == Recipient.Status.REPLIED
        if replied:
            obj.status = Recipient.objects.get(pk=obj.pk).status
        super().save_model(request, obj, form, change)
        if replied:
            recipient_mark_replied(recipient=obj, source=f"marked by {request_actor(request)} in the admin")

    @admin.action(
        description="Mark selected recipients as replied (no more emails; stops the lead)", permissions=["operate_lead"]
    )
    def mark_replied(self, request: HttpRequest, queryset: QuerySet[Recipient]) -> None:
        source = f"marked by {request_actor(request)} in the admin"
        marked = sum(recipient_mark_replied(recipient=recipient, source=source) for recipient in queryset)
        self.message_user(request, f"{marked} recipient(s) marked as replied.", messages.SUCCESS)

    @admin.display(description="Lead", ordering="lead_id")
    def lead_link(self, recipient: Recipient) -> SafeString:
        url = reverse("admin:campaigns_lead_change", args=[recipient.lead_id])
        return format_html('<a href="{}">{}</a>', url, recipient.lead.external_id or f"lead {recipient.lead_id}")

    @admin.display(description="Campaign", ordering="lead__campaign__name")
    def campaign_name(self, recipient: Recipient) -> str:
        return recipient.lead.campaign.name


# --- what was sent -----------------------------------------------------------------------------------------
