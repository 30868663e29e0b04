"""Runs the dispatcher in the foreground: scan for due leads, claim them, send, repeat (Ctrl-C stops after the
batch in hand). The same services beat and the sending pool run; use it instead of them, or beside them.

  --once            one scan, then exit
  --dry-run         render what is due into dry-run records; sends nothing, claims nothing
  --campaign-id     only this campaign
  --batch-size      leads per batch (default: each campaign's batch size)
  --account-filter  send only through this sender account
"""

import signal
import threading
from collections import Counter

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from campaigns.models import Campaign, SenderAccount
from campaigns.services.batches import lead_batch_send, outcome_counts
from campaigns.services.dispatch import dispatch_due
from campaigns.services.previews import campaign_dry_run
from campaigns.services.smtp import SmtpSessions
from emailsys import clock


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="one scan, then exit")
        parser.add_argument("--dry-run", action="store_true", help="render and record; send nothing")
        parser.add_argument("--verbose", action="store_true", help="print every lead's outcome")
        parser.add_argument("--campaign-id", type=int)
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--account-filter", type=int, help="sender account id to send through")
        parser.add_argument("--interval", type=float, default=settings.CAMPAIGN_DISPATCH_INTERVAL,
                            help="seconds between scans")  # fmt: skip

    def handle(self, *args, **options) -> None:
        campaign_id, account_id = options["campaign_id"], options["account_filter"]
        if campaign_id is not None and not Campaign.objects.filter(id=campaign_id).exists():
            raise CommandError(f"No campaign with id {campaign_id}")
        if account_id is not None and not SenderAccount.objects.filter(id=account_id).exists():
            raise CommandError(f"No account with id {account_id}")
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.is_set():
            if options["dry_run"]:
                records = campaign_dry_run(campaign_id=campaign_id, limit=options["batch_size"] or 100)
                self.stdout.write(f"dry run: {len(records)} email(s) rendered, nothing sent")
                if options["verbose"]:
                    for record in records:
                        outcome = f"ERROR {record.error}" if record.error else record.subject
                        self.stdout.write(f"  lead {record.recipient.lead_id} → {record.recipient.email}: {outcome}")
            else:
                self._scan_and_send(options, stop)
            if options["once"]:
                return
            stop.wait(options["interval"])

    def _scan_and_send(self, options: dict, stop: threading.Event) -> None:
        result = dispatch_due(now=clock.now(), campaign_id=options["campaign_id"], batch_size=options["batch_size"])
        outcomes: Counter[str] = Counter()
        sessions = SmtpSessions()
        try:
            for batch in result.batches:
                if stop.is_set():
                    return  # the rest stay claimed until the lease passes, then are due again
                per_lead = lead_batch_send(
                    lead_ids=batch.lead_ids, sessions=sessions, account_filter=options["account_filter"],
                    claim=batch.claim,
                )  # fmt: skip
                outcomes.update(outcome_counts(per_lead))
                if options["verbose"]:
                    for lead_id, lead_outcomes in per_lead.items():
                        self.stdout.write(f"  lead {lead_id}: {', '.join(lead_outcomes)}")
        finally:
            sessions.close()
        summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items())) or "nothing due"
        self.stdout.write(f"{clock.now():%Y-%m-%d %H:%M:%S} {result.lead_count} lead(s): {summary}")
