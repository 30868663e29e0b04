"""Contacts from CSV: upsert by email, attributes merged, bad rows reported by line.

UTF-8 (a BOM from Excel is fine), comma-separated, first line a header::

    email,name,language,subscribed,attributes

`email` is required, the other columns are optional and may come in any order. `language` is a code such as
en, fr or pt-br (new contacts default to en); `subscribed` is yes/no (true/false, 1/0; new contacts default to
yes); `attributes` is a JSON object, e.g. ``{"registered": ["VT2025"], "vip": true}``. Any other column is
a text attribute under its column name (``vip`` → ``{"vip": "yes"}``)::

    email,name,language,subscribed,attributes,city
    ana@example.org,Ana Silva,pt-br,yes,"{""registered"": [""VT2025""]}",Lisbon
    bob@example.org,Bob,en,,,

Bad rows (invalid email, unknown language code, attributes that are not a JSON object, a value longer than
its field, an email already on an earlier line; a line that is not UTF-8, holds a NUL byte or a value over
128 KiB) are reported with their line number (the header is line 1)
and skipped; the good rows are imported. Importing again never duplicates: contacts match on the email,
case-insensitively (emails are stored lower-case). For an existing contact an empty cell changes nothing,
a filled one replaces the value, and attributes are merged: nested objects key by key, any other value
(text, number, list) replaced by the file's. An import can unsubscribe a contact but never resubscribes
one who unsubscribed (that is the contact's choice, not the file's).
"""

import json
from dataclasses import dataclass
from typing import IO, Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction

from audit.actions import AuditAction
from audit.services import audit_record
from emailsys import clock
from emailsys.imports import CsvRecord, CsvRecords, ImportReport
from workorders.models import Contact
from workorders.validators import validate_language

CONTACT_COLUMNS = ("email", "name", "language", "subscribed", "attributes")
BATCH_SIZE = 1000
TRUE_TEXTS = {"yes", "y", "true", "1"}
FALSE_TEXTS = {"no", "n", "false", "0"}
# Imports take this transaction-level advisory lock, so two imports never race to create the same email.
IMPORT_LOCK_KEY = 0x636F6E74  # "cont"


@dataclass
class _ContactRow:
    line: int
    email: str
    name: str
    language: str
    subscribed: bool | None  # None: the cell was empty
    attributes: dict[str, Any]


def _max_length(name: str) -> int:
    return Contact._meta.get_field(name).max_length


def _csv_row_parse(*, record: CsvRecord, extra_columns: list[str]) -> _ContactRow:
    """One validated row, or ValueError with the reason shown to the user."""
    if record.surplus:
        raise ValueError(f"{record.surplus} more value(s) than the header has columns")
    values = {name: record.values.get(name, "").strip() for name in CONTACT_COLUMNS}
    email = values["email"].lower()
    if not email:
        raise ValueError("email is empty")
    try:
        validate_email(email)
    except ValidationError:
        raise ValueError(f"invalid email {values['email']!r}") from None
    for name in ("email", "name"):
        if len(values[name]) > _max_length(name):
            raise ValueError(f"{name} is longer than {_max_length(name)} characters")
    language = values["language"].lower()
    if language:
        try:
            validate_language(language)
        except ValidationError:
            raise ValueError(f"language {values['language']!r} is not a code such as en, fr or pt-br") from None
    subscribed_text = values["subscribed"].lower()
    if subscribed_text and subscribed_text not in TRUE_TEXTS | FALSE_TEXTS:
        raise ValueError(f"subscribed {values['subscribed']!r} is not yes or no")
    attributes: dict[str, Any] = {}
    if values["attributes"]:
        try:
            attributes = json.loads(values["attributes"])
        except json.JSONDecodeError as error:
            raise ValueError(f"attributes is not valid JSON ({error.msg} at character {error.pos + 1})") from None
        if not isinstance(attributes, dict):
            raise ValueError('attributes must be a JSON object, e.g. {"vip": true}')
    for name in extra_columns:
        value = record.values[name].strip()
        if value:
            attributes[name] = value
    subscribed = None if not subscribed_text else subscribed_text in TRUE_TEXTS
    return _ContactRow(record.line, email, values["name"], language, subscribed, attributes)


def _csv_rows(*, file: IO[bytes] | IO[str], report: ImportReport) -> dict[str, _ContactRow]:
    """Good rows by email, in file order; bad rows go into the report."""
    records = CsvRecords(file, required=("email",), example="email,name,language,...", errors=report.errors)
    extra_columns = [name for name in records.header if name and name not in CONTACT_COLUMNS]
    rows: dict[str, _ContactRow] = {}
    for record, parsed in records.parsed(lambda record: _csv_row_parse(record=record, extra_columns=extra_columns)):
        if parsed.email in rows:
            report.errors.append((record.line, f"email {parsed.email!r} is already on line {rows[parsed.email].line}"))
            continue
        rows[parsed.email] = parsed
    return rows


def attributes_merge(existing: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """`incoming` over `existing`: objects merged key by key (recursively), any other value replaced."""
    merged = dict(existing)
    for key, value in incoming.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = attributes_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _contact_apply(contact: Contact, row: _ContactRow) -> bool:
    """Applies the row's filled cells to an existing contact; True when something changed."""
    before = (contact.name, contact.language, contact.subscribed, contact.attributes)
    if row.name:
        contact.name = row.name
    if row.language:
        contact.language = row.language
    if row.subscribed is False:
        contact.subscribed = False
    contact.attributes = attributes_merge(contact.attributes, row.attributes)
    if before == (contact.name, contact.language, contact.subscribed, contact.attributes):
        return False
    contact.updated_at = clock.now()  # bulk_update does not apply auto_now
    return True


def contacts_import_csv(*, file: IO[bytes] | IO[str]) -> ImportReport:
    """Imports contacts from CSV (format in the module docstring); idempotent per file.

    Bad rows are reported, not fatal (`emailsys.imports.CsvRecords`); a file whose header is unusable (no email
    column, empty, not UTF-8) raises ValidationError and imports nothing. One transaction with bulk writes (a
    few queries per 1000 rows), under an advisory lock that serialises imports, with the existing contacts' rows
    locked so an admin edit in between is not overwritten by stale values.
    """
    report = ImportReport()
    rows = _csv_rows(file=file, report=report)
    emails = list(rows)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [IMPORT_LOCK_KEY])
        existing: dict[str, Contact] = {}
        for start in range(0, len(emails), BATCH_SIZE):
            chunk = emails[start : start + BATCH_SIZE]
            for contact in Contact.objects.select_for_update().filter(email__in=chunk).order_by("pk"):
                existing[contact.email] = contact
        to_create = [
            Contact(email=row.email, name=row.name, language=row.language or "en",
                    subscribed=row.subscribed is not False, attributes=row.attributes)
            for email, row in rows.items()
            if email not in existing
        ]  # fmt: skip
        to_update = [contact for email, contact in existing.items() if _contact_apply(contact, rows[email])]
        Contact.objects.bulk_create(to_create, batch_size=BATCH_SIZE)
        Contact.objects.bulk_update(
            to_update, ["name", "language", "subscribed", "attributes", "updated_at"], batch_size=BATCH_SIZE
        )
        report.created, report.updated = len(to_create), len(to_update)
        report.unchanged = len(existing) - len(to_update)
        audit_record(action=AuditAction.CONTACTS_IMPORT, target=Contact, detail=report.counts())
    return report
