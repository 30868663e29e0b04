"""Demo data of the operations app: an API token for the demo admin, so the API can be tried at once."""

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token


def demo_load() -> str:
    admins = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("id")
    tokens = [Token.objects.get_or_create(user=admin)[0] for admin in admins[:1]]
    if not tokens:
        return "no admin user, no API token"
    return f"API token for {tokens[0].user.username!r} ready (admin → Auth Token → Tokens)"
