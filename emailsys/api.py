"""What every JSON API of the project shares, and the operations endpoints.

Errors: a Django `ValidationError` raised by a service becomes a 400 with the errors by field
(`api_exception_handler`, REST_FRAMEWORK["EXCEPTION_HANDLER"]), so views call services without catching it;
serializers check the model's own rules with `ModelCleanMixin`. List filters: `emailsys.filters`.
API tokens: `POST /api/v1/auth/login/` trades a staff user's password for a token (shown once),
`POST /api/v1/auth/logout/` revokes the token it is called with.
Input no layer below can take is refused by the parser and JSON field of `emailsys.apijson`. Errors outside
DRF's views under /api/ (unknown URL, a crash) are JSON too (`emailsys.views`, the URLconf's handlers).
"""

import copy

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.exceptions import NON_FIELD_ERRORS, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView, exception_handler

from emailsys.auth import TokenAuthentication
from emailsys.health import system_health_check
from emailsys.permissions import IsActiveStaff
from emailsys.services import api_token_create, api_token_ttl_default

# --- errors ------------------------------------------------------------------------------------------------


def django_errors(error: DjangoValidationError) -> dict[str, list[str]]:
    """A Django ValidationError as DRF's error body ("__all__" becomes "non_field_errors")."""
    messages = error.message_dict if hasattr(error, "error_dict") else {NON_FIELD_ERRORS: error.messages}
    non_field = api_settings.NON_FIELD_ERRORS_KEY
    return {non_field if key == NON_FIELD_ERRORS else key: value for key, value in messages.items()}


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus: a Django ValidationError (a service refusing) is a 400 with `django_errors`, and a
    body over DATA_UPLOAD_MAX_MEMORY_SIZE a JSON 413 (Django would answer its HTML 400 page)."""
    if isinstance(exc, DjangoValidationError):
        exc = serializers.ValidationError(django_errors(exc))
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes, the most this API reads."
        )
    return exception_handler(exc, context)


class ModelCleanMixin:
    """Runs the model's `full_clean` (field validators, unique fields, check constraints) on the would-be row."""

    clean_skip: tuple[str, ...] = ()

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        instance = copy.copy(self.instance) if self.instance is not None else self.Meta.model()
        for name, value in attrs.items():
            if name not in self.clean_skip:
                setattr(instance, name, value)
        try:
            instance.full_clean(exclude=list(self.clean_skip))
        except DjangoValidationError as error:
            raise serializers.ValidationError(django_errors(error)) from None
        return attrs


# --- operations endpoints ----------------------------------------------------------------------------------


@extend_schema(tags=["system"])
class SystemHealthView(APIView):
    """The same verdict as /healthz, for API clients: any active staff user (it shows no rows; /healthz tells
    the same to anyone who can reach it)."""

    permission_classes = [IsActiveStaff]

    @extend_schema(
        responses={200: OpenApiResponse(description="all healthy"), 503: OpenApiResponse(description="unhealthy")}
    )
    def get(self, request: Request) -> Response:
        health = system_health_check()
        return Response(health.as_dict(), status=200 if health.healthy else 503)


# --- API tokens --------------------------------------------------------------------------------------------


class TokenLoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, write_only=True)


class TokenCreatedSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="The token's value: shown this once, stored only as a digest.")
    expiry = serializers.DateTimeField(allow_null=True, help_text="When it stops working; null: never.")
    username = serializers.CharField()


@extend_schema(tags=["auth"])
class TokenLoginView(APIView):
    """A staff user's username and password for a new API token (`Authorization: Token <token>`).

    The password goes through Django's authentication with the HTTP request, so django-axes counts failures
    per username and address like the admin login's, and answers a locked-out pair with a JSON 429."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=TokenLoginSerializer,
        responses={
            201: TokenCreatedSerializer,
            400: OpenApiResponse(description="wrong username or password, or not a staff account"),
            429: OpenApiResponse(description="too many failed logins (Retry-After) or requests"),
        },
    )
    def post(self, request: Request) -> Response:
        login = TokenLoginSerializer(data=request.data)
        login.is_valid(raise_exception=True)
        user = authenticate(request._request, **login.validated_data)
        if user is None or not user.is_staff:
            raise serializers.ValidationError(
                {api_settings.NON_FIELD_ERRORS_KEY: ["Enter the correct username and password of a staff account."]}
            )
        token, value = api_token_create(user=user, expires_in=api_token_ttl_default())
        body = {"token": value, "expiry": token.expiry, "username": user.get_username()}
        return Response(TokenCreatedSerializer(body).data, status=201, headers={"Cache-Control": "no-store"})


@extend_schema(tags=["auth"])
class TokenLogoutView(APIView):
    """Revokes the token this request is authenticated with (other tokens of the user keep working)."""

    authentication_classes = [TokenAuthentication]
    permission_classes = [IsActiveStaff]

    @extend_schema(request=None, responses={204: OpenApiResponse(description="the token no longer works")})
    def post(self, request: Request) -> Response:
        request.auth.delete()
        return Response(status=204)
