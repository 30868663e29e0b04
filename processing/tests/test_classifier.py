"""The default classifier on real messages: each structural rule, the text model on hand-written mail it never saw,
the unknown threshold, and any input at all (garbage, huge, bad charsets, Python's own email test corpus) gets a
verdict instead of an exception."""

import random
from pathlib import Path

import pytest

from processing.classifier import CLASSES, Verdict, classifier_get
from processing.classifier.default import DefaultClassifier
from processing.parsing import email_parse

STDLIB_EMAIL_DATA = Path("/usr/lib/python3.11/test/test_email/data")


def classify(raw: str | bytes) -> Verdict:
    verdict = classifier_get().classify(email_parse(raw.encode() if isinstance(raw, str) else raw))
    assert verdict.classification in CLASSES
    assert 0.0 <= verdict.confidence <= 1.0
    return verdict


def message(subject: str, body: str, *, sender: str = "Jane Doe <jane@example.org>", headers: str = "") -> str:
    return (
        f"From: {sender}\nTo: me@emailsys.example\nSubject: {subject}\nDate: Mon, 5 Jan 2026 10:00:00 +0000\n"
        f"Message-ID: <m1@example.org>\n{headers}Content-Type: text/plain; charset=utf-8\n\n{body}\n"
    )


DSN = """From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: me@emailsys.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; gone@example.net
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--b1
Content-Type: text/rfc822-headers

From: me@emailsys.example
Subject: Hello

--b1--
"""


def invite(method: str, extra_headers: str = "") -> str:
    return f"""From: Organizer <boss@example.org>
To: me@emailsys.example
Subject: Invitation: Quarterly review
{extra_headers}MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="c1"

--c1
Content-Type: text/plain

Quarterly review, Tuesday 14:00.

--c1
Content-Type: text/calendar; charset=utf-8; method={method}

BEGIN:VCALENDAR
METHOD:{method}
BEGIN:VEVENT
SUMMARY:Quarterly review
DTSTART:20260310T140000Z
END:VEVENT
END:VCALENDAR

--c1--
"""


def test_delivery_status_report_is_a_bounce() -> None:
    verdict = classify(DSN)
    assert (verdict.classification, verdict.signals["rule"]) == ("bounce", "rfc3464_delivery_status")
    assert verdict.confidence >= 0.95


def test_bounce_without_dsn_from_mailer_daemon_with_bounce_subject() -> None:
    raw = message("Mail delivery failed: returning message to sender", "A message that you sent could not be "
                  "delivered to one or more of its recipients.", sender="MAILER-DAEMON@mail.example.net")  # fmt: skip
    assert classify(raw).classification == "bounce"


def test_x_failed_recipients_is_a_bounce() -> None:
    raw = message("Problem with your mail", "See below.", headers="X-Failed-Recipients: gone@example.net\n")
    assert classify(raw).signals["rule"] == "x_failed_recipients"


@pytest.mark.parametrize(
    "headers",
    ["Auto-Submitted: auto-replied\n", "Precedence: auto_reply\n", "X-Autoreply: yes\n", "X-Autorespond: on\n"],
)
def test_rfc3834_and_vendor_headers_make_an_auto_reply(headers: str) -> None:
    raw = message("Re: our proposal", "I am away until Monday.", headers=headers)
    assert classify(raw).classification == "auto_reply"


def test_german_out_of_office_subject_without_headers() -> None:
    raw = message("Abwesenheitsnotiz: Angebot", "Ich bin bis 12. Juni nicht im Büro.")
    verdict = classify(raw)
    assert (verdict.classification, verdict.signals["rule"]) == ("auto_reply", "auto_reply_subject")


def test_auto_submitted_no_and_x_auto_response_suppress_alone_are_not_auto_replies() -> None:
    headers = "Auto-Submitted: no\nX-Auto-Response-Suppress: All\n"
    raw = message(
        "Partnership", "Hi, I'd like to introduce you to Ben, who runs partnerships at Acme.", headers=headers
    )
    assert classify(raw).classification == "intro"


@pytest.mark.parametrize("method", ["REQUEST", "CANCEL", "REPLY"])
def test_calendar_part_with_method_is_a_meeting(method: str) -> None:
    verdict = classify(invite(method))
    assert (verdict.classification, verdict.signals["rule"]) == ("meeting", f"itip_method_{method.lower()}")


def test_newsletter_with_list_unsubscribe_is_a_promotion() -> None:
    headers = "List-Unsubscribe: <https://news.example.com/u/1>\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\n"
    raw = message(
        "This week at Acme", "Our spring sale: 20% off all plans.", sender="news@acme.example", headers=headers
    )
    verdict = classify(raw)
    assert (verdict.classification, verdict.signals["rule"]) == ("promotion", "list_unsubscribe")


def test_in_reply_to_makes_a_reply() -> None:
    raw = message(
        "Re: pricing", "Thanks, could you send the contract?", headers="In-Reply-To: <ours@emailsys.example>\n"
    )
    verdict = classify(raw)
    assert (verdict.classification, verdict.signals["rule"]) == ("reply", "in_reply_to")


def test_reply_that_introduces_someone_is_an_intro() -> None:
    raw = message(
        "Re: hiring",
        "Let me introduce you to Maria Lopez, our head of partnerships, who is the right person for this. "
        "Maria, meet Tom. I'll let you two take it from here.",
        headers="In-Reply-To: <ours@emailsys.example>\n",
    )
    assert classify(raw).classification == "intro"


# Written for this test, not in the corpus (nor variants of it): the model must generalise.
UNSEEN = [
    ("meeting", "Sync on the migration", "Could we get on a call Thursday at 11 to walk through the migration plan? "
                "Happy to send an invite if that time works for you."),
    ("meeting", "Treffen nächste Woche", "Können wir uns nächste Woche am Mittwoch um 10 Uhr zu einem Termin treffen?"),
    ("promotion", "Flash sale: 48 hours only", "Save 35% on every plan this weekend only. Use code FLASH35 at "
                  "checkout. Shop now, offer ends Sunday."),
    ("promotion", "Offre exclusive", "Profitez de -30% sur toute la boutique ce week-end avec le code PROMO30. "
                  "Livraison offerte."),
    ("intro", "Introducing Sam", "I'd like to introduce you to Sam Patel, a friend who leads data science at Quanta. "
              "Sam, meet Olivia. I think you two should talk."),
    ("intro", "Presentación", "Hola, me gustaría presentarte a Marta, que dirige las alianzas en Globex."),
    ("reply", "Re: contract", "Thanks for sending it. Our legal team has a couple of comments, I'll forward them "
              "tomorrow.\n\nOn Mon, 5 Jan 2026, Tom wrote:\n> Please find the contract attached."),
    ("auto_reply", "Away from the office", "Thank you for your message. I am out of the office until 14 March with "
                   "limited access to email. For urgent matters contact my colleague."),
    ("auto_reply", "Absent", "Bonjour, je suis absent du bureau jusqu'au 3 avril. Votre message ne "
               "sera pas transféré."),
    ("bounce", "Delivery has failed", "Your message could not be delivered to sales@example.org. The email address "
               "couldn't be found. 550 5.1.1 recipient not found"),
    ("unknown", "Your package is on its way", "Your order 55123 has shipped and will arrive on Friday. Track your "
                "parcel with the link below."),
]  # fmt: skip


@pytest.mark.parametrize(("label", "subject", "body"), UNSEEN, ids=[f"{u[0]}-{i}" for i, u in enumerate(UNSEEN)])
def test_model_on_unseen_hand_written_mail(label: str, subject: str, body: str) -> None:
    verdict = classify(message(subject, body))
    assert verdict.classification == label, verdict.signals
    assert "model" in verdict.signals


def test_below_the_threshold_the_answer_is_unknown(settings) -> None:
    settings.INBOUND_UNKNOWN_BELOW = 0.999
    strict = DefaultClassifier()
    verdict = strict.classify(email_parse(message("Treffen", "Können wir uns am Mittwoch treffen?").encode()))
    assert verdict.classification == "unknown"
    assert verdict.signals["model"]["probability"] < 0.999


def test_text_that_says_nothing_is_unknown() -> None:
    assert classify(message("qzx", "vlorp trandel quibb zeeno")).classification == "unknown"


def garbage() -> list[bytes]:
    rng = random.Random(13)
    cases = [
        b"",
        b"\n",
        b"\x00" * 100,
        b"From:\n\n",
        b"Subject: =?x-unknown?q?abc?=\n\nbody",
        "Subject: ü\n\nü".encode(),
    ]
    cases += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3000))) for _ in range(150)]
    cases += [
        b"Content-Type: text/plain; charset=x-no-such-charset\n\n\xff\xfe hello",
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n!!!not base64!!!",
        b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/calendar\n\nMETHOD:REQ\n--x",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=y\n\n--y\n"
        b"Content-Type: message/delivery-status\n\nStatus: \xff\n--y--",
        b"Content-Type: text/calendar; method=\n\n\x00\x01",
        b"In-Reply-To: <<<>>>\nReferences: " + b"<a@b> " * 5000 + b"\n\nhi",
        b"Subject: " + b"A" * 200000 + b"\n\n" + b"word " * 1_000_000,
        b"Content-Type: multipart/alternative; boundary=z\n\n" + b"--z\nContent-Type: text/html\n\n<p>" * 2000,
    ]
    return cases


def test_never_raises_on_garbage() -> None:
    for raw in garbage():
        classify(raw)


@pytest.mark.skipif(not STDLIB_EMAIL_DATA.is_dir(), reason="needs libpython3.11-testsuite (make test installs it)")
def test_every_message_of_pythons_email_test_corpus_gets_a_verdict() -> None:
    paths = sorted(STDLIB_EMAIL_DATA.glob("msg_*.txt"))
    assert len(paths) > 40
    verdicts = {path.name: classify(path.read_bytes()) for path in paths}
    assert verdicts["msg_16.txt"].classification == "bounce"  # a real RFC 1894 delivery report in that corpus


def test_discussion_list_reply_with_precedence_bulk_is_not_a_promotion() -> None:
    raw = message("Re: Limiting Perl CPU usage", "Use ulimit in the login class, that works for us.",
                  headers="Precedence: bulk\nX-Loop: lists.example.org\n")  # fmt: skip
    assert classify(raw).classification != "promotion"


def test_invite_inside_a_newsletter_is_left_to_the_text() -> None:
    headers = "List-Unsubscribe: <https://news.example.com/u/1>\n"
    raw = invite("PUBLISH", headers).replace(
        "Quarterly review, Tuesday 14:00.", "Join our free product launch webinar! Register now, seats are limited. "
        "Exclusive 20% launch discount for attendees. Unsubscribe."
    )  # fmt: skip
    verdict = classify(raw)
    assert verdict.classification == "promotion"
    assert verdict.signals["structure"]["calendar"] == "PUBLISH"
