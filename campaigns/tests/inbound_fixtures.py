"""The inbound fixtures (data/inbound/*.eml): real-shaped bounces of several MTAs, automatic answers in several
languages, replies and unsubscribe requests, as templates around the send they answer ($ACCOUNT, $RECIPIENT,
$RECIPIENT_DOMAIN, $MESSAGE_ID with <>, $SEND_REF, and $NONCE that makes each rendering's own Message-ID new)."""

import uuid
from pathlib import Path
from string import Template

FIXTURES = Path(__file__).parent / "data" / "inbound"

# What each bounce fixture is (the bench's and the tests' expected answer).
BOUNCE_FIXTURES = {
    "postfix_hard.eml": ("Postfix", True),
    "postfix_soft.eml": ("Postfix", False),
    "exim_hard.eml": ("Exim", True),
    "exim_soft.eml": ("Exim", False),
    "exchange_hard.eml": ("Exchange / Office 365", True),
    "exchange_soft.eml": ("Exchange / Office 365", False),
    "gmail_hard.eml": ("Gmail", True),
    "gmail_soft.eml": ("Gmail", False),
    "qmail_hard.eml": ("qmail", True),
    "sendmail_hard.eml": ("Sendmail", True),
    "sendmail_soft.eml": ("Sendmail", False),
}
AUTO_REPLY_FIXTURES = sorted(path.name for path in FIXTURES.glob("ooo_*.eml"))
REPLY_FIXTURES = sorted(path.name for path in FIXTURES.glob("reply_*.eml"))
UNSUBSCRIBE_FIXTURES = sorted(path.name for path in FIXTURES.glob("unsubscribe_*.eml"))


def fixture_render(name: str, *, account: str, recipient: str, message_id: str, send_reference: str = "") -> bytes:
    """The fixture as the raw bytes a mailbox would receive, around this send (message_id with <>)."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    values = {
        "ACCOUNT": account,
        "RECIPIENT": recipient,
        "RECIPIENT_DOMAIN": recipient.rpartition("@")[2],
        "MESSAGE_ID": message_id,
        "SEND_REF": send_reference or f"c.{message_id.strip('<>')}",
        "NONCE": uuid.uuid4().hex[:12],
    }
    return Template(text).substitute(values).replace("\n", "\r\n").encode("utf-8")
