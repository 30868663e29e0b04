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

Bad rows (invalid email, empty lead_id, a value longer than its field, the same email twice for one lead)
are reported with their line number (the header is line 1) and skipped; the good rows are imported.
Importing the same file again creates nothing: leads match on (campaign, lead_id), recipients on (lead,
email), and matching rows update names and custom fields. New recipients of an existing lead are added
after its current ones. New leads start in progress at step 1, due now.

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
    accounts:                          # sender accounts, which must exist already
      - email: sales@example.com
        daily_limit: 30                # optional: this campaign's (tighter) limit
        min_wait_seconds: 300          # optional: this campaign's wait between sends

The same document as JSON works too. Unknown keys are errors (they are usually typos).
"""

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import validate_email
from django.db import transaction

from campaigns.models import Campaign, CampaignAccount, EmailTemplate, Lead, Recipient, SenderAccount, SequenceStep
from campaigns.services.lifecycle import campaign_set_status
from campaigns.services.templating import template_check
from emailsys import clock
from emailsys.imports import ImportReport, csv_header_read

LEAD_COLUMNS = ("lead_id", "email", "name", "first_name", "last_name", "company_name", "website", "provider")
REQUIRED_COLUMNS = ("lead_id", "email")
RECIPIENT_FIELDS = ("name", "first_name", "last_name", "company_name", "website", "provider")
BATCH_SIZE = 1000


@dataclass
class _Row:
    line: int
    lead_id: str
    email: str
    values: dict[str, str]
    custom: dict[str, str]


def _max_length(model: type, name: str) -> int:
    return model._meta.get_field(name).max_length


def _csv_row_parse(*, line: int, row: dict, custom_columns: list[str]) -> _Row:
    """One validated row, or ValueError with the reason shown to the user."""
    if row.get(None):
        raise ValueError(f"{len(row[None])} more value(s) than the header has columns")
    values = {name: (row.get(name) or "").strip() for name in LEAD_COLUMNS}
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
    for name in RECIPIENT_FIELDS:
        limit = _max_length(Recipient, name)
        if len(values[name]) > limit:
            raise ValueError(f"{name} is longer than {limit} characters ({len(values[name])})")
    custom = {name: (row.get(name) or "").strip() for name in custom_columns}
    return _Row(line, values["lead_id"], email, {name: values[name] for name in RECIPIENT_FIELDS}, custom)


def _csv_rows(*, file: TextIO, report: ImportReport) -> dict[str, list[_Row]]:
    """Good rows grouped by lead_id, in file order; bad rows go into the report."""
    reader = csv.DictReader(file)
    header = csv_header_read(reader, required=REQUIRED_COLUMNS, example="lead_id,email,...")
    custom_columns = [name for name in header if name and name not in LEAD_COLUMNS]
    leads: dict[str, list[_Row]] = {}
    seen: dict[tuple[str, str], int] = {}
    try:
        for row in reader:
            line = reader.line_num
            try:
                parsed = _csv_row_parse(line=line, row=row, custom_columns=custom_columns)
            except ValueError as error:
                report.errors.append((line, str(error)))
                continue
            first = seen.setdefault((parsed.lead_id, parsed.email), line)
            if first != line:
                report.errors.append((line, f"email {parsed.email!r} is already listed for lead "
                                            f"{parsed.lead_id!r} on line {first}"))  # fmt: skip
                continue
            leads.setdefault(parsed.lead_id, []).append(parsed)
    except csv.Error as error:
        raise ValidationError(f"Line {reader.line_num}: the file is not valid CSV ({error}).") from None
    return leads


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


def leads_import_csv(*, campaign: Campaign, file: TextIO) -> ImportReport:
    """Imports leads and recipients from CSV (format in the module docstring); idempotent per file.

    Bad rows are reported, not fatal; a file without a lead_id or email column raises ValidationError. Runs
    in one transaction with bulk writes (fine for 100k rows) and holds the campaign's row lock, so two imports
    into the same campaign never race on the same lead_id.
    """
    report = ImportReport()
    rows_by_lead = _csv_rows(file=file, report=report)
    now = clock.now()
    with transaction.atomic():
        Campaign.objects.select_for_update().filter(pk=campaign.pk).get()
        found = Lead.objects.filter(campaign=campaign, external_id__in=list(rows_by_lead))
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
        report.leads_created = len(new_leads)

        existing: dict[tuple[int, str], Recipient] = {}
        next_position: dict[int, int] = {}
        for recipient in Recipient.objects.filter(lead__in=[lead.pk for lead in leads.values()]):
            existing[(recipient.lead_id, recipient.email.lower())] = recipient
            next_position[recipient.lead_id] = max(next_position.get(recipient.lead_id, 0), recipient.position + 1)
        to_create, to_update = [], []
        for lead_id, rows in rows_by_lead.items():
            lead = leads[lead_id]
            for row in rows:
                recipient = existing.get((lead.pk, row.email))
                if recipient is None:
                    position = next_position.get(lead.pk, 0)
                    next_position[lead.pk] = position + 1
                    to_create.append(Recipient(lead=lead, position=position, email=row.email, **row.values))
                    continue
                for name, value in row.values.items():
                    setattr(recipient, name, value)
                to_update.append(recipient)
        Recipient.objects.bulk_create(to_create, batch_size=BATCH_SIZE)
        Recipient.objects.bulk_update(to_update, list(RECIPIENT_FIELDS), batch_size=BATCH_SIZE)
    report.created, report.updated = len(to_create), len(to_update)
    return report


# --- campaigns from JSON / YAML ---------------------------------------------------------------------------

CAMPAIGN_KEYS = {"name", "status", "time_zone", "batch_size", "starts_at", "ends_at", "send_window", "steps",
                 "accounts"}  # fmt: skip
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

    def add(self, path: str, message: str) -> None:
        self.messages.append(f"{path}: {message}" if path else message)

    def add_model(self, path: str, error: ValidationError, names: dict[str, str] | None = None) -> None:
        """A model's full_clean errors, each under `path` plus the field's place in the file."""
        for name, messages in error.message_dict.items():
            where = "" if name == NON_FIELD_ERRORS else (names or {}).get(name, name)
            for message in messages:
                self.add(".".join(part for part in (path, where) if part), message)

    def unknown_keys(self, path: str, data: dict, allowed: set[str]) -> None:
        for key in sorted(set(data) - allowed, key=str):
            expected = ", ".join(sorted(allowed))
            self.add(f"{path}.{key}" if path else str(key), f"unknown key (expected one of: {expected})")


def _delay_seconds(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected seconds or a duration like 2d, 4h, 30m")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    text = str(value).strip().lower().replace(" ", "")
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
        errors.add(path, "expected a mapping")
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
    if isinstance(value, str):
        template = defined.get(value) or EmailTemplate.objects.filter(name=value).first()
        if template is None:
            errors.add(path, f"no template named {value!r}; define it here with name, subject and body_text")
        return template
    data = _mapping(errors, path, value, TEMPLATE_KEYS)
    if data is None:
        return None
    template = EmailTemplate(**{key: data.get(key) if data.get(key) is not None else "" for key in TEMPLATE_KEYS})
    if not template.body_text and not template.body_html:
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
    name = "" if data.get("name") is None else str(data["name"]).strip()
    if name and Campaign.objects.filter(name=name).exists():
        errors.add("name", f"a campaign named {name!r} exists; choose another name")
    status = data.get("status") or Campaign.Status.DRAFT
    if status not in IMPORT_STATUSES:
        errors.add("status", f"{status!r} is not one of: {', '.join(IMPORT_STATUSES)}")
    campaign = Campaign(name=name, time_zone=data.get("time_zone") or "UTC")
    if data.get("batch_size") is not None:
        campaign.batch_size = data["batch_size"]
    for key in ("starts_at", "ends_at"):
        try:
            setattr(campaign, key, _datetime(data.get(key), campaign.time_zone))
        except ValueError as error:
            errors.add(key, str(error))
    if campaign.starts_at and campaign.ends_at and campaign.ends_at <= campaign.starts_at:
        errors.add("ends_at", "must be after starts_at")
    window = data.get("send_window")
    if window is not None and _mapping(errors, "send_window", window, WINDOW_KEYS) is not None:
        campaign.send_days = window.get("days") or []
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
        step = SequenceStep(order=data.get("order", index + 1), threaded=data.get("threaded", False))
        if not isinstance(step.threaded, bool):
            errors.add(f"{path}.threaded", "must be true or false")
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
        email = str(data.get("email") or "").strip()
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
            account=account, daily_limit=data.get("daily_limit"), min_wait_seconds=data.get("min_wait_seconds")
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
        if status != Campaign.Status.DRAFT:
            campaign_set_status(campaign=campaign, status=status, reason="Imported")
    return campaign
