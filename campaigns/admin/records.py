"""What happened, read-only: send records (with the unknown-outcome actions), dry runs, test sends, the
activity log; and the suppression list."""

import json

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils.safestring import SafeString

from campaigns import tasks
from campaigns.models import Activity, DryRunRecord, OperatorTestSend, SendRecord, Suppression
from campaigns.services.sends import send_record_resolve
from campaigns.services.suppressions import suppression_add, suppression_parse
from emailsys.admin import ReadOnlyAdmin, SendAttemptAdmin, instance_adopt, preformatted


@admin.register(SendRecord)
class SendRecordAdmin(SendAttemptAdmin):
    """Filter state = "Unknown outcome" for the sends an operator must decide on (mark sent / failed / resend)."""

    list_display = ["id", "state", "campaign", "recipient", "step_order", "account", "attempts", "handed_over_at",
                    "sent_at", "resolved_by", "updated_at"]  # fmt: skip
    list_select_related = ["campaign", "recipient", "step", "account"]
    list_filter = ["state", "campaign", "account", "step__order", "sent_at", "created_at"]
    search_fields = ["recipient__email", "recipient__company_name", "lead__external_id", "message_id", "subject"]
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
    list_filter = ["kind", "campaign", "account", "created_at"]
    search_fields = ["message", "recipient__email", "lead__external_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = ["created_at", "kind", "campaign", "lead", "recipient", "account", "step_order", "message",
              "detail_json"]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="Detail")
    def detail_json(self, activity: Activity) -> SafeString:
        return preformatted(json.dumps(activity.detail, indent=2, sort_keys=True, ensure_ascii=False, default=str))
