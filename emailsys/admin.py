"""What the admins of every app share: actions offered only to who may run them, read-only admins for rows only
services write, the base admin for send attempts (campaign sends, mailing sends) with the actions on unknown
outcomes, and small display helpers.

Each app registers its own models; registered here are only django-celery-beat's periodic tasks admin again, with
permissions on its actions (`PeriodicTaskAdmin`), and the API tokens (django-rest-knox's model, whose own admin
lists digests and shows a new token's value through a message cookie).
"""

from datetime import timedelta
from functools import cache
from typing import Any

from axes import admin as axes_admin
from axes.models import AccessAttempt
from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask
from knox.models import AuthToken

from campaigns.services.ledger import ResolveAction
from emailsys.forms import (
    LanguageMapField,
    StringListField,
    StringListWidget,
    TimeZoneField,
    WeekdaysField,
    duration_formfield,
)
from emailsys.services import api_token_create, api_token_ttl_default


def preformatted(text: str) -> SafeString:
    return format_html('<pre class="preformatted">{}</pre>', text or "—")  # styled in emailsys/pages.css (CSP)


def request_actor(request: HttpRequest) -> str:
    """Who did it, as activity logs and resolved sends record it."""
    return request.user.get_username() or f"user {request.user.pk}"


def instance_adopt(instance: Model, saved: Model) -> None:
    """Makes the admin's form instance the row a create service saved (`save_model` calls the service): the
    admin then logs, redirects to and saves inlines against the saved row."""
    for field in saved._meta.concrete_fields:
        setattr(instance, field.attname, getattr(saved, field.attname))
    instance._state.adding, instance._state.db = False, saved._state.db


@cache
def _custom_codenames(app_label: str) -> frozenset[str]:
    """The custom permissions (model Meta `permissions`) the models of an app declare."""
    models = apps.get_app_config(app_label).get_models()
    return frozenset(codename for model in models for codename, _ in model._meta.permissions)


class ActionPermissionsAdmin(admin.ModelAdmin):
    """Every admin action declares what it needs, and Django offers it (and runs it, on a POST) only to users
    who hold that: `@admin.action(..., permissions=["run_campaign"])` names a custom permission of the model's
    app (campaigns.run_campaign), answered here without a `has_run_campaign_permission` method per admin;
    Django's own "view", "add", "change", "delete" work as usual. A name that is no permission of the app fails
    `manage.py check` (admin.E129), so a typo cannot hide an action or offer it to everyone."""

    def __getattr__(self, name: str) -> Any:
        codename = name.removeprefix("has_").removesuffix("_permission")
        if name.startswith("has_") and name.endswith("_permission") and "opts" in self.__dict__:
            app_label = self.opts.app_label
            if codename in _custom_codenames(app_label):
                return lambda request: request.user.has_perm(f"{app_label}.{codename}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class FriendlyFieldsMixin:
    """Form fields a person can fill for the model fields named here (emailsys.forms): seconds typed as "2d 4h",
    weekdays as checkboxes, time zones from a searchable list, lists and per-language texts as repeatable rows.
    For ModelAdmins and inlines alike; the posted names stay the model fields' names."""

    duration_fields: tuple[str, ...] = ()
    weekday_fields: tuple[str, ...] = ()
    time_zone_fields: tuple[str, ...] = ()
    email_list_fields: tuple[str, ...] = ()
    language_map_fields: tuple[str, ...] = ()

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs):
        name = db_field.name
        common = {"label": db_field.verbose_name.capitalize(), "help_text": db_field.help_text}
        if name in self.duration_fields:
            return duration_formfield(db_field)
        if name in self.weekday_fields:
            return WeekdaysField(label=common["label"])
        if name in self.time_zone_fields:
            # The model's default as the initial choice: without it an add form selects the list's first zone.
            initial = db_field.default if isinstance(db_field.default, str) else None
            return TimeZoneField(label=common["label"], required=not db_field.blank, initial=initial)
        if name in self.email_list_fields:  # the model's help shows the JSON form; the rows need none
            widget = StringListWidget(input_type="email", add_label="Add an address")
            return StringListField(widget=widget, required=not db_field.blank, label=common["label"],
                                   help_text="One address per row; empty rows are ignored.")  # fmt: skip
        if name in self.language_map_fields:
            return LanguageMapField(required=False, label=common["label"],
                                    help_text="One row per enabled language (en, fr, pt-br); an empty text: the "
                                    "template's subject.")  # fmt: skip
        return super().formfield_for_dbfield(db_field, request, **kwargs)


class ReadOnlyAdmin(ActionPermissionsAdmin):
    """Rows written only by services: viewable (and deletable where `deletable`), never added or edited."""

    deletable = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.deletable and super().has_delete_permission(request, obj)


class SendAttemptAdmin(ReadOnlyAdmin):
    """Send records of any kind (campaign sends, mailing sends): the message exactly as handed over (MIME bodies
    loaded on the detail page only), and the actions on sends whose outcome is unknown — mark sent, mark
    failed, resend anyway. A subclass names the service that resolves one (`resolve`) and what follows a resend."""

    actions = ["mark_sent", "mark_failed", "resend"]
    ordering = ["-id"]
    show_full_result_count = False
    resent_note = "queued to be sent again"

    def resolve(self, *, record_id: int, action: str, actor: str) -> None:
        raise NotImplementedError

    def after_resend(self, record_id: int) -> None:
        pass

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        records = super().get_queryset(request)
        match = request.resolver_match
        detail = match is not None and (match.url_name or "").endswith("_change")
        return records if detail else records.defer("message")

    @admin.display(description="Message (exactly as handed over)")
    def message_text(self, record: Any) -> SafeString:
        return preformatted(record.message)

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        """campaigns.resolve_sendrecord, workorders.resolve_mailingsend: one per kind of send."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.resolve_{opts.model_name}")

    def _resolve(self, request: HttpRequest, queryset: QuerySet, verdict: str, done: str) -> None:
        resolved, refused = [], []
        for record_id in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                self.resolve(record_id=record_id, action=verdict, actor=request_actor(request))
            except ValueError as error:
                refused.append(str(error))
                continue
            if verdict == ResolveAction.RESEND:
                self.after_resend(record_id)
            resolved.append(f"#{record_id}")
        if resolved:
            self.message_user(request, f"{len(resolved)} send(s) {done}: {', '.join(resolved)}.", messages.SUCCESS)
        if refused:
            self.message_user(
                request,
                f"Not changed (only sends with an unknown outcome can be resolved): {'; '.join(refused)}.",
                messages.ERROR,
            )

    @admin.action(description="Unknown outcome: mark as sent (it arrived)", permissions=["resolve"])
    def mark_sent(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._resolve(request, queryset, ResolveAction.MARK_SENT, "marked sent")

    @admin.action(description="Unknown outcome: mark as failed (it did not arrive)", permissions=["resolve"])
    def mark_failed(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._resolve(request, queryset, ResolveAction.MARK_FAILED, "marked failed")

    @admin.action(description="Unknown outcome: resend anyway", permissions=["resolve"])
    def resend(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._resolve(request, queryset, ResolveAction.RESEND, self.resent_note)


def counts_html(counts: dict[Any, int], skip_zero: bool = True) -> SafeString | str:
    """ "state: n, …" for a panel; zeros left out unless `skip_zero` is False."""
    shown = [(str(key), value) for key, value in counts.items() if value or not skip_zero]
    return format_html_join(", ", "{}: {}", shown) or "—"


# --- templates ---------------------------------------------------------------------------------------------


# --- django-celery-beat ------------------------------------------------------------------------------------


def permitted_action(base: type[admin.ModelAdmin], name: str, permission: str):
    """A third-party admin's action `name`, offered only to users with `permission` of the model (its own
    declares none, so anyone who may view the list is offered it)."""
    original = getattr(base, name)

    @admin.action(description=original.short_description, permissions=[permission])
    def run(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return original(self, request, queryset)

    run.__name__ = name
    return run


class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    """django-celery-beat's admin: enabling, disabling and running a task need the change permission."""

    enable_tasks = permitted_action(beat_admin.PeriodicTaskAdmin, "enable_tasks", "change")
    disable_tasks = permitted_action(beat_admin.PeriodicTaskAdmin, "disable_tasks", "change")
    toggle_tasks = permitted_action(beat_admin.PeriodicTaskAdmin, "toggle_tasks", "change")
    run_tasks = permitted_action(beat_admin.PeriodicTaskAdmin, "run_tasks", "change")


class AccessAttemptAdmin(axes_admin.AccessAttemptAdmin):
    """django-axes' lockouts: cleaning up expired attempts deletes rows, so it needs the delete permission."""

    cleanup_expired_attempts = permitted_action(axes_admin.AccessAttemptAdmin, "cleanup_expired_attempts", "delete")


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, PeriodicTaskAdmin)
admin.site.unregister(AccessAttempt)
admin.site.register(AccessAttempt, AccessAttemptAdmin)


# --- API tokens --------------------------------------------------------------------------------------------


class AuthTokenCreateForm(forms.ModelForm):
    expires = forms.ChoiceField(
        choices=[
            ("default", "default (API_TOKEN_TTL_DAYS)"),
            ("7", "in 7 days"),
            ("30", "in 30 days"),
            ("90", "in 90 days"),
            ("365", "in a year"),
            ("never", "never"),
        ],
        initial="default",
    )

    class Meta:
        model = AuthToken
        fields = ["user"]

    def expires_in(self) -> timedelta | None:
        choice = self.cleaned_data["expires"]
        if choice == "default":
            return api_token_ttl_default()
        return None if choice == "never" else timedelta(days=int(choice))


# knox is installed before this app, so its admin is registered by now.
admin.site.unregister(AuthToken)


@admin.register(AuthToken)
class AuthTokenAdmin(admin.ModelAdmin):
    """API tokens by user, prefix and expiry; never their value (only a digest is stored). "Add" makes one and shows
    its value on the next page, once; deleting one revokes it."""

    list_display = ["user", "prefix", "created", "expiry", "expired"]
    list_filter = [("expiry", admin.EmptyFieldListFilter)]
    search_fields = ["user__username"]
    ordering = ["-created"]
    raw_id_fields = ["user"]
    form = AuthTokenCreateForm
    readonly_fields = ["user", "prefix", "created", "expiry", "expired"]

    @admin.display(description="prefix")
    def prefix(self, token: AuthToken) -> str:
        return f"{token.token_key[:8]}…"

    @admin.display(description="expired", boolean=True)  # against Django's clock, as knox checks it
    def expired(self, token: AuthToken) -> bool:
        return token.expiry is not None and token.expiry < timezone.now()

    def get_fields(self, request: HttpRequest, obj: AuthToken | None = None) -> list[str]:
        return ["user", "expires"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: AuthToken | None = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: AuthToken | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: AuthToken, form: AuthTokenCreateForm, change: bool) -> None:
        token, value = api_token_create(user=form.cleaned_data["user"], expires_in=form.expires_in())
        instance_adopt(obj, token)
        request._api_token_value = value  # for response_add, this request only

    def response_add(self, request: HttpRequest, obj: AuthToken, post_url_continue: str | None = None) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API token created",
            "token": obj,
            "value": request._api_token_value,
        }
        response = TemplateResponse(request, "admin/knox/authtoken/token_created.html", context)
        response["Cache-Control"] = "no-store"
        return response
