"""Campaigns JSON API (token or session auth; staff with the model permissions, `emailsys.permissions`): views
validate, then call services and selectors.

Routes (campaigns/urls.py, under /api/v1/): campaigns (CRUD, progress, pause, resume), leads (list, retrieve,
create, bulk), accounts (CRUD, pause, resume), templates, steps and suppressions (CRUD), activities and send
records (read-only). Lists read the selectors and filter with `campaigns.filters`; a service refusing (a Django
ValidationError) is a 400 through the project's exception handler, and a refusal because of the state of other
rows (a step leads stand on, a template in use) a 409 with the reason.
"""

from django.db import IntegrityError
from django.db.models import ProtectedError, QuerySet
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns import tasks
from campaigns.filters import (
    ActivityFilter,
    EmailTemplateFilter,
    LeadFilter,
    SendRecordFilter,
    SequenceStepFilter,
    SuppressionFilter,
)
from campaigns.models import (
    Activity,
    Campaign,
    EmailTemplate,
    Lead,
    SenderAccount,
    SendRecord,
    SequenceStep,
    Suppression,
)
from campaigns.selectors import (
    account_list,
    activity_list,
    campaign_list,
    campaign_progress,
    lead_list,
    send_record_list,
)
from campaigns.serializers import (
    MAX_BULK_LEADS,
    AccountStatusSerializer,
    ActivitySerializer,
    CampaignProgressSerializer,
    CampaignSerializer,
    CampaignStatusSerializer,
    EmailTemplateSerializer,
    LeadBulkErrorsSerializer,
    LeadRepliedSerializer,
    LeadSerializer,
    SenderAccountSerializer,
    SendRecordDetailSerializer,
    SendRecordResolveSerializer,
    SendRecordSerializer,
    SequenceStepSerializer,
    SuppressionSerializer,
)
from campaigns.services.accounts import account_set_status
from campaigns.services.leads import leads_check_unique, leads_create
from campaigns.services.ledger import ResolveAction
from campaigns.services.lifecycle import campaign_set_status
from campaigns.services.recipients import recipient_mark_replied
from campaigns.services.sends import send_record_resolve
from campaigns.services.steps import StepChangeRefused, step_delete
from campaigns.services.suppressions import suppression_ensure, suppression_remove
from emailsys.apijson import JSONRenderer
from emailsys.permissions import requires


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class _ProtectedDestroyMixin:
    """Deleting a row that sends still point at is a 409 with the reason, not a 500."""

    protected_hint = ""

    def perform_destroy(self, instance) -> None:
        try:
            instance.delete()
        except ProtectedError as error:
            count = len(error.protected_objects)
            raise Conflict(
                f"{instance._meta.verbose_name.capitalize()} {instance.pk} cannot be deleted: {count} send "
                f"record(s) refer to it. {self.protected_hint}".strip()
            ) from None


class _JsonWhateverTheAcceptHeader(DefaultContentNegotiation):
    """JSON even for a browser asking for HTML (instead of a 406)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


# --- campaigns ---------------------------------------------------------------------------------------------


@extend_schema(tags=["campaigns"])
class CampaignViewSet(_ProtectedDestroyMixin, viewsets.ModelViewSet):
    serializer_class = CampaignSerializer
    queryset = Campaign.objects.none()  # the model, for the schema: `campaign_list` queries the zones at once
    protected_hint = "Pause it instead."

    def get_queryset(self) -> QuerySet[Campaign]:
        return campaign_list()

    def _annotated(self, campaign: Campaign) -> Campaign:
        return campaign_list().get(pk=campaign.pk)

    def perform_create(self, serializer: CampaignSerializer) -> None:
        serializer.instance = self._annotated(serializer.save())

    def perform_update(self, serializer: CampaignSerializer) -> None:
        serializer.instance = self._annotated(serializer.save())

    @extend_schema(responses={200: CampaignProgressSerializer})
    @action(detail=True, methods=["get"], permission_classes=[requires()])
    def progress(self, request: Request, pk: str | None = None) -> Response:
        """Leads by state and step, recipients by status, send records by state and sends today."""
        progress = campaign_progress(campaign=self.get_object())
        return Response(CampaignProgressSerializer(progress).data)

    def _set_status(self, request: Request, new_status: str) -> Response:
        campaign = self.get_object()
        body = CampaignStatusSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reason = body.validated_data["reason"] or f"{new_status} by {request.user.get_username()} via the API"
        campaign_set_status(campaign=campaign, status=new_status, reason=reason)
        return Response(self.get_serializer(self._annotated(campaign)).data)

    @extend_schema(request=CampaignStatusSerializer, responses={200: CampaignSerializer, 400: OpenApiResponse()})
    @action(detail=True, methods=["post"], permission_classes=[requires("campaigns.run_campaign")])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        """Stops sending; leads keep their place. Pausing a completed campaign is refused (400)."""
        return self._set_status(request, Campaign.Status.PAUSED)

    @extend_schema(request=CampaignStatusSerializer, responses={200: CampaignSerializer, 400: OpenApiResponse()})
    @action(detail=True, methods=["post"], permission_classes=[requires("campaigns.run_campaign")])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        """Activates a draft or paused campaign; needs at least one step and one sender account (else 400)."""
        return self._set_status(request, Campaign.Status.ACTIVE)


# --- leads -------------------------------------------------------------------------------------------------


@extend_schema(tags=["leads"])
class LeadViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Leads with their recipients. Create one (POST /leads/) or up to 1000 at once (POST /leads/bulk/)."""

    serializer_class = LeadSerializer
    filterset_class = LeadFilter

    def get_queryset(self) -> QuerySet[Lead]:
        return lead_list().select_related("sender_account").prefetch_related("recipients")

    @extend_schema(request=LeadRepliedSerializer, responses={200: LeadSerializer, 400: OpenApiResponse()})
    @action(detail=True, methods=["post"], permission_classes=[requires("campaigns.operate_lead")])
    def replied(self, request: Request, pk: str | None = None) -> Response:
        """Records that a recipient of the lead replied: no more emails to them, and with the campaign's
        stop_on_reply the lead stops (its stop_reason names who replied and when)."""
        lead = self.get_object()
        body = LeadRepliedSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        recipient = lead.recipients.filter(email=body.validated_data["email"].strip().lower()).first()
        if recipient is None:
            raise ValidationError({"email": [f"Lead {lead.pk} has no recipient with this address."]})
        recipient_mark_replied(
            recipient=recipient, at=body.validated_data.get("replied_at"),
            source=f"marked by {request.user.get_username()} via the API",
        )  # fmt: skip
        return Response(self.get_serializer(self.get_queryset().get(pk=lead.pk)).data)

    def perform_create(self, serializer: LeadSerializer) -> None:
        errors = leads_check_unique(leads=[serializer.validated_data])
        if errors:
            raise ValidationError(errors[0])
        try:
            serializer.save()
        except IntegrityError:
            raise Conflict("Another request created a lead with this external id meanwhile; retry.") from None

    @extend_schema(
        request=LeadSerializer(many=True),
        responses={201: LeadSerializer(many=True), 400: LeadBulkErrorsSerializer},
    )
    @action(detail=False, methods=["post"], permission_classes=[requires("campaigns.add_lead")])
    def bulk(self, request: Request) -> Response:
        """Creates a list of leads, each with its recipients, all or nothing: if any lead is invalid nothing
        is created and the 400 lists each bad lead as {"index": i, "errors": {...}}."""
        items = request.data
        if not isinstance(items, list):
            raise ValidationError({"detail": "Send a JSON list of leads."})
        if not items:
            raise ValidationError({"detail": "The list of leads is empty."})
        if len(items) > MAX_BULK_LEADS:
            raise ValidationError({"detail": f"At most {MAX_BULK_LEADS} leads per request ({len(items)} sent)."})
        context = {**self.get_serializer_context(), "campaigns": self._campaigns_named(items)}
        validated: list[dict | None] = []
        errors: dict[int, dict] = {}
        for index, item in enumerate(items):
            serializer = LeadSerializer(data=item, context=context)
            if serializer.is_valid():
                validated.append(serializer.validated_data)
            else:
                validated.append(None)
                errors[index] = serializer.errors
        errors.update(leads_check_unique(leads=validated))
        if errors:
            body = {
                "detail": f"{len(errors)} of {len(items)} leads are invalid; nothing was created.",
                "errors": [{"index": index, "errors": errors[index]} for index in sorted(errors)],
            }
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        try:
            created = leads_create(leads=validated)
        except IntegrityError:
            raise Conflict("Another request created a lead with one of these external ids meanwhile; retry.") from None
        leads = lead_list().filter(pk__in=[lead.pk for lead in created]).prefetch_related("recipients")
        return Response(LeadSerializer(leads, many=True).data, status=status.HTTP_201_CREATED)

    @staticmethod
    def _campaigns_named(items: list) -> dict[int, Campaign]:
        ids = set()
        for item in items:
            value = item.get("campaign") if isinstance(item, dict) else None
            if isinstance(value, int) and not isinstance(value, bool):
                ids.add(value)
            elif isinstance(value, str) and value.isascii() and value.isdigit():  # "²".isdigit() too
                ids.add(int(value))
        return Campaign.objects.in_bulk(ids)


# --- accounts ----------------------------------------------------------------------------------------------


@extend_schema(tags=["accounts"])
class SenderAccountViewSet(_ProtectedDestroyMixin, viewsets.ModelViewSet):
    """Sender accounts, over SMTP or an ESP (`transport`). `smtp_password` and `esp_secret` are write-only;
    responses carry `has_password` and `has_esp_secret` instead. JSON only: the browsable API would echo a
    submitted secret back into its form after a validation error."""

    serializer_class = SenderAccountSerializer
    queryset = SenderAccount.objects.none()  # the model, for the schema: `account_list` queries the zones at once
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JsonWhateverTheAcceptHeader
    protected_hint = "Pause or disable it instead."

    def get_queryset(self) -> QuerySet[SenderAccount]:
        return account_list()

    def _set_status(self, request: Request, new_status: str) -> Response:
        account = self.get_object()
        body = AccountStatusSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reason = body.validated_data["reason"]
        if new_status != SenderAccount.Status.ACTIVE and not reason:
            reason = f"{new_status} by {request.user.get_username()} via the API"
        account_set_status(account=account, status=new_status, reason=reason)
        return Response(self.get_serializer(account).data)

    @extend_schema(request=AccountStatusSerializer, responses={200: SenderAccountSerializer})
    @action(detail=True, methods=["post"], permission_classes=[requires("campaigns.operate_senderaccount")])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        """No campaign sends through this account until it is resumed."""
        return self._set_status(request, SenderAccount.Status.PAUSED)

    @extend_schema(request=AccountStatusSerializer, responses={200: SenderAccountSerializer})
    @action(detail=True, methods=["post"], permission_classes=[requires("campaigns.operate_senderaccount")])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        """Active again, with the consecutive-failure count cleared."""
        return self._set_status(request, SenderAccount.Status.ACTIVE)


# --- activity and sends ------------------------------------------------------------------------------------


@extend_schema(tags=["activities"])
class ActivityViewSet(viewsets.ReadOnlyModelViewSet):
    """The activity log, newest first."""

    serializer_class = ActivitySerializer
    filterset_class = ActivityFilter

    def get_queryset(self) -> QuerySet[Activity]:
        return activity_list()


@extend_schema(tags=["send records"])
class SendRecordViewSet(viewsets.ReadOnlyModelViewSet):
    """Send records (one per recipient and step), newest first; the detail includes the stored MIME message."""

    filterset_class = SendRecordFilter

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return SendRecordDetailSerializer if self.action == "retrieve" else SendRecordSerializer

    def get_queryset(self) -> QuerySet[SendRecord]:
        return send_record_list(with_message=self.action == "retrieve")

    @extend_schema(request=SendRecordResolveSerializer, responses={200: SendRecordSerializer, 409: OpenApiResponse()})
    @action(detail=True, methods=["post"], permission_classes=[requires("campaigns.resolve_sendrecord")])
    def resolve(self, request: Request, pk: str | None = None) -> Response:
        """An operator's verdict on a send in state "unknown"; any other state is a 409."""
        record = self.get_object()
        body = SendRecordResolveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        verdict = body.validated_data["action"]
        try:
            record = send_record_resolve(record_id=record.pk, action=verdict, actor=request.user.get_username())
        except ValueError as error:
            raise Conflict(str(error)) from None
        if verdict == ResolveAction.RESEND:
            tasks.send_resend.delay_on_commit(record.pk)
        return Response(SendRecordSerializer(record).data)


# --- templates ---------------------------------------------------------------------------------------------


@extend_schema(tags=["templates"])
@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample(
                "A first email",
                request_only=True,
                value={
                    "name": "Intro",
                    "subject": "Hello {{ first_name }}",
                    "body_text": "Hi {{ first_name }},\n\nshall we talk about {{ company_name }}?",
                    "body_html": "",
                },
            )  # fmt: skip
        ],
        responses={201: EmailTemplateSerializer, 400: OpenApiResponse(description="a field that cannot render")},
    ),
    destroy=extend_schema(responses={204: None, 409: OpenApiResponse(description="used by steps or work orders")}),
)
class EmailTemplateViewSet(viewsets.ModelViewSet):
    """Email templates (Jinja2), checked before they are saved (syntax, unknown filters, a sample render within
    the render budget): one that cannot render is a 400 by field. `?search=` looks in name and subject."""

    serializer_class = EmailTemplateSerializer
    queryset = EmailTemplate.objects.order_by("name", "id")
    filterset_class = EmailTemplateFilter

    def perform_destroy(self, instance: EmailTemplate) -> None:
        try:
            instance.delete()
        except ProtectedError:
            raise Conflict(
                f"Template {instance.pk} is used by campaign steps or work orders; change theirs first."
            ) from None


# --- sequence steps ----------------------------------------------------------------------------------------


def _conflict(error: StepChangeRefused) -> Conflict:
    return Conflict(" ".join(error.messages))


@extend_schema(tags=["steps"])
@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample(
                "A follow-up two days later, as a reply",
                request_only=True,
                value={"campaign": 1, "order": 2, "delay_seconds": 172800, "template": 2, "threaded": True},
            )
        ],
    ),
    update=extend_schema(responses={200: SequenceStepSerializer, 409: OpenApiResponse(description="refused")}),
    partial_update=extend_schema(responses={200: SequenceStepSerializer, 409: OpenApiResponse(description="refused")}),
    destroy=extend_schema(responses={204: None, 409: OpenApiResponse(description="refused, with the reason")}),
)
class SequenceStepViewSet(viewsets.ModelViewSet):
    """A campaign's steps, in order (`?campaign=`, `?template=`). Delay, template and threading change at any
    time; the order only while the campaign is a draft; a step of an active campaign, one with send records or
    one in-progress leads stand on is not deleted (409 with the reason): `campaigns.services.steps`."""

    serializer_class = SequenceStepSerializer
    queryset = SequenceStep.objects.select_related("template").order_by("campaign_id", "order")
    filterset_class = SequenceStepFilter

    def perform_create(self, serializer: SequenceStepSerializer) -> None:
        try:
            serializer.save()
        except StepChangeRefused as error:
            raise _conflict(error) from None
        except IntegrityError:
            raise Conflict("Another request added a step with this order meanwhile; retry.") from None

    def perform_update(self, serializer: SequenceStepSerializer) -> None:
        try:
            serializer.save()
        except StepChangeRefused as error:
            raise _conflict(error) from None
        except IntegrityError:
            raise Conflict("Another request gave a step this order meanwhile; retry.") from None

    def perform_destroy(self, instance: SequenceStep) -> None:
        try:
            step_delete(step=instance)
        except StepChangeRefused as error:
            raise _conflict(error) from None
        except ProtectedError:  # a send recorded between the check and the delete
            raise Conflict(f"Step {instance.pk} has send records now; it cannot be deleted.") from None


# --- suppressions ------------------------------------------------------------------------------------------


@extend_schema(tags=["suppressions"])
@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample("An address", request_only=True, value={"value": "Jane@Example.com", "reason": "asked"}),
            OpenApiExample("A whole domain", request_only=True, value={"value": "@example.org", "reason": "legal"}),
        ],
        responses={
            201: SuppressionSerializer,
            200: OpenApiResponse(SuppressionSerializer, description="it was already suppressed: the stored row"),
            400: OpenApiResponse(description="neither an address nor a domain"),
        },
    ),
)
class SuppressionViewSet(viewsets.ModelViewSet):
    """The suppression list (`?kind=`, `?search=`), newest first. Adding goes through `suppression_ensure`
    (normalised, idempotent, audited); a stored suppression's reason may change, its value never; deleting one is
    audited (mail to it may go again)."""

    serializer_class = SuppressionSerializer
    queryset = Suppression.objects.order_by("-created_at", "-id")
    filterset_class = SuppressionFilter

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        suppression, created = suppression_ensure(  # get_or_create: a concurrent add of the same value finds it
            value=serializer.validated_data["value"], reason=serializer.validated_data.get("reason", "")
        )
        return Response(
            self.get_serializer(suppression).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    def perform_destroy(self, instance: Suppression) -> None:
        suppression_remove(suppression=instance)
