"""Admin for contacts, segments and events. Segment rules are validated by the model's `clean` (the checks in
`workorders.validators`), so a bad rule is a form error on the field, never a server error; counts come from the
selector `segment_count`, one COUNT query per segment shown, and a rule that went bad (a segment it names was
renamed away or deleted outside the admin) shows its error instead of a count."""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet, URLField
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from emailsys.admin import ActionPermissionsAdmin, FriendlyFieldsMixin, SendAttemptAdmin, instance_adopt
from emailsys.live import live_current
from workorders.models import Contact, Event, MailingSend, Segment, WorkOrder, WorkOrderStep
from workorders.selectors import segment_count, segment_sample_emails
from workorders.services import lifecycle
from workorders.services.live import workorder_fragment_id
from workorders.services.mailings import mailing_send_resolve
from workorders.services.segments import segment_referenced_by, segment_rule_contacts, segment_rule_validate
from workorders.services.state import workorder_steps_create

SAMPLE_SIZE = 10


class ContactForm(forms.ModelForm):
    """Normalises as the CSV import does (lower-case email and language) before validation and constraints."""

    class Meta:
        model = Contact
        fields = ("email", "name", "language", "subscribed", "attributes")

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip().lower()

    def clean_language(self) -> str:
        return self.cleaned_data["language"].strip().lower()


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    form = ContactForm
    list_display = ("email", "name", "language", "subscribed", "updated_at")
    list_filter = ("language", "subscribed")
    search_fields = ("email", "name")
    ordering = ("email",)
    readonly_fields = ("created_at", "updated_at")


def _count_text(segment: Segment) -> str:
    try:
        return str(segment_count(segment=segment))
    except ValidationError as error:
        return f"rule error: {'; '.join(error.messages)}"


RULE_HELP = [
    ("always", '{"always": true}', "every subscribed contact"),
    ("language", '{"language": ["en", "fr"]}', "the contact's language is one of these"),
    ("attribute_equals", '{"attribute_equals": {"path": "vip", "value": true}}', "an attribute has this JSON value"),
    ("attribute_exists", '{"attribute_exists": {"path": "registered"}}', "the contact has the attribute"),
    ("attribute_contains", '{"attribute_contains": {"path": "registered", "value": "VT25"}}',
     "a list attribute contains the value"),
    ("in_segment", '{"in_segment": "vip-contacts"}', "matches another segment (by slug)"),
    ("and / or", '{"and": [{"language": "en"}, {"attribute_exists": {"path": "vip"}}]}', "all / any of the rules"),
    ("difference", '{"difference": {"from": {"always": true}, "minus": {"in_segment": "staff"}}}',
     "the first set without the second"),
]  # fmt: skip


class RuleEditor(forms.Textarea):
    """The rule's JSON with, below it, the number of contacts it matches as you type (forms.js posts it to
    `SegmentAdmin.count_view`, debounced) and a panel of the rule kinds with an example of each."""

    def __init__(self) -> None:
        super().__init__(attrs={"class": "rule-editor", "rows": 8, "spellcheck": "false"})

    def render(self, name, value, attrs=None, renderer=None):
        attrs = {**(attrs or {}), "data-count-url": reverse("admin:workorders_segment_count")}
        editor = super().render(name, value, attrs, renderer)
        rows = format_html_join("", "<tr><th>{}</th><td><code>{}</code></td><td>{}</td></tr>", RULE_HELP)
        return format_html(
            '<div class="rule-field">{}'
            '<output class="rule-count" id="{}_live_count" for="{}" aria-live="polite"></output>'
            '<details class="rule-help" open><summary>Rule kinds</summary><p>One JSON object with one key, its '
            "kind. Paths are dotted (<code>registrations.VT25</code>); unsubscribed contacts never match."
            "</p><table>{}</table></details></div>",
            editor,
            attrs.get("id", f"id_{name}"),
            attrs.get("id", f"id_{name}"),
            rows,
        )


class SegmentForm(forms.ModelForm):
    class Meta:
        model = Segment
        fields = ("name", "slug", "description", "rule")
        widgets = {"rule": RuleEditor()}


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    list_display = ("slug", "name", "matching_contacts", "updated_at")
    search_fields = ("slug", "name", "description")
    list_filter = ("updated_at",)
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("matching_contacts", "sample_contacts", "used_by", "created_at", "updated_at")
    fields = ("name", "slug", "description", "rule", "matching_contacts", "sample_contacts", "used_by",
              "created_at", "updated_at")  # fmt: skip

    def get_urls(self) -> list[URLPattern]:
        count = path("count/", self.admin_site.admin_view(self.count_view), name="workorders_segment_count")
        return [count, *super().get_urls()]

    def count_view(self, request: HttpRequest) -> JsonResponse:
        """POST rule (JSON text) and slug: {"count", "sample"} of the contacts it matches now, or 400 {"errors"}
        with every problem of the rule (the form's own checks). Needs the segment view permission; the sample
        addresses also need the contact view permission."""
        if request.method != "POST":
            return _refusal(405, "Use POST.")
        if not self.has_view_permission(request):
            return _refusal(403, "You do not have permission to view segments.")
        slug = request.POST.get("slug", "").strip()
        try:
            rule = json.loads(request.POST.get("rule", ""))
        except ValueError as error:
            return JsonResponse({"errors": [f"Not valid JSON: {error}."]}, status=400)
        segment = Segment.objects.filter(slug=slug).first() if slug else None
        try:
            segment_rule_validate(rule=rule, segment=segment or Segment(slug=slug))
            contacts = segment_rule_contacts(rule=rule, slug=slug)
            count = contacts.count()
        except ValidationError as error:
            problems = error.message_dict if hasattr(error, "error_dict") else {"rule": error.messages}
            return JsonResponse({"errors": problems.get("rule") or [m for ms in problems.values() for m in ms]},
                                status=400)  # fmt: skip
        sample = []
        if request.user.has_perm("workorders.view_contact"):
            sample = list(contacts.order_by("email").values_list("email", flat=True)[:3])
        return JsonResponse({"count": count, "sample": sample})

    @admin.display(description="Matching contacts")
    def matching_contacts(self, segment: Segment) -> str:
        """Eligible now (subscribed and matching the saved rule)."""
        return "-" if segment.pk is None else _count_text(segment)

    @admin.display(description=f"First {SAMPLE_SIZE} matches")
    def sample_contacts(self, segment: Segment) -> str:
        if segment.pk is None:
            return "-"
        try:
            emails = segment_sample_emails(segment=segment, limit=SAMPLE_SIZE)
        except ValidationError:
            return "-"
        return format_html_join(", ", "{}", ((email,) for email in emails)) or "none"

    @admin.display(description="Used by")
    def used_by(self, segment: Segment) -> str:
        users = segment_referenced_by(slug=segment.slug) if segment.pk else []
        return format_html("{}", ", ".join(users)) if users else "-"

    def get_deleted_objects(self, objs: QuerySet | list[Model], request: HttpRequest) -> tuple:
        """A segment another rule names is protected: the admin refuses to delete it and says by whom."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        slugs = {segment.slug for segment in objs}
        for segment in objs:
            users = [slug for slug in segment_referenced_by(slug=segment.slug) if slug not in slugs]
            if users:
                protected = [*protected, f"Segment {segment.slug!r}: used by the rule of {', '.join(users)}"]
        return deleted, counts, perms_needed, protected


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("code", "sub_event", "name", "attendance", "zoom_label", "starts_at")
    list_filter = ("attendance",)
    search_fields = ("code", "sub_event", "name")
    formfield_overrides = {URLField: {"assume_scheme": "https"}}
    ordering = ("code", "sub_event")
    readonly_fields = ("created_at", "updated_at")


class RestartForm(forms.Form):
    step = forms.ChoiceField(choices=WorkOrderStep.Name.choices, help_text="It and every later step run again.")


def _each(request: HttpRequest, queryset: QuerySet[WorkOrder], apply, done: str, **kwargs) -> None:
    """Applies an operation to each selected work order; a refusal is shown, the others still go."""
    for work_order in queryset:
        try:
            apply(work_order_id=work_order.id, **kwargs)
        except ValidationError as error:
            messages.error(request, "; ".join(error.messages))
        else:
            messages.success(request, f"Work order {work_order.id}: {done}.")


# The change page's buttons: JSON endpoint `<id>/live/<action>/` → (permission, lifecycle service).
LIVE_ACTIONS = {
    "start": ("run_workorder", lifecycle.workorder_start),
    "stop": ("run_workorder", lifecycle.workorder_stop),
    "restart": ("run_workorder", lifecycle.workorder_restart),
    "approve": ("approve_workorder", lifecycle.workorder_approve),
}


def _refusal(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


@admin.register(WorkOrder)
class WorkOrderAdmin(FriendlyFieldsMixin, ActionPermissionsAdmin):
    """Adding one, Start, Stop, Restart (from a step chosen on a confirmation page) and Unlock call the lifecycle
    services. The list and the change page are live (templates/live/workorder_*.html, rendered by
    `workorder_fragments` at load and in every message); the change page's buttons post to `live_action_view`."""

    change_list_template = "admin/workorders/workorder/change_list.html"
    change_form_template = "admin/workorders/workorder/change_form.html"
    duration_fields = ("send_interval_seconds", "burst_pause_seconds")
    language_map_fields = ("subjects",)
    email_list_fields = ("testers",)
    list_display = ("id", "event", "stage", "live_status", "live_step", "live_lock", "live_resume")
    list_select_related = ("event",)
    list_filter = ("status", "event", "stage", "account", "auto_approve", "send_continuously", "created_at")
    search_fields = ("event__code", "event__name", "stage", "audience__slug", "account__email")
    actions = ("start", "stop", "restart", "unlock")
    readonly_fields = ("created_by", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("event", "sub_event", "stage", "audience", "account", "template", "subjects")}),
        ("Message", {"fields": ("from_name", "reply_to", "testers", "salutation_by_name")}),
        ("Sending", {"fields": ("auto_approve", "send_continuously", "send_until", "send_interval_seconds",
                                "burst_size", "burst_pause_seconds")}),
        ("Record", {"fields": readonly_fields}),
    )  # fmt: skip

    # --- live list cells -------------------------------------------------------------------------------------

    def get_changelist_instance(self, request: HttpRequest):
        """Reads each shown work order's live payload once (its cells are fragments of it)."""
        changelist = super().get_changelist_instance(request)
        for work_order in changelist.result_list:  # the page's rows, evaluated once and kept by the queryset
            work_order.live_payload = live_current("workorder", work_order.pk)
        return changelist

    def _live_cell(self, work_order: WorkOrder, part: str) -> str:
        payload = getattr(work_order, "live_payload", None) or live_current("workorder", work_order.pk)
        return payload["fragments"][workorder_fragment_id(work_order.pk, part)] if payload else "-"

    @admin.display(description="Status", ordering="status")
    def live_status(self, work_order: WorkOrder) -> str:
        return self._live_cell(work_order, "status")

    @admin.display(description="Step")
    def live_step(self, work_order: WorkOrder) -> str:
        return self._live_cell(work_order, "step")

    @admin.display(description="Lock")
    def live_lock(self, work_order: WorkOrder) -> str:
        return self._live_cell(work_order, "lock")

    @admin.display(description="Resumes", ordering="resume_at")
    def live_resume(self, work_order: WorkOrder) -> str:
        return self._live_cell(work_order, "resume")

    # --- live change page ------------------------------------------------------------------------------------

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        live = self._live_page(request, object_id)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "live": live})

    def _live_page(self, request: HttpRequest, object_id: str) -> dict | None:
        """The panel's fragments as the live messages carry them, and the buttons this user may press."""
        try:
            work_order_id = int(object_id)
        except (TypeError, ValueError):
            return None
        payload = live_current("workorder", work_order_id)
        if payload is None:
            return None
        fragments = payload["fragments"]
        status_id = workorder_fragment_id(work_order_id, "status")
        urls = {action: reverse("admin:workorders_workorder_live_action", args=[work_order_id, action])
                for action in LIVE_ACTIONS}  # fmt: skip
        return {
            "key": payload["key"],
            "status_id": status_id,
            "status": fragments[status_id],
            "panel": fragments[workorder_fragment_id(work_order_id, "panel")],
            "urls": urls,
            "can_run": request.user.has_perm("workorders.run_workorder"),
            "can_approve": request.user.has_perm("workorders.approve_workorder"),
            "step_choices": [(step["name"], step.get("label") or step["name"]) for step in payload["data"]["steps"]],
        }

    def get_urls(self) -> list[URLPattern]:
        live_action = path("<int:work_order_id>/live/<slug:action>/", self.admin_site.admin_view(self.live_action_view),
                           name="workorders_workorder_live_action")  # fmt: skip
        return [live_action, *super().get_urls()]

    def live_action_view(self, request: HttpRequest, work_order_id: int, action: str) -> JsonResponse:
        """A button of the change page (live.js): POST (CSRF-checked by admin_view), the action's permission,
        then the lifecycle service. Answers {"version", "status"} of the row the service returns (the page holds
        its optimistic state until a message of that version), or {"detail"}: 403 without the permission, 404,
        400 for a bad step, 409 for a refused transition (running, lock held, not awaiting approval)."""
        if action not in LIVE_ACTIONS:
            return _refusal(404, f"No such action: {action}.")
        if request.method != "POST":
            return _refusal(405, "Use POST.")
        permission, service = LIVE_ACTIONS[action]
        if not request.user.has_perm(f"workorders.{permission}"):
            return _refusal(403, f"You do not have permission to {action} work orders.")
        if not WorkOrder.objects.filter(id=work_order_id).exists():
            return _refusal(404, f"Work order {work_order_id} does not exist.")
        arguments: dict = {"work_order_id": work_order_id}
        if action == "restart":
            form = RestartForm(request.POST)
            if not form.is_valid():
                return _refusal(400, "Choose the step to restart from.")
            arguments["step"] = form.cleaned_data["step"]
        elif action == "approve":
            arguments["approved_by"] = request.user
        try:
            work_order = service(**arguments)
        except ValidationError as error:
            return _refusal(409, "; ".join(error.messages))
        return JsonResponse({"version": work_order.live_version, "status": work_order.status})

    def save_model(self, request: HttpRequest, obj: WorkOrder, form: forms.ModelForm, change: bool) -> None:
        """A new work order is made by `workorder_create` (its creator, the event's sub-event, its steps, the
        broadcast) from the form's fields, and `obj` becomes that row: the admin goes on with it (log entry,
        redirect). A change is saved in place, with any step it needs (Send-Continuously)."""
        if change:
            super().save_model(request, obj, form, change)
            workorder_steps_create(work_order=obj)
            return
        fields = {name: getattr(obj, name) for name in form.cleaned_data}  # as the form set them, defaults kept
        instance_adopt(obj, lifecycle.workorder_create(created_by=request.user, **fields))

    @admin.action(description="Start", permissions=["run_workorder"])
    def start(self, request: HttpRequest, queryset: QuerySet[WorkOrder]) -> None:
        _each(request, queryset, lifecycle.workorder_start, "started")

    @admin.action(description="Stop", permissions=["run_workorder"])
    def stop(self, request: HttpRequest, queryset: QuerySet[WorkOrder]) -> None:
        _each(request, queryset, lifecycle.workorder_stop, "stop requested")

    @admin.action(description="Unlock", permissions=["unlock_workorder"])
    def unlock(self, request: HttpRequest, queryset: QuerySet[WorkOrder]) -> None:
        _each(request, queryset, lifecycle.workorder_unlock, "unlocked")

    @admin.action(description="Restart from a step…", permissions=["run_workorder"])
    def restart(self, request: HttpRequest, queryset: QuerySet[WorkOrder]) -> HttpResponse | None:
        """First a page to choose the step; its POST (with `confirm`) restarts the selected work orders."""
        form = RestartForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            step = form.cleaned_data["step"]
            _each(request, queryset, lifecycle.workorder_restart, f"restarting from {step}", step=step)
            return None
        context = {**self.admin_site.each_context(request), "title": "Restart work orders from a step",
                   "form": form, "work_orders": queryset, "opts": self.model._meta,
                   "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME}  # fmt: skip
        return TemplateResponse(request, "admin/workorders/workorder/restart.html", context)


@admin.register(MailingSend)
class MailingSendAdmin(SendAttemptAdmin):
    """Every email of event mailings; filter state = "Unknown outcome" for those an operator must decide on."""

    resent_note = "due again: the work order's next Send round sends them"
    list_display = ["id", "state", "work_order", "email", "language", "is_test", "account", "attempts",
                    "handed_over_at", "sent_at", "resolved_by"]  # fmt: skip
    list_select_related = ["work_order__event", "account"]
    list_filter = ["state", "is_test", "event_code", "language", "account", "sent_at", "created_at"]
    search_fields = ["email", "message_id", "provider_message_id", "subject"]
    fields = ["state", "work_order", "contact", "email", "language", "event_code", "sub_event", "stage", "is_test",
              "account", "message_id", "provider_message_id", "subject", "message_text", "attempts", "last_error",
              "next_attempt_at", "claimed_until", "handed_over_at", "sent_at", "resolved_by", "created_at",
              "updated_at"]  # fmt: skip
    readonly_fields = fields

    def resolve(self, *, record_id: int, action: str, actor: str) -> None:
        mailing_send_resolve(record_id=record_id, action=action, actor=actor)
