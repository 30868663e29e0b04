"""Makes an API token for a user and prints its value, once: only a digest is stored.

manage.py create_api_token alice                 # expires after API_TOKEN_TTL_DAYS
manage.py create_api_token alice --expires 30d   # or 12h, 1d12h; "never" for no expiry
"""

import re
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from emailsys.services import api_token_create, api_token_ttl_default

EXPIRES_PATTERN = re.compile(r"(?:\d+[dhm])+")
EXPIRES_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def expires_parse(text: str) -> timedelta | None:
    """ "30d", "12h", "1d12h" → a timedelta; "never" → None. Anything else is a CommandError naming the option."""
    text = text.strip().lower()
    if text == "never":
        return None
    if not EXPIRES_PATTERN.fullmatch(text):
        raise CommandError(f'--expires: {text!r} is not a duration; use e.g. 30d, 12h, 1d12h or "never"')
    parts = re.findall(r"(\d+)([dhm])", text)
    expires_in = sum((timedelta(**{EXPIRES_UNITS[unit]: int(number)}) for number, unit in parts), timedelta())
    if not expires_in:
        raise CommandError("--expires: must be longer than 0")
    return expires_in


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--expires", help='e.g. 30d, 12h or "never" (default: API_TOKEN_TTL_DAYS)')

    def handle(self, *args, username: str, expires: str | None, **options) -> None:
        expires_in = api_token_ttl_default() if expires is None else expires_parse(expires)
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        token, value = api_token_create(user=user, expires_in=expires_in)
        until = f"until {token.expiry:%Y-%m-%d %H:%M} UTC" if token.expiry else "without expiry"
        self.stderr.write(f"API token for {username!r}, valid {until}. Shown once; only its digest is stored:")
        self.stdout.write(value)
