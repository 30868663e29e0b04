"""Connects mailboxes to the provider (the seed's initialize_fakemail.py): for each one our Mailbox row with a new
webhook secret, the provider's subscription to our webhook, and a first sync. Default: every Mailbox we have, or
a demo mailbox when there is none; --mailbox picks addresses. With --test it then sends a few test emails through
the simulator and waits (up to --timeout seconds, printing progress) until each has a classification result;
the exit code is 1 when some never arrived.

    manage.py inbound_connect [--fakemail URL] [--webhook URL] [--mailbox ADDRESS ...] [--test] [--timeout S]
"""

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from processing.demo import DEMO_MAILBOX, sample_emails
from processing.models import EmailResult, Mailbox
from processing.provider_simulator import SimulatorProvider
from processing.providers import ProviderError
from processing.services.mailboxes import mailbox_connect


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fakemail", default="", help="the simulator's base URL (INBOUND_PROVIDER_URL)")
        parser.add_argument("--webhook", default="", help="our webhook URL the provider posts to (INBOUND_WEBHOOK_URL)")
        parser.add_argument("--mailbox", action="append", default=[], help="an address to connect (repeatable)")
        parser.add_argument("--test", action="store_true", help="send test emails and wait for their results")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds --test waits for the results")

    def handle(self, *args, **options) -> None:
        base_url = (options["fakemail"] or settings.INBOUND_PROVIDER_URL).rstrip("/")
        webhook_url = options["webhook"] or settings.INBOUND_WEBHOOK_URL
        provider = SimulatorProvider(base_url=base_url)
        provider_mailboxes = Mailbox.objects.exclude(provider=Mailbox.Provider.IMAP)  # those are polled over IMAP
        addresses = options["mailbox"] or list(provider_mailboxes.order_by("address").values_list("address", flat=True))
        addresses = addresses or [DEMO_MAILBOX]
        for address in addresses:
            try:
                with transaction.atomic():  # a refused subscription leaves no half-connected mailbox
                    mailbox = mailbox_connect(
                        address=address,
                        provider_url=options["fakemail"].rstrip("/"),
                        webhook_url=webhook_url,
                        provider=provider,
                    )
            except ProviderError as error:
                hint = "Is the web server running (make demo), with INBOUND_SIMULATOR_ENABLED?"
                raise CommandError(f"could not connect {address} at {base_url}: {error}\n{hint}") from None
            self.stdout.write(f"Connected {mailbox.address}: {base_url} notifies {webhook_url} (sync requested)")
        if options["test"]:
            self._test(provider=provider, address=addresses[0], timeout=options["timeout"])

    def _test(self, *, provider: SimulatorProvider, address: str, timeout: float) -> None:
        sent = {}
        for payload in sample_emails(address):
            try:
                answer = provider.send_email(payload)
            except ProviderError as error:
                raise CommandError(f"could not send a test email: {error}") from None
            subject = payload.get("subject") or payload["raw"].split("Subject: ", 1)[1].split("\n")[0]
            sent[answer["email_id"]] = subject
            self.stdout.write(f"Sent {answer['email_id']} (history {answer['history_id']}): {subject}")
        deadline = time.monotonic() + timeout
        done: dict[str, EmailResult] = {}
        reported = -1
        while True:
            results = EmailResult.objects.filter(email__email_id__in=list(sent)).select_related("email")
            done = {result.email.email_id: result for result in results}
            if len(done) != reported:
                reported = len(done)
                self.stdout.write(f"  {len(done)}/{len(sent)} classified")
            if len(done) == len(sent) or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        for email_id, subject in sent.items():
            result = done.get(email_id)
            verdict = f"{result.classification} ({result.confidence:.2f})" if result else "NO RESULT"
            self.stdout.write(f"  {email_id}  {verdict:<20} {subject}")
        if len(done) < len(sent):
            raise CommandError(
                f"{len(sent) - len(done)} of {len(sent)} test emails have no result after {timeout:.0f}s: are the "
                "web server and the inbound worker running (make demo)?"
            )
        self.stdout.write(self.style.SUCCESS(f"All {len(sent)} test emails classified."))
