"""Unsubscribing from event mailings: the link and the RFC 8058 one-click POST in every email, and what the footer
and the pages say, in the email's language.

The texts are a small table here rather than gettext catalogs: they are a handful of strings, chosen by the
contact's language (not the browser's), and need no compiled .mo files in the repository. A language without
texts falls back to its base language (pt-br → pt), then English.
"""

import uuid

from django.conf import settings
from django.db import transaction
from django.utils.html import format_html
from django.utils.safestring import SafeString

from campaigns.services.suppressions import suppression_add
from workorders.models import Contact

UNSUBSCRIBE_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "link": "Unsubscribe",
        "title": "Unsubscribe",
        "question": "Stop all emails to {email}?",
        "button": "Unsubscribe",
        "done_title": "You are unsubscribed",
        "done": "{email} will not receive any more emails from us.",
        "test_title": "Test email",
        "test": "This is the unsubscribe link of a test email. In the real mailing it unsubscribes the recipient; "
        "nothing was changed.",
    },
    "fr": {
        "link": "Se désabonner",
        "title": "Se désabonner",
        "question": "Ne plus envoyer aucun e-mail à {email} ?",
        "button": "Se désabonner",
        "done_title": "Vous êtes désabonné·e",
        "done": "{email} ne recevra plus aucun e-mail de notre part.",
        "test_title": "E-mail de test",
        "test": "Ceci est le lien de désabonnement d'un e-mail de test. Dans l'envoi réel, il désabonne le "
        "destinataire ; rien n'a été modifié.",
    },
    "de": {
        "link": "Abmelden",
        "title": "Abmelden",
        "question": "Keine E-Mails mehr an {email} senden?",
        "button": "Abmelden",
        "done_title": "Sie sind abgemeldet",
        "done": "{email} erhält keine E-Mails mehr von uns.",
        "test_title": "Test-E-Mail",
        "test": "Dies ist der Abmeldelink einer Test-E-Mail. Im echten Versand meldet er den Empfänger ab; es wurde "
        "nichts geändert.",
    },
    "es": {
        "link": "Darse de baja",
        "title": "Darse de baja",
        "question": "¿Dejar de enviar correos a {email}?",
        "button": "Darse de baja",
        "done_title": "Se ha dado de baja",
        "done": "{email} ya no recibirá más correos nuestros.",
        "test_title": "Correo de prueba",
        "test": "Este es el enlace de baja de un correo de prueba. En el envío real da de baja al destinatario; no se "
        "ha cambiado nada.",
    },
}


def unsubscribe_language(language: str) -> str:
    """The language whose texts are used for `language`: itself, its base language, or English."""
    for candidate in (language, language.partition("-")[0]):
        if candidate in UNSUBSCRIBE_TEXTS:
            return candidate
    return "en"


def unsubscribe_link_text(*, language: str) -> str:
    """The footer link's text of an email in `language` (plain text: the message builder escapes it)."""
    return UNSUBSCRIBE_TEXTS[unsubscribe_language(language)]["link"]


def unsubscribe_texts(*, language: str, email: str = "") -> dict[str, SafeString | str]:
    """The footer's link text and the pages' texts in `language`, with `email` (escaped, bold) put in; `lang` is
    the language they are in, for the page's lang attribute."""
    chosen = unsubscribe_language(language)
    texts: dict[str, SafeString | str] = {"lang": chosen}
    for key, text in UNSUBSCRIBE_TEXTS[chosen].items():
        texts[key] = format_html(text.replace("{email}", "{}"), format_html("<strong>{}</strong>", email))
    return texts


def unsubscribe_url(*, contact: Contact | None, language: str) -> str:
    """A contact's own link; without a contact (a Test step's email) the test page in the email's language, which
    unsubscribes no one."""
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    if contact is None:
        return f"{base}/w/u/test/{unsubscribe_language(language)}/"
    return f"{base}/w/u/{contact.unsubscribe_token}/"


def contact_by_unsubscribe_token(*, token: uuid.UUID) -> Contact | None:
    return Contact.objects.filter(unsubscribe_token=token).first()


def contact_unsubscribe(*, contact: Contact) -> bool:
    """Idempotent (True the first time): the contact leaves every segment and the address is suppressed for
    campaigns and mailings alike."""
    with transaction.atomic():
        changed = Contact.objects.filter(id=contact.id, subscribed=True).update(subscribed=False)
        suppression_add(value=contact.email, reason="unsubscribed from event mailings")
    return bool(changed)
