import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from campaigns.models import Activity, Campaign, CampaignAccount, EmailTemplate, Lead, Recipient, SequenceStep
from campaigns.services.imports import campaign_data_parse, campaign_import, leads_import_csv
from campaigns.tests.conftest import NOW
from campaigns.tests.factories import (
    CampaignFactory,
    EmailTemplateFactory,
    LeadFactory,
    RecipientFactory,
    SenderAccountFactory,
)
from emailsys import clock

pytestmark = pytest.mark.django_db


CSV = """\
lead_id,email,name,first_name,last_name,company_name,website,provider,industry
acme,Jane@Acme.example,Jane Doe,Jane,Doe,Acme Inc,https://acme.example,Google,logistics
acme,joe@acme.example,Joe Roe,Joe,Roe,Acme Inc,https://acme.example,Google,
globex,hank@globex.example,Hank Scorpio,Hank,Scorpio,Globex,,Microsoft,energy
"""


@pytest.fixture
def now(monkeypatch) -> datetime:
    monkeypatch.setattr(clock, "now", lambda: NOW)
    return NOW


def import_csv(campaign: Campaign, text: str):
    return leads_import_csv(campaign=campaign, file=io.StringIO(text))


# --- leads CSV -------------------------------------------------------------------------------------------


def test_rows_with_the_same_lead_id_become_one_lead_with_recipients_in_file_order(now):
    campaign = CampaignFactory()

    report = import_csv(campaign, CSV)

    assert (report.created, report.updated, report.leads_created, report.errors) == (3, 0, 2, [])
    acme = Lead.objects.get(campaign=campaign, external_id="acme")
    assert (acme.state, acme.current_step, acme.next_due_at) == (Lead.State.IN_PROGRESS, 1, NOW)
    assert acme.custom_fields == {"industry": "logistics"}
    recipients = list(acme.recipients.order_by("position").values_list("position", "email", "first_name", "provider"))
    assert recipients == [(0, "jane@acme.example", "Jane", "Google"), (1, "joe@acme.example", "Joe", "Google")]
    globex = Recipient.objects.get(lead__external_id="globex")
    assert (globex.name, globex.company_name, globex.website) == ("Hank Scorpio", "Globex", "")


def test_importing_the_same_file_again_creates_nothing_new_and_reports_its_rows_unchanged():
    campaign = CampaignFactory()
    import_csv(campaign, CSV)

    report = import_csv(campaign, CSV)

    assert (report.created, report.updated, report.unchanged, report.leads_created, report.leads_updated) == (
        0, 0, 3, 0, 0,
    )  # fmt: skip
    assert Lead.objects.filter(campaign=campaign).count() == 2
    assert Recipient.objects.filter(lead__campaign=campaign).count() == 3


def test_reimport_updates_names_and_appends_new_recipients_after_existing_ones():
    campaign = CampaignFactory()
    lead = LeadFactory(campaign=campaign, external_id="acme", custom_fields={"tier": "gold"}, current_step=3)
    RecipientFactory(lead=lead, position=0, email="jane@acme.example", first_name="J")

    report = import_csv(campaign, CSV)

    assert (report.created, report.updated, report.leads_created) == (2, 1, 1)
    lead.refresh_from_db()
    assert lead.current_step == 3  # progress is not touched by an import
    assert lead.custom_fields == {"tier": "gold", "industry": "logistics"}
    assert list(lead.recipients.values_list("position", "email", "first_name")) == [
        (0, "jane@acme.example", "Jane"),
        (1, "joe@acme.example", "Joe"),
    ]


def test_bad_rows_are_reported_with_line_numbers_and_good_rows_imported():
    campaign = CampaignFactory()
    text = (
        "lead_id,email,first_name\n"
        "a,ok@example.com,Ann\n"  # line 2
        "b,x@,Bob\n"  # line 3
        ",nolead@example.com,\n"  # line 4
        "c,,Cy\n"  # line 5
        f"d,long@example.com,{'x' * 101}\n"  # line 6
        "a,OK@example.com,Again\n"  # line 7: same email for lead a
        "e,e@example.com,Eve,extra\n"  # line 8
        "f,f@example.com,Fay\n"  # line 9
    )

    report = import_csv(campaign, text)

    assert report.errors == [
        (3, "invalid email 'x@'"),
        (4, "lead_id is empty"),
        (5, "email is empty"),
        (6, "first_name is longer than 100 characters (101)"),
        (7, "email 'ok@example.com' is already listed for lead 'a' on line 2"),
        (8, "1 more value(s) than the header has columns"),
    ]
    assert sorted(Recipient.objects.values_list("email", flat=True)) == ["f@example.com", "ok@example.com"]
    assert report.created == 2


def import_bytes(campaign: Campaign, data: bytes):
    return leads_import_csv(campaign=campaign, file=io.BytesIO(data))


def test_a_nul_byte_a_byte_that_is_not_utf8_and_a_huge_value_are_each_their_rows_error_by_real_line():
    campaign = CampaignFactory()
    data = (
        b"lead_id,email,first_name,notes\r\n"
        b'a,a@example.com,Ann,"two\r\nlines"\r\n'  # lines 2-3: one record
        b"b,b@example.com,B\x00b,\r\n"  # line 4: NUL
        b"c,c@example.com,Jos\xe9,\r\n"  # line 5: Latin-1, not UTF-8
        b"d,d@example.com,Dee," + b"x" * 140_000 + b"\r\n"  # line 6: over 128 KiB
        b"e,e@example.com,Jos\xc3\xa9,ok\r\n"  # line 7: UTF-8
    )

    report = import_bytes(campaign, data)

    assert report.errors == [
        (4, "contains a NUL byte (at character 18)"),
        (5, "not UTF-8 text (byte 0xe9 at character 20); save the file as CSV UTF-8"),
        (6, "notes is longer than 131,072 characters (140,000)"),
    ]
    assert (report.created, report.skipped) == (2, 3)
    assert dict(Recipient.objects.values_list("email", "first_name")) == {
        "a@example.com": "Ann",
        "e@example.com": "José",
    }
    assert Lead.objects.get(external_id="a").custom_fields == {"notes": "two\r\nlines"}


def test_a_bad_byte_inside_a_quoted_value_skips_that_record_and_the_rows_after_it_import():
    campaign = CampaignFactory()
    data = (
        b"lead_id,email,notes\n"
        b'a,a@example.com,"first\nsec\xffond\nthird"\n'  # lines 2-4, the bad byte on line 3
        b"b,b@example.com,fine\n"  # line 5
        b'c,c@example.com,"' + b"y\n" * 70_000 + b'"\n'  # lines 6-70006: 140,000 characters
        b"d,d@example.com,last\n"  # line 70007
    )

    report = import_bytes(campaign, data)

    assert report.errors == [
        (3, "not UTF-8 text (byte 0xff at character 4); save the file as CSV UTF-8"),
        (6, "notes is longer than 131,072 characters (140,000); the record runs from line 6 to line 70006 "
            "(a quote not closed?)"),
    ]  # fmt: skip
    assert sorted(Recipient.objects.values_list("email", flat=True)) == ["b@example.com", "d@example.com"]


def test_line_numbers_count_lone_cr_and_blank_lines_and_a_bom_is_not_part_of_the_header():
    campaign = CampaignFactory()

    report = import_bytes(campaign, b"\xef\xbb\xbflead_id,email\ra,a@example.com\r\rb,x@\rc,c@example.com")

    assert report.errors == [(4, "invalid email 'x@'")]
    assert sorted(Recipient.objects.values_list("email", flat=True)) == ["a@example.com", "c@example.com"]


def test_a_header_that_is_not_utf8_refuses_the_file_with_its_reason():
    with pytest.raises(ValidationError, match=r"Line 1 \(the header\): not UTF-8 text \(byte 0xe9 at character 21\)"):
        import_bytes(CampaignFactory(), b"lead_id,email,soci\xc3\xa9t\xe9\na,a@example.com,x\n")
    assert not Lead.objects.exists()


def test_first_and_last_names_without_a_name_column_are_stored_as_given():
    campaign = CampaignFactory()

    report = import_csv(
        campaign, "lead_id,email,first_name,last_name\nx,ana@example.com, Ana María ,de la Cruz-Núñez\n"
    )

    assert (report.created, report.errors) == (1, [])
    recipient = Recipient.objects.get()
    assert (recipient.name, recipient.first_name, recipient.last_name) == ("", "Ana María", "de la Cruz-Núñez")


def test_a_reimport_counts_changed_rows_updated_and_leaves_columns_the_file_lacks_alone():
    campaign = CampaignFactory()
    import_csv(campaign, CSV)
    changed = CSV.replace("Joe Roe,Joe,", "Joseph Roe,Joseph,")
    without_company = "\n".join(",".join(line.split(",")[:5]) for line in changed.splitlines()) + "\n"

    report = import_csv(campaign, without_company)

    assert (report.created, report.updated, report.unchanged, report.leads_updated) == (0, 1, 2, 0)
    assert list(Recipient.objects.order_by("email").values_list("email", "first_name", "company_name")) == [
        ("hank@globex.example", "Hank", "Globex"),
        ("jane@acme.example", "Jane", "Acme Inc"),
        ("joe@acme.example", "Joseph", "Acme Inc"),
    ]


def test_an_unchanged_reimport_of_ten_thousand_rows_writes_nothing(django_assert_max_num_queries):
    campaign = CampaignFactory()
    text = "lead_id,email,first_name,industry\n" + "".join(
        f"lead-{n // 2},person{n}@example.com,P{n},x\n" for n in range(10_000)
    )
    import_csv(campaign, text)

    # savepoint, campaign lock, leads, recipients, release: no INSERT or UPDATE
    with django_assert_max_num_queries(5):
        report = import_csv(campaign, text)

    assert (report.created, report.updated, report.unchanged, report.leads_updated) == (0, 0, 10_000, 0)


def test_the_command_lists_each_bad_line_and_imports_the_rest(tmp_path):
    campaign = CampaignFactory()
    path = tmp_path / "leads.csv"
    path.write_bytes(b"lead_id,email,first_name\na,a@example.com,A\x00\nb,b@example.com,Jos\xe9\nc,c@example.com,C\n")
    out = io.StringIO()

    with pytest.raises(CommandError, match="2 rows were not imported") as caught:
        call_command("import_leads", str(campaign.pk), str(path), stdout=out)

    assert caught.value.returncode == 1
    assert out.getvalue().splitlines()[1:] == [
        "line 2: contains a NUL byte (at character 18)",
        "line 3: not UTF-8 text (byte 0xe9 at character 20); save the file as CSV UTF-8",
    ]
    assert list(Recipient.objects.values_list("email", flat=True)) == ["c@example.com"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lead_id,name\na,Ann\n", "no 'email' column"),
        ("email,name\na@example.com,Ann\n", "no 'lead_id' column"),
        ("name\nAnn\n", "no 'lead_id' and 'email' column"),
        ("", "The CSV file is empty"),
        ("lead_id,email,email\na,a@example.com,b@example.com\n", "names email more than once"),
    ],
)
def test_a_file_without_the_required_columns_is_refused(text, message):
    campaign = CampaignFactory()
    with pytest.raises(ValidationError, match=message):
        import_csv(campaign, text)
    assert not Lead.objects.exists()


def test_leads_of_another_campaign_with_the_same_id_are_left_alone():
    other = LeadFactory(external_id="acme")
    campaign = CampaignFactory()

    import_csv(campaign, CSV)

    assert Lead.objects.filter(external_id="acme").count() == 2
    assert not other.recipients.exists()


def test_ten_thousand_rows_import_in_a_few_bulk_queries(django_assert_max_num_queries):
    campaign = CampaignFactory()
    lines = ["lead_id,email,first_name"]
    lines += [f"lead-{n // 2},person{n}@example.com,P{n}" for n in range(10_000)]

    with django_assert_max_num_queries(40):
        report = import_csv(campaign, "\n".join(lines) + "\n")

    assert (report.created, report.leads_created, report.errors) == (10_000, 5_000, [])
    assert Recipient.objects.filter(lead__campaign=campaign, position=1).count() == 5_000


# --- campaigns -------------------------------------------------------------------------------------------


def campaign_data(**overrides) -> dict:
    SenderAccountFactory(email="sales@example.com") if "accounts" not in overrides else None
    data = {
        "name": "Spring outreach",
        "status": "draft",
        "time_zone": "Europe/Berlin",
        "batch_size": 10,
        "starts_at": "2025-04-01T08:00:00",
        "ends_at": "2025-06-30T18:00:00+02:00",
        "send_window": {"days": [0, 1, 2, 3, 4], "hour_start": 9, "hour_end": 17},
        "steps": [
            {"order": 1, "delay_seconds": 0,
             "template": {"name": "spring-1", "subject": "Hi {{ first_name }}", "body_text": "Hello"}},
            {"order": 2, "delay": "2d4h", "threaded": True,
             "template": {"name": "spring-2", "subject": "Re", "body_html": "<p>Again</p>"}},
        ],
        "accounts": [{"email": "Sales@Example.com", "daily_limit": 30, "min_wait_seconds": 300}],
    }  # fmt: skip
    data.update(overrides)
    return data


def test_a_campaign_imports_with_its_steps_templates_and_accounts():
    campaign = campaign_import(data=campaign_data())

    assert (campaign.name, campaign.status, campaign.time_zone, campaign.batch_size) == (
        "Spring outreach", "draft", "Europe/Berlin", 10,
    )  # fmt: skip
    campaign.refresh_from_db()
    assert campaign.starts_at == datetime(2025, 4, 1, 6, 0, tzinfo=UTC)  # no offset: in the campaign's zone
    assert campaign.ends_at == datetime(2025, 6, 30, 16, 0, tzinfo=UTC)
    assert (campaign.send_days, campaign.send_hour_start, campaign.send_hour_end) == ([0, 1, 2, 3, 4], 9, 17)
    steps = list(campaign.steps.values_list("order", "delay_seconds", "threaded", "template__name"))
    assert steps == [(1, 0, False, "spring-1"), (2, 2 * 86400 + 4 * 3600, True, "spring-2")]
    setting = CampaignAccount.objects.get(campaign=campaign)
    assert (setting.account.email, setting.daily_limit, setting.min_wait_seconds) == ("sales@example.com", 30, 300)


def test_importing_as_active_activates_through_the_status_rules():
    campaign = campaign_import(data=campaign_data(status="active"))
    assert Campaign.objects.get(pk=campaign.pk).status == "active"
    assert Activity.objects.get(campaign=campaign).detail == {"from": "draft", "to": "active", "reason": "Imported"}


def test_every_problem_is_reported_with_its_path_and_nothing_is_written():
    data = campaign_data(
        time_zone="Mars/Olympus",
        batch_size=0,
        send_window={"days": [0, 9], "hour_start": 18, "hour_end": 9},
        steps=[
            {"template": {"name": "a", "subject": "", "body_text": "x"}},
            {"order": 1, "delay": "two days", "template": {"name": "b", "subject": "s"}},
            {"order": 3, "delay_sec": 5, "template": {"name": "c", "subject": "{{ oops", "body_text": "x"}},
        ],
        accounts=[{"email": "nobody@example.com"}],
    )

    with pytest.raises(ValidationError) as caught:
        campaign_import(data=data)

    messages = caught.value.messages
    expected = [
        "time_zone: 'Mars/Olympus' is not a known time zone",
        "batch_size: Ensure this value is greater than or equal to 1.",
        "send_window.hour_end: must be a whole hour from 1 to 24, after hour_start",
        "send_window.days: Send days are a list of distinct weekdays",
        "steps[0].template.subject: This field cannot be blank.",
        "steps[1].delay: 'two days' is not a duration",
        "steps[1].order: step 1 is already defined at steps[0]",
        "steps[1].template: needs body_text or body_html",
        "steps[2].delay_sec: unknown key",
        "steps[2].template.subject: template syntax error on line 1",
        "accounts[0].email: no sender account 'nobody@example.com'; create it first",
    ]
    for start in expected:
        assert any(message.startswith(start) for message in messages), (start, messages)
    assert not Campaign.objects.exists() and not EmailTemplate.objects.exists()


def test_a_second_campaign_with_the_same_name_is_refused():
    campaign_import(data=campaign_data())
    with pytest.raises(ValidationError, match="name: a campaign named 'Spring outreach' exists"):
        campaign_import(data=campaign_data(accounts=[]))
    assert Campaign.objects.count() == 1
    assert SequenceStep.objects.count() == 2


def test_activating_on_import_without_accounts_is_refused():
    with pytest.raises(ValidationError, match="status: an active campaign needs at least one step and one account"):
        campaign_import(data=campaign_data(status="active", accounts=[]))
    assert not Campaign.objects.exists()


def test_templates_are_reused_by_name_or_identical_content_and_never_silently_changed():
    existing = EmailTemplateFactory(name="shared", subject="S", body_text="T", body_html="")
    same = {"name": "shared", "subject": "S", "body_text": "T"}
    data = campaign_data(steps=[{"template": "shared"}, {"template": same}])

    campaign = campaign_import(data=data)

    assert set(campaign.steps.values_list("template_id", flat=True)) == {existing.pk}
    changed = campaign_data(name="Other", accounts=[], steps=[{"template": {**same, "body_text": "changed"}}])
    with pytest.raises(ValidationError, match=r"steps\[0\]\.template\.name: a different template named 'shared'"):
        campaign_import(data=changed)
    assert EmailTemplate.objects.get().body_text == "T"


def test_an_unknown_template_name_and_unknown_top_level_keys_are_errors():
    data = campaign_data(steps=[{"template": "missing"}], batchsize=3)
    with pytest.raises(ValidationError) as caught:
        campaign_import(data=data)
    assert caught.value.messages[0].startswith("batchsize: unknown key")
    assert any(m.startswith("steps[0].template: no template named 'missing'") for m in caught.value.messages)


def test_a_campaign_file_is_parsed_as_json_or_yaml_by_its_extension():
    yaml_text = "name: From YAML\nstarts_at: 2025-04-01T08:00:00+02:00\nsteps: []\n"
    parsed = campaign_data_parse(text=yaml_text, file_name="c.yml")
    assert parsed["name"] == "From YAML"
    assert parsed["starts_at"] == datetime(2025, 4, 1, 6, 0, tzinfo=UTC)  # YAML gives a datetime; accepted too
    campaign = campaign_import(data=parsed)
    assert campaign.starts_at == datetime(2025, 4, 1, 8, 0, tzinfo=UTC) - timedelta(hours=2)
    assert campaign_data_parse(text='{"name": "J"}', file_name="c.JSON") == {"name": "J"}


@pytest.mark.parametrize(
    ("text", "file_name", "message"),
    [
        ('{"name": ', "c.json", "c.json is not valid JSON: Expecting value: line 1 column 10"),
        ("name: [unclosed", "c.yaml", "c.yaml is not valid YAML"),
        ("- a\n- b\n", "c.yaml", "the top level must be a mapping"),
        ("name: x", "c.txt", "use a .json, .yaml or .yml file"),
    ],
)
def test_a_malformed_campaign_file_is_refused_with_the_parsers_position(text, file_name, message):
    with pytest.raises(ValidationError, match=message.replace(".", r"\.").replace("[", r"\[")):
        campaign_data_parse(text=text, file_name=file_name)


WRONG_TYPES_YAML = """\
name: [not, a, string]
status: [active]
time_zone: 1
batch_size: true
send_window: {days: [0, true, 2.5]}
steps:
  - order: 1.5
    template: {name: t1, subject: [Hi], body_text: 7}
  - delay: 1.7
    threaded: "yes"
    template: 12
accounts:
  - {email: sales@example.com, daily_limit: true, min_wait_seconds: 1.7}
  - {email: [sales@example.com]}
"""


def test_wrong_types_in_a_campaign_file_are_refused_with_the_fields_path_never_converted():
    SenderAccountFactory(email="sales@example.com")
    data = campaign_data_parse(text=WRONG_TYPES_YAML, file_name="c.yaml")

    with pytest.raises(ValidationError) as caught:
        campaign_import(data=data)

    assert caught.value.messages == [
        "name: must be text, got a list",
        "status: a list is not one of: draft, active, paused",
        "time_zone: must be text, got 1 (quote it if you mean the text)",
        "batch_size: must be a whole number, got true",
        "send_window.days[1]: must be a whole number, got true",
        "send_window.days[2]: must be a whole number, got 2.5",
        "steps[0].order: must be a whole number, got 1.5",
        "steps[0].template.body_text: must be text, got 7 (quote it if you mean the text)",
        "steps[0].template.subject: must be text, got a list",
        "steps[1].threaded: must be true or false, got 'yes'",
        'steps[1].delay: must be a whole number or a duration like "2d", got 1.7',
        "steps[1].template: expected a template mapping or an existing template's name, got 12",
        "accounts[0].daily_limit: must be a whole number, got true",
        "accounts[0].min_wait_seconds: must be a whole number, got 1.7",
        "accounts[1].email: must be text, got a list",
    ]
    assert not Campaign.objects.exists() and not EmailTemplate.objects.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"name": ["not", "a", "string"]}, "name: must be text, got a list"),
        ({"accounts": [{"email": "sales@example.com", "daily_limit": True}]},
         "accounts[0].daily_limit: must be a whole number, got true"),
        ({"accounts": [{"email": "sales@example.com", "daily_limit": 1.7}]},
         "accounts[0].daily_limit: must be a whole number, got 1.7"),
        ({"batch_size": 1.7}, "batch_size: must be a whole number, got 1.7"),
    ],
)  # fmt: skip
def test_a_json_campaign_with_one_wrong_type_is_refused_with_just_that_message(override, message):
    SenderAccountFactory(email="sales@example.com")
    text = json.dumps(campaign_data(accounts=[]) | override)

    with pytest.raises(ValidationError) as caught:
        campaign_import(data=campaign_data_parse(text=text, file_name="c.json"))

    assert caught.value.messages == [message]
    assert not Campaign.objects.exists()


def test_the_import_campaign_command_lists_wrong_types_by_path(tmp_path):
    SenderAccountFactory(email="sales@example.com")
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: Typed\nsteps:\n  - template: {name: t, subject: S, body_text: B}\n    delay: 1.7\n"
        "accounts:\n  - {email: sales@example.com, daily_limit: true}\n"
    )

    with pytest.raises(CommandError) as caught:
        call_command("import_campaign", str(path))

    assert str(caught.value).splitlines()[1:] == [
        'steps[0].delay: must be a whole number or a duration like "2d", got 1.7',
        "accounts[0].daily_limit: must be a whole number, got true",
    ]
    assert not Campaign.objects.exists()
