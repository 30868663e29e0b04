"""Event mailings' unsubscribe footer and pages follow the contact's language, and the Test step's emails are marked
[TEST] with a link that works and unsubscribes no one: judged by the mail a real SMTP server received and the pages
the links in it answer with."""

import email
import email.policy
from urllib.parse import urlsplit

import pytest

from campaigns.models import Suppression
from emailsys.testing import RecordingSmtpServer
from workorders.models import Contact
from workorders.services.state import workorder_steps_create
from workorders.services.steps import workorder_run
from workorders.tests.factories import ContactFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db(transaction=True)

SUBJECTS = {"en": "", "fr": "Invitation : {{ event_name }}", "de": "Einladung: {{ event_name }}", "es": "Invitación"}
FOOTERS = {"en": "Unsubscribe", "fr": "Se désabonner", "de": "Abmelden", "es": "Darse de baja"}
PAGES = {  # what the page asks, what it says once unsubscribed
    "en": ("Stop all emails to", "You are unsubscribed"),
    "fr": ("Ne plus envoyer aucun e-mail à", "Vous êtes désabonné·e"),
    "de": ("Keine E-Mails mehr an", "Sie sind abgemeldet"),
    "es": ("¿Dejar de enviar correos a", "Se ha dado de baja"),
}


def run_pipeline(smtp: RecordingSmtpServer, **overrides) -> dict[str, list[email.message.EmailMessage]]:
    overrides = {"subjects": SUBJECTS, "auto_approve": True, **overrides}  # about sending, not the review gate
    work_order = WorkOrderFactory(account__smtp_port=smtp.port, **overrides)
    workorder_steps_create(work_order=work_order)
    assert workorder_run(work_order_id=work_order.id) == "complete"
    by_rcpt: dict[str, list[email.message.EmailMessage]] = {}
    for mail in smtp.snapshot():
        (rcpt,) = mail.rcpt_tos
        by_rcpt.setdefault(rcpt, []).append(email.message_from_bytes(mail.content, policy=email.policy.default))
    return by_rcpt


def body(message: email.message.EmailMessage) -> str:
    return message.get_content()


def link_path(message: email.message.EmailMessage) -> str:
    return urlsplit(message["List-Unsubscribe"].strip("<>")).path


def test_each_contact_gets_the_footer_and_the_pages_in_their_language(smtp, client) -> None:
    contacts = {language: ContactFactory(language=language) for language in SUBJECTS}

    received = run_pipeline(smtp)

    for language, contact in contacts.items():
        (message,) = received[contact.email]
        link = message["List-Unsubscribe"].strip("<>")
        assert link.endswith(f"/w/u/{contact.unsubscribe_token}/")
        assert body(message).rstrip().endswith(f"{FOOTERS[language]}: {link}"), body(message)
        question, done = PAGES[language]
        page = client.get(link_path(message)).content.decode()
        assert f'<html lang="{language}">' in page and question in page and contact.email in page
        unsubscribed = client.post(link_path(message), {"List-Unsubscribe": "One-Click"})
        assert unsubscribed.status_code == 200 and done in unsubscribed.content.decode()
    assert Contact.objects.filter(subscribed=True).count() == 0


def test_a_language_without_texts_falls_back_to_its_base_language_then_english(smtp, client) -> None:
    regional, other = ContactFactory(language="fr-ca"), ContactFactory(language="it")

    received = run_pipeline(smtp, subjects={"fr-ca": "", "it": ""})

    assert "Se désabonner: " in body(received[regional.email][0])
    assert "Unsubscribe: " in body(received[other.email][0])
    assert '<html lang="fr">' in client.get(link_path(received[regional.email][0])).content.decode()


def test_the_test_steps_emails_are_marked_and_their_link_works_without_unsubscribing_anyone(smtp, client) -> None:
    tester = ContactFactory(email="tester@example.test", language="de")  # a tester may be a contact too
    work_order_testers = ["tester@example.test", "outsider@example.test"]

    received = run_pipeline(smtp, testers=work_order_testers)

    for address in work_order_testers:
        tests = [message for message in received[address] if message["X-Emailsys-Test"]]
        assert len(tests) == len(SUBJECTS) and all(str(m["Subject"]).startswith("[TEST] ") for m in tests)
        for message in tests:
            path = link_path(message)
            page = client.get(path)
            assert page.status_code == 200, path
            assert client.post(path, {"List-Unsubscribe": "One-Click"}).status_code == 200
        german = next(m for m in tests if str(m["Subject"]).startswith("[TEST] Einladung"))
        assert body(german).rstrip().endswith(f"Abmelden: {german['List-Unsubscribe'].strip('<>')}")
        assert "Dies ist der Abmeldelink einer Test-E-Mail" in client.get(link_path(german)).content.decode()
    tester.refresh_from_db()
    assert tester.subscribed and not Suppression.objects.exists()
