"""Operations endpoints of the JSON API."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emailsys.health import system_health_check


class SystemHealthView(APIView):
    """The same verdict as /healthz, for API clients (staff only)."""

    @extend_schema(
        responses={200: OpenApiResponse(description="all healthy"), 503: OpenApiResponse(description="unhealthy")}
    )
    def get(self, request: Request) -> Response:
        health = system_health_check()
        return Response(health.as_dict(), status=200 if health.healthy else 503)
