"""What the admins of every app share: read-only admins for rows only services write, the base admin for send
attempts (campaign sends, mailing sends) with the actions on unknown outcomes, and small display helpers.

Nothing is registered here; each app registers its own models.
"""

from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from campaigns.services.ledger import ResolveAction


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


class ReadOnlyAdmin(admin.ModelAdmin):
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
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

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
