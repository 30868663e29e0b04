"""Imports: leads from CSV, whole campaigns from JSON or YAML.

Leads CSV
---------
UTF-8 (a BOM from Excel is fine), comma-separated, first line a header::

    lead_id,email,name,first_name,last_name,company_name,website,provider

`lead_id` and `email` are required columns and must be filled in on every row; the others may be absent or
empty. Any other column is a custom lead field, available to templates by its column name. One row is one
recipient; rows with the same `lead_id` form one lead whose recipients are emailed in file order.
`lead_id` is your id, stored as the lead's external id::

    lead_id,email,first_name,company_name,industry
    acme,jane@acme.example,Jane,Acme Inc,logistics
    acme,joe@acme.example,Joe,Acme Inc,logistics
    globex,hank@globex.example,Hank,Globex,energy

Names are stored as given (trimmed): a file with first_name and last_name but no name column leaves `name`
empty, and the To: header is built from first and last name at send time.

Bad rows (invalid email, empty lead_id, a value longer than its field, the same email twice for one lead; a
line that is not UTF-8, holds a NUL byte or a value over 128 KiB) are reported with their line number (the
header is line 1) and skipped; the good rows are imported. Importing the same file again creates nothing:
leads match on (campaign, lead_id), recipients on (lead, email); matching rows update the recipient fields
the file has columns for (a column the file lacks is left alone) and fill custom fields. The report counts
rows created, updated and unchanged (nothing differed, nothing written). New recipients of an existing lead
are added after its current ones. New leads start in progress at step 1, due now.

Campaign JSON / YAML
--------------------
A campaign with its steps, templates and sender accounts, created in one transaction after everything was
validated (errors name their place, e.g. ``steps[1].template.subject: This field cannot be blank.``)::

    name: Spring outreach              # required; must not exist yet
    status: draft                      # draft (default), active or paused
    time_zone: Europe/Berlin           # default UTC; send window and "today" are in this zone
    batch_size: 20                     # leads per dispatcher batch, default 20
    starts_at: 2025-04-01T08:00:00+02:00   # optional, ISO 8601; without an offset: in time_zone
    ends_at: 2025-06-30T18:00:00+02:00     # optional, after starts_at
    send_window:                       # optional
      days: [0, 1, 2, 3, 4]            # 0 = Monday … 6 = Sunday; empty or absent: every day
      hour_start: 9                    # 0-23, with hour_end (1-24, later); absent: all day
      hour_end: 17
    steps:
      - order: 1                       # optional, default: position in the list + 1
        delay_seconds: 0               # wait after the previous step
        template:
          name: spring-1               # templates are global; an existing one with this name is reused
          subject: "Quick question, {{ first_name | default('there') }}"   #   only if identical
          body_text: "Hi {{ first_name }}, ..."
          body_html: "<p>Hi {{ first_name }}, ...</p>"   # body_text, body_html or both
      - order: 2
        delay: 2d                      # instead of delay_seconds: 2d, 4h, 30m, 45s or combined (1d12h)
        threaded: true                 # sent as a reply to the previous email
        template: spring-2             # a string names an existing template
    accounts:                          # sender accounts, which must exist already; referenced by email only:
                                       #   an import never changes an account's server or secrets
      - email: sales@example.com
        daily_limit: 30                # optional: this campaign's (tighter) limit
        min_wait_seconds: 300          # optional: this campaign's wait between sends

The same document as JSON works too. Unknown keys are errors (they are usually typos). Types are checked,
never converted: text must be text (``name: [a, b]`` is an error, not "['a', 'b']"), a whole number is
never ``true`` or ``1.7`` (``accounts[0].daily_limit: must be a whole number, got true``).
"""

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import IO, Any
from zoneinfo import ZoneInfo

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import validate_email
from django.db import transaction

from audit.actions import AuditAction
from audit.services import audit_record
from campaigns.models import Campaign, CampaignAccount, EmailTemplate, Lead, Recipient, SenderAccount, SequenceStep
from campaigns.services.lifecycle import campaign_set_status
from campaigns.services.templating import template_check
from emailsys import clock
from emailsys.imports import CsvRecord, CsvRecords, ImportReport

LEAD_COLUMNS = ("lead_id", "email", "name", "first_name", "last_name", "company_name", "website", "provider")
REQUIRED_COLUMNS = ("lead_id", "email")
RECIPIENT_FIELDS = ("name", "first_name", "last_name", "company_name", "website", "provider")
BATCH_SIZE = 1000


@dataclass
class _Row:
    line: int
    lead_id: str
    email: str
    values: dict[str, str]  # the recipient fields the header has
    custom: dict[str, str]


def _max_length(model: type, name: str) -> int:
    return model._meta.get_field(name).max_length


def _csv_row_parse(*, record: CsvRecord, fields: list[str], custom_columns: list[str]) -> _Row:
    """One validated row, or ValueError with the reason shown to the user."""
    if record.surplus:
        raise ValueError(f"{record.surplus} more value(s) than the header has columns")
    values = {name: record.values.get(name, "").strip() for name in LEAD_COLUMNS}
    if not values["lead_id"]:
        raise ValueError("lead_id is empty")
    if len(values["lead_id"]) > _max_length(Lead, "external_id"):
        raise ValueError(f"lead_id is longer than {_max_length(Lead, 'external_id')} characters")
    email = values["email"].lower()
    if not email:
        raise ValueError("email is empty")
    try:
        validate_email(email)
    except ValidationError:
        raise ValueError(f"invalid email {values['email']!r}") from None
    if len(email) > _max_length(Recipient, "email"):
        raise ValueError(f"email is longer than {_max_length(Recipient, 'email')} characters")
    for name in fields:
        limit = _max_length(Recipient, name)
        if len(values[name]) > limit:
            raise ValueError(f"{name} is longer than {limit} characters ({len(values[name])})")
    custom = {name: record.values[name].strip() for name in custom_columns}
    return _Row(record.line, values["lead_id"], email, {name: values[name] for name in fields}, custom)


def _csv_rows(*, file: IO[bytes] | IO[str], report: ImportReport) -> tuple[list[str], dict[str, list[_Row]]]:
    """The recipient fields the header has, and the good rows grouped by lead_id, in file order; bad rows go
    into the report."""
    records = CsvRecords(file, required=REQUIRED_COLUMNS, example="lead_id,email,...", errors=report.errors)
    fields = [name for name in RECIPIENT_FIELDS if name in records.header]
    custom_columns = [name for name in records.header if name and name not in LEAD_COLUMNS]
    leads: dict[str, list[_Row]] = {}
    seen: dict[tuple[str, str], int] = {}
    for record, parsed in records.parsed(
        lambda record: _csv_row_parse(record=record, fields=fields, custom_columns=custom_columns)
    ):
        first = seen.setdefault((parsed.lead_id, parsed.email), record.line)
        if first != record.line:
            report.errors.append((record.line, f"email {parsed.email!r} is already listed for lead "
                                               f"{parsed.lead_id!r} on line {first}"))  # fmt: skip
            continue
        leads.setdefault(parsed.lead_id, []).append(parsed)
    return fields, leads


def _custom_fields_merge(existing: dict, rows: Iterable[_Row]) -> dict:
    """The file's non-empty values win; for one lead, the first row that fills a column wins."""
    merged = dict(existing)
    filled: set[str] = set()
    for row in rows:
        for name, value in row.custom.items():
            if value and name not in filled:
                merged[name] = value
                filled.add(name)
    return merged


def leads_import_csv(*, campaign: Campaign, file: IO[bytes] | IO[str]) -> ImportReport:
    """Imports leads and recipients from CSV (format in the module docstring); idempotent per file.

    Bad rows are reported, not fatal; a file without a lead_id or email column raises ValidationError. Compares
    before it writes: the campaign's leads and recipients are loaded in two queries and only new or changed
    rows are written, in bulk, so an unchanged re-import writes nothing and reports its rows `unchanged`. Runs
    in one transaction (fine for 100k rows) and holds the campaign's row lock, so two imports into the same
    campaign never race on the same lead_id.
    """
    report = ImportReport()
    fields, rows_by_lead = _csv_rows(file=file, report=report)
    now = clock.now()
    with transaction.atomic():
        Campaign.objects.select_for_update().filter(pk=campaign.pk).get()
        found = Lead.objects.filter(campaign=campaign, external_id__in=list(rows_by_lead)).only(
            "pk", "external_id", "custom_fields"
        )
        leads = {lead.external_id: lead for lead in found}
        changed_leads = []
        for lead_id, lead in leads.items():
            merged = _custom_fields_merge(lead.custom_fields, rows_by_lead[lead_id])
            if merged != lead.custom_fields:
                lead.custom_fields = merged
                changed_leads.append(lead)
        Lead.objects.bulk_update(changed_leads, ["custom_fields"], batch_size=BATCH_SIZE)
        new_leads = [
            Lead(campaign=campaign, external_id=lead_id, custom_fields=_custom_fields_merge({}, rows),
                 state=Lead.State.IN_PROGRESS, current_step=1, next_due_at=now)
            for lead_id, rows in rows_by_lead.items()
            if lead_id not in leads
        ]  # fmt: skip
        for lead in Lead.objects.bulk_create(new_leads, batch_size=BATCH_SIZE):
            leads[lead.external_id] = lead
        report.leads_created, report.leads_updated = len(new_leads), len(changed_leads)

        existing: dict[tuple[int, str], Recipient] = {}
        next_position: dict[int, int] = {}
        found_recipients = Recipient.objects.filter(lead__in=[lead.pk for lead in leads.values()]).only(
            "pk", "lead_id", "email", "position", *fields
        )
        for recipient in found_recipients:
            existing[(recipient.lead_id, recipient.email.lower())] = recipient
            next_position[recipient.lead_id] = max(next_position.get(recipient.lead_id, 0), recipient.position + 1)
        to_create, to_update, changed_fields = [], [], set()
        for lead_id, rows in rows_by_lead.items():
            lead = leads[lead_id]
            for row in rows:
                recipient = existing.get((lead.pk, row.email))
                if recipient is None:
                    position = next_position.get(lead.pk, 0)
                    next_position[lead.pk] = position + 1
                    to_create.append(Recipient(lead=lead, position=position, email=row.email, **row.values))
                    continue
                differing = [name for name, value in row.values.items() if getattr(recipient, name) != value]
                for name in differing:
                    setattr(recipient, name, row.values[name])
                if differing:
                    changed_fields.update(differing)
                    to_update.append(recipient)
        Recipient.objects.bulk_create(to_create, batch_size=BATCH_SIZE)
        if to_update:
            Recipient.objects.bulk_update(to_update, sorted(changed_fields), batch_size=BATCH_SIZE)
        report.created, report.updated = len(to_create), len(to_update)
        report.unchanged = sum(len(rows) for rows in rows_by_lead.values()) - report.created - report.updated
        audit_record(action=AuditAction.CAMPAIGN_IMPORT_LEADS, target=campaign, detail=report.counts())
    return report


# --- campaigns from JSON / YAML ---------------------------------------------------------------------------

CAMPAIGN_KEYS = {"name", "status", "time_zone", "batch_size", "starts_at", "ends_at", "send_window", "steps",
                 "accounts", "sender_policy", "stop_on_reply"}  # fmt: skip
WINDOW_KEYS = {"days", "hour_start", "hour_end"}
STEP_KEYS = {"order", "delay_seconds", "delay", "threaded", "template"}
TEMPLATE_KEYS = {"name", "subject", "body_text", "body_html"}
ACCOUNT_KEYS = {"email", "daily_limit", "min_wait_seconds"}
IMPORT_STATUSES = (Campaign.Status.DRAFT, Campaign.Status.ACTIVE, Campaign.Status.PAUSED)
DELAY_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
DELAY_PATTERN = re.compile(r"(?:\d+[dhms])+")
# Where a campaign model field is written in the file.
CAMPAIGN_FIELD_PATHS = {"send_days": "send_window.days", "send_hour_start": "send_window.hour_start",
                        "send_hour_end": "send_window.hour_end"}  # fmt: skip


def campaign_data_parse(*, text: str, file_name: str) -> dict:
    """JSON (.json) or YAML (.yaml, .yml) text to the dict `campaign_import` takes; ValidationError with the
    parser's position when it is malformed."""
    suffix = file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
    if suffix == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValidationError(f"{file_name} is not valid JSON: {error}") from None
    elif suffix in ("yaml", "yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValidationError(f"{file_name} is not valid YAML: {error}") from None
    else:
        raise ValidationError(f"{file_name}: use a .json, .yaml or .yml file.")
    if not isinstance(data, dict):
        raise ValidationError(f"{file_name}: the top level must be a mapping (name: ..., steps: [...]).")
    return data


class _Errors:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.paths: set[str] = set()

    def add(self, path: str, message: str) -> None:
        self.messages.append(f"{path}: {message}" if path else message)
        self.paths.add(path)

    def add_model(self, path: str, error: ValidationError, names: dict[str, str] | None = None) -> None:
        """A model's full_clean errors, each under `path` plus the field's place in the file; none for a place
        that already has an error (a wrong type was reported, the model saw a placeholder)."""
        for name, messages in error.message_dict.items():
            where = "" if name == NON_FIELD_ERRORS else (names or {}).get(name, name)
            place = ".".join(part for part in (path, where) if part)
            if where and any(known == place or known.startswith((f"{place}.", f"{place}[")) for known in self.paths):
                continue
            for message in messages:
                self.add(place, message)

    def unknown_keys(self, path: str, data: dict, allowed: set[str]) -> None:
        for key in sorted(set(data) - allowed, key=str):
            expected = ", ".join(sorted(allowed))
            self.add(f"{path}.{key}" if path else str(key), f"unknown key (expected one of: {expected})")


def _shown(value: Any) -> str:
    """A value as the file spells it, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return str(value)
    return f"{type(value).__name__} {value}"


def _text(errors: _Errors, path: str, value: Any) -> str:
    """A text value ("" when absent or null); anything else is an error under `path`."""
    if value is None or isinstance(value, str):
        return value or ""
    hint = " (quote it if you mean the text)" if isinstance(value, bool | int | float) else ""
    errors.add(path, f"must be text, got {_shown(value)}{hint}")
    return ""


def _whole_number(errors: _Errors, path: str, value: Any) -> int | None:
    """A whole number (None when absent or null). true/false and 1.7 are errors, not 1 — never truncated."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    errors.add(path, f"must be a whole number, got {_shown(value)}")
    return None


def _delay_seconds(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f'must be a whole number or a duration like "2d", got {_shown(value)}')
    text = value.strip().lower().replace(" ", "")
    if text.isdigit():
        return int(text)
    if not DELAY_PATTERN.fullmatch(text):
        raise ValueError(f"{value!r} is not a duration; use seconds or e.g. 2d, 4h, 30m, 1d12h")
    return sum(int(number) * DELAY_UNITS[unit] for number, unit in re.findall(r"(\d+)([dhms])", text))


def _datetime(value: Any, time_zone: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date) or not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date and time, e.g. 2025-04-01T09:00:00+02:00")
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date and time, e.g. 2025-04-01T09:00:00+02:00") from None
    if moment.tzinfo is None:
        try:
            moment = moment.replace(tzinfo=ZoneInfo(time_zone))
        except (KeyError, ValueError):
            raise ValueError("has no UTC offset and time_zone is not valid") from None
    return moment


def _mapping(errors: _Errors, path: str, value: Any, allowed: set[str]) -> dict | None:
    if not isinstance(value, dict):
        errors.add(path, f"expected a mapping, got {_shown(value)}")
        return None
    errors.unknown_keys(path, value, allowed)
    return value


def _template_check_syntax(errors: _Errors, path: str, template: EmailTemplate) -> None:
    """Syntax, unknown filters and tests, and a render with sample values within the budget (`template_check`,
    as the admin and the API check)."""
    for name, message in template_check(template).items():
        errors.add(f"{path}.{name}", message)


def _template_resolve(
    errors: _Errors, path: str, value: Any, defined: dict[str, EmailTemplate]
) -> EmailTemplate | None:
    """An existing template (by name, or an identical definition) or a new, validated, unsaved one."""
    if not isinstance(value, str | dict):
        errors.add(path, f"expected a template mapping or an existing template's name, got {_shown(value)}")
        return None
    if isinstance(value, str):
        template = defined.get(value) or EmailTemplate.objects.filter(name=value).first()
        if template is None:
            errors.add(path, f"no template named {value!r}; define it here with name, subject and body_text")
        return template
    data = _mapping(errors, path, value, TEMPLATE_KEYS)
    if data is None:
        return None
    template = EmailTemplate(**{key: _text(errors, f"{path}.{key}", data.get(key)) for key in sorted(TEMPLATE_KEYS)})
    bodies_wrong = {f"{path}.body_text", f"{path}.body_html"} & errors.paths
    if not template.body_text and not template.body_html and not bodies_wrong:
        errors.add(path, "needs body_text or body_html")
    same = defined.get(template.name) or EmailTemplate.objects.filter(name=template.name).first()
    if same is not None:
        contents = ("subject", "body_text", "body_html")
        if all(getattr(same, name) == getattr(template, name) for name in contents):
            return same
        errors.add(f"{path}.name", f"a different template named {template.name!r} exists; rename this one or "
                                   "refer to the existing one by its name")  # fmt: skip
        return None
    try:
        template.full_clean(validate_constraints=False)
    except ValidationError as error:
        errors.add_model(path, error)
        return None
    _template_check_syntax(errors, path, template)
    defined[template.name] = template
    return template


def _campaign_build(errors: _Errors, data: dict) -> Campaign:
    errors.unknown_keys("", data, CAMPAIGN_KEYS)
    name = _text(errors, "name", data.get("name")).strip()
    if name and Campaign.objects.filter(name=name).exists():
        errors.add("name", f"a campaign named {name!r} exists; choose another name")
    status = data.get("status") or Campaign.Status.DRAFT
    if not isinstance(status, str) or status not in IMPORT_STATUSES:
        errors.add("status", f"{_shown(status)} is not one of: {', '.join(IMPORT_STATUSES)}")
    campaign = Campaign(name=name, time_zone=_text(errors, "time_zone", data.get("time_zone")) or "UTC")
    batch_size = _whole_number(errors, "batch_size", data.get("batch_size"))
    if batch_size is not None:
        campaign.batch_size = batch_size
    policy = data.get("sender_policy", Campaign.SenderPolicy.STICKY)
    if policy not in Campaign.SenderPolicy.values:
        errors.add("sender_policy", f"{_shown(policy)} is not one of: {', '.join(Campaign.SenderPolicy.values)}")
    else:
        campaign.sender_policy = policy
    stop_on_reply = data.get("stop_on_reply", True)
    if not isinstance(stop_on_reply, bool):
        errors.add("stop_on_reply", f"must be true or false, got {_shown(stop_on_reply)}")
    else:
        campaign.stop_on_reply = stop_on_reply
    for key in ("starts_at", "ends_at"):
        try:
            setattr(campaign, key, _datetime(data.get(key), campaign.time_zone))
        except ValueError as error:
            errors.add(key, str(error))
    if campaign.starts_at and campaign.ends_at and campaign.ends_at <= campaign.starts_at:
        errors.add("ends_at", "must be after starts_at")
    window = data.get("send_window")
    if window is not None and _mapping(errors, "send_window", window, WINDOW_KEYS) is not None:
        campaign.send_days = _weekdays(errors, "send_window.days", window.get("days"))
        start, end = window.get("hour_start"), window.get("hour_end")
        if (start is None) != (end is None):
            errors.add("send_window", "give both hour_start and hour_end, or neither")
        elif start is not None:
            if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start <= 23:
                errors.add("send_window.hour_start", "must be a whole hour from 0 to 23")
            elif not isinstance(end, int) or isinstance(end, bool) or not 1 <= end <= 24 or end <= start:
                errors.add("send_window.hour_end", "must be a whole hour from 1 to 24, after hour_start")
            else:
                campaign.send_hour_start, campaign.send_hour_end = start, end
    try:
        campaign.full_clean(validate_constraints=False)
    except ValidationError as error:
        errors.add_model("", error, CAMPAIGN_FIELD_PATHS)
    return campaign


def _weekdays(errors: _Errors, path: str, value: Any) -> list[int]:
    """A list of whole numbers (the model checks they are distinct weekdays 0-6); [] when absent."""
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add(path, f"must be a list of weekdays (0 = Monday … 6 = Sunday), got {_shown(value)}")
        return []
    days = [_whole_number(errors, f"{path}[{index}]", day) for index, day in enumerate(value)]
    return [day for day in days if day is not None]


def _steps_build(errors: _Errors, value: Any) -> list[tuple[SequenceStep, EmailTemplate | None]]:
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add("steps", "expected a list of steps")
        return []
    steps, orders, templates = [], {}, {}
    for index, item in enumerate(value):
        path = f"steps[{index}]"
        data = _mapping(errors, path, item, STEP_KEYS)
        if data is None:
            continue
        order = _whole_number(errors, f"{path}.order", data.get("order", index + 1))
        step = SequenceStep(order=index + 1 if order is None else order, threaded=data.get("threaded", False))
        if not isinstance(step.threaded, bool):
            errors.add(f"{path}.threaded", f"must be true or false, got {_shown(step.threaded)}")
            step.threaded = False
        if "delay" in data and "delay_seconds" in data:
            errors.add(path, "give delay or delay_seconds, not both")
        key = "delay" if "delay" in data else "delay_seconds"
        try:
            step.delay_seconds = _delay_seconds(data.get(key, 0))
        except ValueError as error:
            errors.add(f"{path}.{key}", str(error))
        try:
            step.full_clean(exclude=["campaign", "template"], validate_constraints=False)
        except ValidationError as error:
            errors.add_model(path, error)
        else:
            if step.order in orders:
                errors.add(f"{path}.order", f"step {step.order} is already defined at steps[{orders[step.order]}]")
            orders.setdefault(step.order, index)
        template = None
        if "template" not in data:
            errors.add(f"{path}.template", "required: a template mapping or an existing template's name")
        else:
            template = _template_resolve(errors, f"{path}.template", data["template"], templates)
        steps.append((step, template))
    return steps


def _accounts_build(errors: _Errors, value: Any) -> list[CampaignAccount]:
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add("accounts", "expected a list of accounts")
        return []
    settings, seen = [], set()
    for index, item in enumerate(value):
        path = f"accounts[{index}]"
        data = _mapping(errors, path, item, ACCOUNT_KEYS)
        if data is None:
            continue
        if not isinstance(data.get("email"), str | None):
            _text(errors, f"{path}.email", data["email"])
            continue
        email = (data.get("email") or "").strip()
        account = SenderAccount.objects.filter(email__iexact=email).first() if email else None
        if not email:
            errors.add(f"{path}.email", "required: the sender account's email")
            continue
        if account is None:
            errors.add(f"{path}.email", f"no sender account {email!r}; create it first")
            continue
        if account.pk in seen:
            errors.add(f"{path}.email", f"{email!r} is listed twice")
            continue
        seen.add(account.pk)
        setting = CampaignAccount(
            account=account,
            daily_limit=_whole_number(errors, f"{path}.daily_limit", data.get("daily_limit")),
            min_wait_seconds=_whole_number(errors, f"{path}.min_wait_seconds", data.get("min_wait_seconds")),
        )
        try:
            setting.full_clean(exclude=["campaign"], validate_constraints=False)
        except ValidationError as error:
            errors.add_model(path, error)
            continue
        settings.append(setting)
    return settings


def campaign_import(*, data: dict) -> Campaign:
    """Creates a campaign with its steps, templates and account settings from a dict (format in the module
    docstring). Everything is validated first and every problem is reported at once, as "path: message";
    nothing is written unless all of it is valid. The requested status is applied last through
    `campaign_set_status` (so activation rules and the activity log apply)."""
    errors = _Errors()
    if not isinstance(data, dict):
        raise ValidationError("The campaign must be a mapping (name: ..., steps: [...]).")
    campaign = _campaign_build(errors, data)
    steps = _steps_build(errors, data.get("steps"))
    settings = _accounts_build(errors, data.get("accounts"))
    status = data.get("status") or Campaign.Status.DRAFT
    if status == Campaign.Status.ACTIVE and (not steps or not settings):
        errors.add("status", "an active campaign needs at least one step and one account; import it as draft")
    if errors.messages:
        raise ValidationError(errors.messages)
    new_templates = len({id(template) for _, template in steps if template.pk is None})
    with transaction.atomic():
        campaign.save()
        for step, template in steps:
            if template.pk is None:
                template.save()
            step.campaign, step.template = campaign, template
        SequenceStep.objects.bulk_create([step for step, _ in steps])
        for setting in settings:
            setting.campaign = campaign
        CampaignAccount.objects.bulk_create(settings)
        audit_record(
            action=AuditAction.CAMPAIGN_IMPORT,
            target=campaign,
            detail={
                "steps": len(steps),
                "accounts": len(settings),
                "templates_created": new_templates,
                "status": status,
            },
        )
        if status != Campaign.Status.DRAFT:
            campaign_set_status(campaign=campaign, status=status, reason="Imported")
    return campaign
