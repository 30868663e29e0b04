"""Bounce detection rate on the inbound fixtures (campaigns/tests/data/inbound): for each MTA's hard and soft
bounce, whether it is detected as a bounce, of the right kind, for the right address, and tied to our original
send (its Message-ID or X-Emailsys-Send); and that no reply or automatic answer is taken for a bounce. Pure
parsing: no database, no Redis.

With `--corpus DIR` it also reads a directory of real bounces, e.g. a checkout of the BSD-licensed
sisimai/set-of-emails (`maildir/bsd`, 600 bounces of 50 MTAs and providers; not shipped here): each `*.eml` is
one bounce (`rfc3834-*` automatic answers and `arf-*` abuse reports are left out of the bounce count). Per file:
whether a bounce with an address was detected, and whether hard/soft agrees with the first enhanced status code or
SMTP reply code in the file (files with neither count as detected only). `--not DIR` reads non-bounces.

    .venv/bin/python bench/bounces.py [--corpus /path/to/set-of-emails/maildir/bsd] [--not .../maildir/not]
"""

import argparse
import os
import re
import sys
import time
from collections import Counter
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


_FIRST_STATUS = re.compile(rb"\b([45])\.\d{1,3}\.\d{1,3}\b|\b([45])\d\d[ -]")


def corpus_report(directory: Path, non_bounces: Path | None) -> None:
    """Detection on a directory of real bounces, per MTA family (the file name up to its number)."""
    per_family: dict[str, Counter] = {}
    totals = Counter()
    for path in sorted(directory.glob("*.eml")):
        family = re.sub(r"-\d+$", "", path.stem)
        if family.startswith(("rfc3834", "arf")):
            continue
        raw = path.read_bytes()
        report = bounce_parse(email_parse(raw))
        counts = per_family.setdefault(family, Counter())
        counts["files"] += 1
        if report is None or not report.addresses:
            continue
        counts["detected"] += 1
        found = _FIRST_STATUS.search(raw.split(b"\n\n", 1)[-1])
        if found:
            counts["with code"] += 1
            expected_hard = (found.group(1) or found.group(2)) == b"5"
            counts["kind agrees"] += report.addresses[0].hard == expected_hard
    for counts in per_family.values():
        totals.update(counts)
    print(f"\n{'MTA family':<26} {'files':>5} {'detected':>8} {'with code':>9} {'hard/soft agrees':>16}")
    for family, counts in sorted(per_family.items(), key=lambda item: -item[1]["files"]):
        print(f"{family:<26} {counts['files']:>5} {counts['detected']:>8} {counts['with code']:>9} "
              f"{counts['kind agrees']:>16}")  # fmt: skip
    print(f"{'all':<26} {totals['files']:>5} {totals['detected']:>8} {totals['with code']:>9} "
          f"{totals['kind agrees']:>16}")  # fmt: skip
    print(f"real bounces detected: {totals['detected']}/{totals['files']} ({totals['detected'] / totals['files']:.0%});"
          f" hard/soft agrees with the first status code: {totals['kind agrees']}/{totals['with code']}"
          f" ({totals['kind agrees'] / max(1, totals['with code']):.0%})")  # fmt: skip
    automatic = sorted(directory.glob("rfc3834-*.eml"))
    if automatic:
        recognised = sum(bool(auto_reply_detect(email_parse(path.read_bytes()))) for path in automatic)
        not_bounces = sum(bounce_parse(email_parse(path.read_bytes())) is None for path in automatic)
        print(f"RFC 3834 automatic answers recognised: {recognised}/{len(automatic)}, not taken for bounces: "
              f"{not_bounces}/{len(automatic)}")  # fmt: skip
    if non_bounces is not None:
        files = sorted(non_bounces.glob("*.eml"))
        wrong = [path.name for path in files if bounce_parse(email_parse(path.read_bytes())) is not None]
        print(f"non-bounces taken for bounces: {len(wrong)}/{len(files)} {wrong or ''}")


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--corpus", type=Path, help="a directory of real bounces (*.eml)")
    arguments.add_argument("--not", dest="not_bounces", type=Path, help="a directory of non-bounces (*.eml)")
    options = arguments.parse_args()
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
    if options.corpus:
        corpus_report(options.corpus, options.not_bounces)


if __name__ == "__main__":
    main()
