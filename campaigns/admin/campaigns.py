"""Campaigns, their steps and templates in the admin: progress from the selectors, the send-test page, resets."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from campaigns.models import (
    Campaign,
    CampaignAccount,
    EmailTemplate,
    Lead,
    SenderAccount,
    SequenceStep,
)
from campaigns.selectors import campaign_list, campaign_row_cells
from campaigns.services.lifecycle import campaign_reset_progress, campaign_set_status
from campaigns.services.live import CAMPAIGN_KIND, campaign_cell_fragments
from campaigns.services.previews import campaign_dry_run, step_send_test, template_sample_preview
from campaigns.services.schedule import campaign_next_send
from campaigns.services.templating import template_check
from emailsys import clock
from emailsys.admin import ActionPermissionsAdmin, FriendlyFieldsMixin, preformatted, request_actor
from emailsys.live import live_current


class EmailTemplateForm(forms.ModelForm):
    """A template is checked before it is saved (`template_check`): its errors show on their fields."""

    class Meta:
        model = EmailTemplate
        fields = ["name", "subject", "body_text", "body_html"]

    def clean(self) -> dict:
        cleaned = super().clean()
        template = EmailTemplate(**{name: cleaned.get(name) or "" for name in ("subject", "body_text", "body_html")})
        for field, message in template_check(template).items():
            if field not in self.errors:
                self.add_error(field, message)
        return cleaned


def _preview_note(preview, context: dict) -> str:
    note = f"Rendered with sample values ({context['name']} <{context['email']}>); custom fields show as [name]."
    if preview.empty_variables:
        note += f" Renders empty: {', '.join(preview.empty_variables)}."
    return note


@admin.register(EmailTemplate)
class EmailTemplateAdmin(admin.ModelAdmin):
    """The change page shows a live preview beside the editor (emailsys/forms.js posts the fields being typed to
    `preview_view` and shows its answer); the read-only preview below is the saved template's."""

    form = EmailTemplateForm
    change_form_template = "admin/campaigns/emailtemplate/change_form.html"
    list_display = ["name", "subject", "step_count", "updated_at"]
    search_fields = ["name", "subject", "body_text"]
    list_filter = ["updated_at"]
    readonly_fields = ["preview", "created_at", "updated_at"]
    fields = ["name", "subject", "body_text", "body_html", "preview", "created_at", "updated_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[EmailTemplate]:
        return super().get_queryset(request).annotate(step_count=Count("steps"))

    @admin.display(description="Used by steps", ordering="step_count")
    def step_count(self, template: EmailTemplate) -> int:
        return template.step_count

    @admin.display(description="Preview of the saved template (sample values)")
    def preview(self, template: EmailTemplate) -> SafeString | str:
        """Rendered within the render budget; a template that cannot render shows its error, never a 500."""
        if not template.pk:
            return "Save to see a preview."
        preview, context = template_sample_preview(template=template)
        if preview.error:
            return format_html('<p class="errornote">{}</p>', preview.error)
        rendered = preview.rendered
        shown = preformatted(f"Subject: {rendered.subject}\n\n{rendered.text or rendered.html}")
        return format_html("<p>{}</p>{}", _preview_note(preview, context), shown)

    def get_urls(self) -> list:
        preview = path(
            "preview/", self.admin_site.admin_view(self.preview_view), name="campaigns_emailtemplate_preview"
        )
        return [preview, *super().get_urls()]

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """POST subject, body_text, body_html (CSRF-checked by admin_view; needs the view permission): the
        rendering with sample values, or 400 {"error"} saying which part fails and why."""
        if request.method != "POST":
            return JsonResponse({"detail": "Use POST."}, status=405)
        if not self.has_view_permission(request):
            return JsonResponse({"detail": "You do not have permission to view email templates."}, status=403)
        fields = {name: request.POST.get(name, "")[:100_000] for name in ("subject", "body_text", "body_html")}
        if not fields["body_text"].strip() and not fields["body_html"].strip():
            return JsonResponse({"error": "Write a text or an HTML body."}, status=400)
        preview, context = template_sample_preview(template=EmailTemplate(name="preview", **fields))
        if preview.error:
            return JsonResponse({"error": preview.error}, status=400)
        rendered = preview.rendered
        return JsonResponse({"subject": rendered.subject, "text": rendered.text, "html": rendered.html,
                             "note": _preview_note(preview, context), "empty": preview.empty_variables})  # fmt: skip


# --- sender accounts ---------------------------------------------------------------------------------------


class CampaignAccountInline(FriendlyFieldsMixin, admin.TabularInline):
    model = CampaignAccount
    duration_fields = ("min_wait_seconds",)
    extra = 0
    fields = ["account", "daily_limit", "min_wait_seconds", "usage_day", "usage_reserved"]
    readonly_fields = ["usage_day", "usage_reserved"]
    autocomplete_fields = ["account"]
    verbose_name = "sender account (with this campaign's limits)"
    verbose_name_plural = "sender accounts (with this campaign's limits)"


class SequenceStepForm(forms.ModelForm):
    """A step with its template chosen, or written right here: a subject and a text body make a new template
    (checked by `template_check` like the template form; saved with the step, named after the campaign and the
    step), so a campaign is built on one page."""

    new_subject = forms.CharField(required=False, max_length=500, label="…or a new template: subject")
    new_body_text = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "class": "step-new-body"}), label="and text body"
    )

    class Meta:
        model = SequenceStep
        fields = ["order", "delay_seconds", "template", "threaded"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["template"].required = False
        self.new_template: EmailTemplate | None = None

    def clean(self) -> dict:
        cleaned = super().clean()
        subject, body = cleaned.get("new_subject", "").strip(), cleaned.get("new_body_text", "").strip()
        if cleaned.get("template") or "template" in self.errors:
            if subject or body:
                self.add_error("new_subject", "Choose a template or write a new one, not both.")
            return cleaned
        if not (subject and body):
            self.add_error("template", "Choose a template, or write a new one: its subject and text body.")
            return cleaned
        template = EmailTemplate(name="", subject=subject, body_text=body)  # named on save, after its campaign
        for field, message in template_check(template).items():
            self.add_error("new_subject" if field == "subject" else "new_body_text", message)
        self.new_template = self.instance.template = template
        return cleaned

    def _new_name(self, order: int | None) -> str:
        campaign = self.instance.campaign.name if self.instance.campaign_id else "New campaign"
        base = f"{campaign} — step {order or '?'}"
        taken = set(EmailTemplate.objects.filter(name__startswith=base).values_list("name", flat=True))
        return next(
            name for n in range(1, len(taken) + 2) if (name := base if n == 1 else f"{base} ({n})") not in taken
        )

    def _get_validation_exclusions(self):
        """The new template is saved with the step (`save`), so the step's foreign key is not checked before."""
        exclusions = super()._get_validation_exclusions()
        if self.new_template is not None:
            exclusions.add("template")
        return exclusions

    def save(self, commit: bool = True) -> SequenceStep:
        if self.new_template is not None and self.new_template.pk is None:
            self.new_template.name = self._new_name(self.instance.order)
            self.new_template.save()
            self.instance.template = self.new_template
        return super().save(commit=commit)


class SequenceStepInline(FriendlyFieldsMixin, admin.TabularInline):
    model = SequenceStep
    form = SequenceStepForm
    duration_fields = ("delay_seconds",)
    extra = 0
    fields = ["order", "delay_seconds", "template", "new_subject", "new_body_text", "threaded"]
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
class CampaignAdmin(FriendlyFieldsMixin, ActionPermissionsAdmin):
    """The list's status and count cells and the change page's panel and activity stream are live fragments
    (campaigns/services/live.py), kept current over the page's socket."""

    change_list_template = "admin/campaigns/campaign/change_list.html"
    time_zone_fields = ("time_zone",)
    weekday_fields = ("send_days",)
    list_display = ["name", "status_cell", "progress_cell", "in_progress_cell", "finished_cell", "stopped_cell",
                    "sent_today_cell", "unknown_cell", "time_zone", "starts_at", "created_at"]  # fmt: skip
    list_filter = ["status", "time_zone", "created_at"]
    search_fields = ["name"]
    ordering = ["-created_at", "-id"]
    inlines = [CampaignAccountInline, SequenceStepInline]
    actions = ["pause", "resume", "reset_progress", "dry_run"]
    readonly_fields = ["next_send", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name"]}),  # the status is the live panel's
        ("Schedule", {"fields": ["next_send", "starts_at", "ends_at", "time_zone", "send_days", "send_hour_start",
                                 "send_hour_end", "batch_size"]}),
        ("Conversations", {"fields": ["sender_policy", "stop_on_reply", "stop_on_domain_reply"]}),
        ("Record", {"fields": ["created_at", "updated_at"]}),
    ]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        return campaign_list()

    @admin.display(description="Next send")
    def next_send(self, campaign: Campaign) -> SafeString | str:
        """When the next email can go out and why not sooner (`campaign_next_send`, as `show_due_leads` says)."""
        if not campaign.pk:
            return "Save the campaign, add steps, leads and an account, then activate it."
        campaign = Campaign.objects.get(pk=campaign.pk)  # as stored: a refused form has set its values on `campaign`
        next_send = campaign_next_send(campaign=campaign, now=clock.now())
        when = next_send.summary(campaign.time_zone).split(". ", 1)[0]
        reasons = format_html_join("", "<li>{}</li>", ((reason,) for reason in next_send.reasons))
        return format_html('<div class="next-send" id="next-send"><strong>{}.</strong><ul>{}</ul></div>', when, reasons)

    def _cell(self, campaign: Campaign, part: str) -> SafeString:
        """One live cell of a `campaign_list` row; the row's cells are rendered once."""
        cells = getattr(campaign, "_live_cells", None)
        if cells is None:
            cells = campaign._live_cells = campaign_cell_fragments(
                campaign.pk, campaign.live_version, campaign_row_cells(campaign)
            )
        return mark_safe(cells[f"campaign-{campaign.pk}-{part}"])  # noqa: S308 - rendered by our templates

    @admin.display(description="Status", ordering="status")
    def status_cell(self, campaign: Campaign) -> SafeString:
        return self._cell(campaign, "status")

    @admin.display(description="Leads done")
    def progress_cell(self, campaign: Campaign) -> SafeString:
        return self._cell(campaign, "progress")

    @admin.display(description="In progress", ordering="leads_in_progress")
    def in_progress_cell(self, campaign: Campaign) -> SafeString:
        return self._cell(campaign, "in-progress")

    @admin.display(description="Finished", ordering="leads_finished")
    def finished_cell(self, campaign: Campaign) -> SafeString:
        return self._cell(campaign, "finished")

    @admin.display(description="Stopped", ordering="leads_stopped")
    def stopped_cell(self, campaign: Campaign) -> SafeString:
        return self._cell(campaign, "stopped")

    @admin.display(description="Sent today", ordering="sent_today")
    def sent_today_cell(self, campaign: Campaign) -> SafeString:
        return self._cell(campaign, "sent-today")

    @admin.display(description="Unknown outcome", ordering="unknown_count")
    def unknown_cell(self, campaign: Campaign) -> SafeString:
        return self._cell(campaign, "unknown")

    def render_change_form(self, request: HttpRequest, context: dict, add=False, change=False, form_url="", obj=None):
        """The live panel of a saved campaign, as it stands (after the admin's own permission checks)."""
        if obj is not None and obj.pk:
            payload = live_current(CAMPAIGN_KIND, obj.pk)
            if payload is not None:
                context["live"] = {"key": payload["key"], "fragments": {
                    part: mark_safe(payload["fragments"][f"{payload['key']}-{part}"])  # noqa: S308 - ours
                    for part in ("status", "panel", "activity")
                }}  # fmt: skip
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

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

    @admin.action(description="Pause selected campaigns", permissions=["run_campaign"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._set_status(request, queryset, Campaign.Status.PAUSED)

    @admin.action(description="Resume (activate) selected campaigns", permissions=["run_campaign"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._set_status(request, queryset, Campaign.Status.ACTIVE)

    @admin.action(description="Reset progress of selected campaigns…", permissions=["run_campaign"])
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

    @admin.action(description="Dry run selected campaigns (due leads, nothing sent)", permissions=["run_campaign"])
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
        """Needs campaigns.send_test_campaign (checked before the lookup: a 404 tells nothing to others)."""
        if not (self.has_view_permission(request) and request.user.has_perm("campaigns.send_test_campaign")):
            raise PermissionDenied
        campaign = self.get_object(request, object_id)
        if campaign is None:
            raise Http404(f"No campaign with id {object_id!r}.")
        initial = {"to_email": request.user.email, "account": campaign.accounts.order_by("id").first()}
        form = SendTestForm(request.POST or None, campaign=campaign, initial=initial)
        if request.method == "POST" and form.is_valid():
            step, account = form.cleaned_data["step"], form.cleaned_data["account"]
            to_email = form.cleaned_data["to_email"]
            result = step_send_test(step=step, to_email=to_email, account=account, lead=form.cleaned_data["lead"])
            test = result.test
            if test.sent_at:
                text = f"Test of step {step.order} sent to {to_email} through {account.email} ({test.message_id})"
                level = messages.WARNING if result.empty_variables else messages.SUCCESS
                self.message_user(request, f"{text}, {result.note}.", level)
            else:
                self.message_user(request, f"Test of step {step.order} to {to_email} failed: {test.error} "
                                           f"({result.note}).", messages.ERROR)  # fmt: skip
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
class CampaignAccountAdmin(FriendlyFieldsMixin, admin.ModelAdmin):
    duration_fields = ("min_wait_seconds",)
    list_display = ["campaign", "account", "daily_limit", "min_wait_seconds", "usage_day", "usage_reserved"]
    list_select_related = ["campaign", "account"]
    list_filter = ["campaign"]
    search_fields = ["campaign__name", "account__email"]
    autocomplete_fields = ["campaign", "account"]
    readonly_fields = ["usage_day", "usage_reserved"]


@admin.register(SequenceStep)
class SequenceStepAdmin(FriendlyFieldsMixin, admin.ModelAdmin):
    duration_fields = ("delay_seconds",)
    list_display = ["campaign", "order", "template", "delay_seconds", "threaded"]
    list_select_related = ["campaign", "template"]
    list_filter = ["campaign", "threaded"]
    search_fields = ["campaign__name", "template__name"]
    autocomplete_fields = ["campaign", "template"]
    ordering = ["campaign", "order"]


# --- leads and recipients ----------------------------------------------------------------------------------
