"""Bounce detection rate on the inbound fixtures (campaigns/tests/data/inbound): for each MTA's hard and soft
bounce, whether it is detected as a bounce, of the right kind, for the right address, and tied to our original
send (its Message-ID or X-Emailsys-Send); and that no reply or automatic answer is taken for a bounce. Pure
parsing: no database, no Redis.

    .venv/bin/python bench/bounces.py
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailsys.settings.test")

import django  # noqa: E402

django.setup()

from campaigns.services.inbound_detect import auto_reply_detect, bounce_parse, send_reference_parse  # noqa: E402
from campaigns.tests.inbound_fixtures import (  # noqa: E402
    AUTO_REPLY_FIXTURES,
    BOUNCE_FIXTURES,
    REPLY_FIXTURES,
    UNSUBSCRIBE_FIXTURES,
    fixture_render,
)
from processing.parsing import email_parse  # noqa: E402

ACCOUNT, RECIPIENT, MESSAGE_ID = "sales@sender.test", "pat.doe@recipient.test", "<176.1.abc@sender.test>"


def main() -> None:
    rows, correct = [], {True: 0, False: 0}
    totals = {True: 0, False: 0}
    started = time.perf_counter()
    for name, (mta, hard) in BOUNCE_FIXTURES.items():
        parsed = email_parse(fixture_render(name, account=ACCOUNT, recipient=RECIPIENT, message_id=MESSAGE_ID))
        report = bounce_parse(parsed)
        found = [address for address in (report.addresses if report else []) if address.email == RECIPIENT]
        kind_ok = bool(found) and found[0].hard == hard
        reference = send_reference_parse(report.send_reference) if report and report.send_reference else None
        linked = bool(report) and (MESSAGE_ID in report.message_ids or (reference or ("", ""))[1] == MESSAGE_ID)
        ok = kind_ok and linked
        totals[hard] += 1
        correct[hard] += ok
        detected = "no" if not report else ("hard" if found and found[0].hard else "soft" if found else "other")
        status = found[0].status if found else ""
        rows.append((name, mta, "hard" if hard else "soft", detected, status or "-", "yes" if linked else "no", ok))
    false_positives = []
    for name in [*AUTO_REPLY_FIXTURES, *REPLY_FIXTURES, *UNSUBSCRIBE_FIXTURES]:
        parsed = email_parse(fixture_render(name, account=ACCOUNT, recipient=RECIPIENT, message_id=MESSAGE_ID))
        if bounce_parse(parsed) is not None:
            false_positives.append(name)
    auto_missed = [
        name
        for name in AUTO_REPLY_FIXTURES
        if not auto_reply_detect(
            email_parse(fixture_render(name, account=ACCOUNT, recipient=RECIPIENT, message_id=MESSAGE_ID))
        )
    ]
    elapsed = time.perf_counter() - started

    print(f"{'fixture':<24} {'MTA':<22} {'expected':<8} {'detected':<8} {'status':<7} {'linked':<6} ok")
    for name, mta, expected, detected, status, linked, ok in rows:
        print(f"{name:<24} {mta:<22} {expected:<8} {detected:<8} {status:<7} {linked:<6} {'✓' if ok else '✗'}")
    print()
    both = correct[True] + correct[False]
    print(f"hard bounces detected correctly: {correct[True]}/{totals[True]}")
    print(f"soft bounces detected correctly: {correct[False]}/{totals[False]}")
    print(f"bounce detection rate:           {both}/{totals[True] + totals[False]} "
          f"({both / (totals[True] + totals[False]):.0%})")  # fmt: skip
    others = len(AUTO_REPLY_FIXTURES) + len(REPLY_FIXTURES) + len(UNSUBSCRIBE_FIXTURES)
    print(f"non-bounces taken for bounces:   {len(false_positives)}/{others} {false_positives or ''}")
    print(f"automatic answers recognised:    {len(AUTO_REPLY_FIXTURES) - len(auto_missed)}/{len(AUTO_REPLY_FIXTURES)} "
          f"{auto_missed or ''}")  # fmt: skip
    print(f"time: {elapsed * 1000:.0f} ms for {len(rows) + len(false_positives) + len(AUTO_REPLY_FIXTURES) * 2} parses")


if __name__ == "__main__":
    main()
