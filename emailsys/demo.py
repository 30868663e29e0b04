"""Demo data of the operations app: an API token for the demo admin, so the API can be tried at once."""

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone
from knox.models import AuthToken

from emailsys.services import api_token_create, api_token_ttl_default


def demo_load() -> str:
    """The token's value is in the summary the first time only (it is stored as a digest); later runs say how
    to make another."""
    admin = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("id").first()
    if admin is None:
        return "no admin user, no API token"
    username = admin.get_username()
    valid = Q(expiry__isnull=True) | Q(expiry__gt=timezone.now())
    if AuthToken.objects.filter(valid, user=admin).exists():
        return (
            f"{username!r} already has an API token (shown when it was made); "
            f"another: python manage.py create_api_token {username}"
        )
    _, value = api_token_create(user=admin, expires_in=api_token_ttl_default())
    return f"API token for {username!r} (shown once, copy it): Authorization: Token {value}"
