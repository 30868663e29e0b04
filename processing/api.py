"""The seed's REST API on DRF, at the site's root (processing/urls.py): GET /results/{email_id}, /emails,
/emails/{email_id}, /stats. Token or session auth and the project's permission classes (emailsys.permissions):
active staff holding processing.view_inboundemail and processing.view_emailresult. Views read the selectors only.

`email_id` is the provider's id, any string: one that names nothing (or could not be stored: too long, a NUL) is
a 404 with a JSON `detail`, never a 500.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emailsys.permissions import ModelPermissions
from processing.filters import EmailFilter
from processing.models import InboundEmail
from processing.selectors import email_get, email_list, inbound_stats, result_get
from processing.serializers import EmailDetailSerializer, EmailSerializer, ResultSerializer, StatsSerializer

EMAIL_ID = OpenApiParameter(
    "email_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The provider's message id (`email_id`)."
)
MAX_EMAIL_ID = InboundEmail._meta.get_field("email_id").max_length


class ViewsResults(BasePermission):
    """Every inbound view shows results too: processing.view_emailresult besides the model's view permission."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.user.has_perm("processing.view_emailresult")


PERMISSIONS = [ModelPermissions, ViewsResults]


def _storable(email_id: str) -> bool:
    return 0 < len(email_id) <= MAX_EMAIL_ID and "\x00" not in email_id


class ResultView(APIView):
    queryset = InboundEmail.objects.none()  # the model whose view permission it needs
    permission_classes = PERMISSIONS

    @extend_schema(
        parameters=[EMAIL_ID],
        responses={200: ResultSerializer, 404: OpenApiResponse(description="Not received or not classified yet.")},
    )
    def get(self, request: Request, email_id: str) -> Response:
        """The message's classification (the seed's structured output); 404 until it exists."""
        result = result_get(email_id=email_id) if _storable(email_id) else None
        if result is None:
            raise NotFound(f"No result for email {email_id[:MAX_EMAIL_ID]!r} (yet).")
        return Response(ResultSerializer(result).data)


class EmailListView(generics.ListAPIView):
    """Stored messages, newest received first, with their result (null until classified); paginated."""

    action = "list"  # the project's list filter backend and permissions key on it
    serializer_class = EmailSerializer
    filterset_class = EmailFilter
    permission_classes = PERMISSIONS

    def get_queryset(self):
        return email_list()


class EmailDetailView(APIView):
    queryset = InboundEmail.objects.none()
    permission_classes = PERMISSIONS

    @extend_schema(parameters=[EMAIL_ID], responses={200: EmailDetailSerializer, 404: OpenApiResponse()})
    def get(self, request: Request, email_id: str) -> Response:
        """One message: parsed fields, text body, raw MIME and the result with its signals."""
        email = email_get(email_id=email_id) if _storable(email_id) else None
        if email is None:
            raise NotFound(f"No email {email_id[:MAX_EMAIL_ID]!r}.")
        return Response(EmailDetailSerializer(email).data)


class StatsView(APIView):
    queryset = InboundEmail.objects.none()
    permission_classes = PERMISSIONS

    @extend_schema(responses={200: StatsSerializer})
    def get(self, request: Request) -> Response:
        """Totals, counts per class and per day (30 days), queue depth, processing time percentiles."""
        return Response(inbound_stats())
