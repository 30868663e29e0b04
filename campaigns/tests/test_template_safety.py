"""A template's fault fails one recipient, never a batch; renders have a time and output budget; templates are
checked when saved; test sends, dry runs and debug_template render for a real lead or sample values, say which,
show a threaded step's `Re:` subject and warn about variables that render empty."""

import re
import signal
import threading
import time
import urllib.request
from email import policy
from email.parser import BytesParser

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from campaigns.models import (
    AccountDailyUsage,
    Activity,
    Campaign,
    CampaignAccount,
    DryRunRecord,
    EmailTemplate,
    Lead,
    Recipient,
    SendRecord,
)
from campaigns.services.imports import campaign_import
from campaigns.services.previews import lead_dry_run, step_send_test
from campaigns.services.templating import TemplateRenderError, template_check, template_render
from campaigns.tests.factories import SenderAccountFactory
from campaigns.tests.scenarios import campaign_scenario, run_until_idle
from emailsys.testing import (
    RecordingSmtpServer,
    api_authorization,
    daphne_argv,
    free_port,
    port_answers,
    process_env,
    wait_until,
)

pytestmark = pytest.mark.django_db

TRIPLE_LOOP = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}{{ inner }}" \
              "{% endfor %}{% endfor %}{% endfor %}"  # fmt: skip


def parse(content: bytes):
    return BytesParser(policy=policy.default).parsebytes(content)


def render_text(body_text: str, context: dict | None = None, *, within: float = 10.0) -> str:
    """Renders in a thread and gives up after `within` seconds (the code before the budget never returned)."""
    outcome: dict = {}

    def run() -> None:
        try:
            template = EmailTemplate(subject="Subject", body_text=body_text)
            outcome["text"] = template_render(template=template, context=context or {}, signature="").text
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"the render was still running after {within} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["text"]


# --- a fault fails one recipient, never the batch -------------------------------------------------------------


def test_a_lead_whose_template_divides_by_zero_fails_alone_and_the_batch_goes_on() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=1, leads=3, recipients_per_lead=1, steps=1,
                                     daily_limit=50)  # fmt: skip
        template = scenario.steps[0].template
        template.body_text = "That is {{ 100 // seats }} emails per seat."
        template.save()
        broken, *others = scenario.leads
        Lead.objects.filter(id=broken.id).update(custom_fields={"seats": 0})
        Lead.objects.filter(id__in=[lead.id for lead in others]).update(custom_fields={"seats": 4})
        run_until_idle()
        mails = smtp.snapshot()

    assert sorted(mail.rcpt_tos for mail in mails) == [("r0.lead1@customer.test",), ("r0.lead2@customer.test",)]
    assert all("That is 25 emails per seat." in parse(mail.content).get_body(("plain",)).get_content()
               for mail in mails)  # fmt: skip
    failed = SendRecord.objects.get(lead=broken)
    assert failed.state == SendRecord.State.FAILED
    assert failed.last_error == "template error: text: ZeroDivisionError: integer division or modulo by zero"
    activity = Activity.objects.get(kind=Activity.Kind.TEMPLATE_ERROR, lead=broken)
    assert "ZeroDivisionError" in activity.message
    # the failed send gave its reservation back: the account counts the two emails that went out, no more
    account = scenario.accounts[0]
    assert AccountDailyUsage.objects.get(account=account).reserved == 2
    assert CampaignAccount.objects.get(account=account).usage_reserved == 2
    assert SendRecord.objects.filter(state=SendRecord.State.SENT).count() == 2


@pytest.mark.parametrize(
    ("body_text", "expected"),
    [
        ("{{ a // b }}", "text: ZeroDivisionError: integer division or modulo by zero"),
        ("{{ range(10**7)|list|length }}", "text: OverflowError: Range too big."),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "text: RecursionError: maximum recursion depth"),
        ("{{ a + 'x' }}", "text: TypeError: unsupported operand type(s) for +: 'int' and 'str'"),
        ("{{ plan.upper() }}", "text: UndefinedError: 'int object' has no attribute 'upper'"),
    ],
    ids=["zero-division", "overflow", "recursion", "type-error", "undefined"],
)
def test_every_exception_while_rendering_is_a_template_error_naming_the_part(body_text: str, expected: str) -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render_text(body_text, {"a": 1, "b": 0, "plan": 5})
    assert str(caught.value).startswith(expected)
    assert caught.value.field == "body_text"


def test_a_memory_error_is_a_template_error(settings) -> None:
    settings.TEMPLATE_RENDER_MAX_BYTES = 10**17  # no budget in the way: 10 PB is past any address space
    with pytest.raises(TemplateRenderError, match=r"^text: MemoryError"):
        render_text("{{ 'x' * 10**16 }}")


def test_a_fault_in_the_subject_names_the_subject() -> None:
    template = EmailTemplate(subject="Hi {{ 1 // 0 }}", body_text="fine")
    with pytest.raises(TemplateRenderError, match=r"^subject: ZeroDivisionError") as caught:
        template_render(template=template, context={}, signature="")
    assert caught.value.field == "subject"


# --- the render budget -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("inner", ["", "x"], ids=["writing-nothing", "writing-a-character-each-time"])
def test_a_triple_loop_over_range_100000_ends_at_the_budget_with_a_clear_error(settings, inner: str) -> None:
    settings.TEMPLATE_RENDER_TIMEOUT_SECONDS = 0.5
    settings.TEMPLATE_RENDER_MAX_BYTES = 10**9 if not inner else 100_000
    started = time.monotonic()
    with pytest.raises(TemplateRenderError) as caught:
        render_text(TRIPLE_LOOP, {"inner": inner})
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed
    expected = (
        "the text would be longer than the output budget of 100000" if inner else "took longer than 0.5 s to render"
    )
    assert expected in str(caught.value)


def test_a_macro_calling_itself_twice_meets_the_clock(settings) -> None:
    settings.TEMPLATE_RENDER_TIMEOUT_SECONDS = 0.5
    source = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    with pytest.raises(TemplateRenderError, match="took longer than 0.5 s"):
        render_text(source)


@pytest.mark.parametrize(
    ("body_text", "expected"),
    [
        ("{{ 'x' * 10**10 }}", "repeating a value 10000000000 times would be longer than the output budget"),
        ("{{ 2 ** 10000000 }}", "2 ** 10000000 has more than 30,000 digits"),
        ("{{ 'x'|center(10**9) }}", "center(1000000000) would be longer than the output budget"),
        ("{{ 'x'.rjust(10**9) }}", "rjust(1000000000) would be longer than the output budget"),
        ("{% set s = 'a' * 100000 %}{{ s|replace('a', s) }}", "replace() would be longer than the output budget"),
        ("{{ ([('a' * 100000)] * 1000)|join }}", "join() would be longer than the output budget"),
        ("{{ '%0999999999d' % 1 }}", "a formatted value would be longer than the output budget"),
        ("{{ '{:>{w}}'.format(1, w=10**9) }}", "a formatted value would be longer than the output budget"),
    ],
    ids=["repeat", "power", "center", "rjust", "replace", "join", "percent-width", "format-width"],
)
def test_what_would_outgrow_the_budget_is_refused_before_it_is_built(body_text: str, expected: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateRenderError, match=re.escape(expected)):
        render_text(body_text)
    assert time.monotonic() - started < 1.0


def test_ordinary_templates_render_as_before() -> None:
    source = (
        "Hi {{ first_name|default('there') }}, {{ '%.2f' % price }} {{ '{:,}'.format(1234567890) }} "
        "{% for item in items %}{{ loop.index }}/{{ loop.length }} {{ item|upper }} {% endfor %}"
        "{{ 'a,b'|replace(',', ';') }} {{ ['x', 'y']|join('+') }} {{ 'ab'|center(6) }}|{{ 10 ** 20 }}"
    )
    text = render_text(source, {"price": 3.14159, "items": ["a", "b"]})
    assert text == "Hi there, 3.14 1,234,567,890 1/2 A 2/2 B a;b x+y   ab  |100000000000000000000"


@pytest.mark.parametrize(
    ("body_text", "shown"),
    [("{{ ''|attr('format') }}", "a function"), ("{{ tags }}", "a list")],
    ids=["method", "list"],
)
def test_writing_a_python_object_into_an_email_is_an_error(body_text: str, shown: str) -> None:
    with pytest.raises(TemplateRenderError, match=re.escape(f"text: it would write {shown} into the email")) as caught:
        render_text(body_text, {"tags": ["a", "b"]})
    assert "write text, a number or a date" in str(caught.value)


# --- checked on save ----------------------------------------------------------------------------------------


def test_template_check_reports_each_problem_on_its_field(settings) -> None:
    settings.TEMPLATE_RENDER_TIMEOUT_SECONDS = 0.3
    template = EmailTemplate(subject="Hi {{ first_name|shout }}", body_text="{% if x is odd_ish %}x{% endif %}",
                             body_html=TRIPLE_LOOP)  # fmt: skip
    errors = template_check(template)
    assert errors == {
        "subject": "template syntax error on line 1: No filter named 'shout'.",
        "body_text": "TemplateRuntimeError: No test named 'odd_ish' found.",  # under an `if`: Jinja defers it
        "body_html": "the template took longer than 0.3 s to render",
    }
    errors = template_check(EmailTemplate(subject="{{ 1 // 0 }}", body_text="{{ ''|attr('format') }}"))
    assert errors["subject"] == "ZeroDivisionError: integer division or modulo by zero"
    assert errors["body_text"].startswith("it would write a function into the email")
    assert template_check(EmailTemplate(subject="{{ '' }}", body_text="x")) == {"subject": "it renders empty"}


def test_template_check_passes_templates_that_use_custom_and_event_fields() -> None:
    template = EmailTemplate(
        subject="Ideas for {{ company_name }}, {{ first_name }}",
        body_text="{{ pain_point|title }}: {{ seats * 2 }} seats, {% for t in tags %}{{ t }} {% endfor %}"
        "{{ starts_at.strftime('%B %d') }} {{ account_signature }}",  # fmt: skip
    )
    assert template_check(template) == {}


def test_the_admin_refuses_a_template_that_cannot_render_with_the_error_on_the_field(admin_client) -> None:
    response = admin_client.post(
        reverse("admin:campaigns_emailtemplate_add"),
        {"name": "broken", "subject": "Hi {{ first_name|shout }}", "body_text": "{{ 100 // 0 }}", "body_html": ""},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["subject"] == ["template syntax error on line 1: No filter named 'shout'."]
    assert errors["body_text"] == ["ZeroDivisionError: integer division or modulo by zero"]
    assert "No filter named" in response.content.decode()
    assert not EmailTemplate.objects.exists()

    fine = {"name": "fine", "subject": "Hi {{ first_name }}", "body_text": "Hello {{ company_name }}", "body_html": ""}
    assert admin_client.post(reverse("admin:campaigns_emailtemplate_add"), fine).status_code == 302
    page = admin_client.get(reverse("admin:campaigns_emailtemplate_change", args=[EmailTemplate.objects.get().pk]))
    assert "Subject: Hi Jane" in page.content.decode() and "Rendered with sample values" in page.content.decode()


def test_the_admin_preview_of_a_stored_faulty_template_shows_the_error(admin_client, settings) -> None:
    settings.TEMPLATE_RENDER_TIMEOUT_SECONDS = 0.3
    template = EmailTemplate.objects.create(name="old", subject="Hi", body_text="{{ ''|attr('format') }}")
    page = admin_client.get(reverse("admin:campaigns_emailtemplate_change", args=[template.pk]))
    assert page.status_code == 200
    assert "text: it would write a function into the email" in page.content.decode()


def test_the_api_refuses_a_template_that_cannot_render(admin_user) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=api_authorization(admin_user))
    bad = api.post("/api/v1/templates/", {"name": "t", "subject": "Hi", "body_text": "{{ seats // 0 }}"}, format="json")
    assert bad.status_code == 400
    assert bad.json() == {"body_text": ["ZeroDivisionError: division by zero"]}
    created = api.post("/api/v1/templates/", {"name": "t", "subject": "Hi {{ first_name }}", "body_text": "Hello"},
                       format="json")  # fmt: skip
    assert created.status_code == 201
    patched = api.patch(f"/api/v1/templates/{created.json()['id']}/", {"subject": "{{ x|nope }}"}, format="json")
    assert patched.status_code == 400 and "No filter named 'nope'" in patched.json()["subject"][0]
    assert EmailTemplate.objects.get().subject == "Hi {{ first_name }}"


def test_the_yaml_import_refuses_a_template_that_cannot_render() -> None:
    SenderAccountFactory(email="sales@example.com")
    data = {
        "name": "Imported",
        "steps": [{"order": 1, "template": {"name": "t1", "subject": "Hi", "body_text": "{{ range(10**7)|list }}"}},
                  {"order": 2, "template": {"name": "t2", "subject": "{{ x|nope }}", "body_text": "x"}}],
        "accounts": [{"email": "sales@example.com"}],
    }  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        campaign_import(data=data)
    messages = caught.value.messages
    assert any(m.startswith("steps[0].template.body_text: OverflowError: Range too big") for m in messages), messages
    assert "steps[1].template.subject: template syntax error on line 1: No filter named 'nope'." in messages
    assert not Campaign.objects.exists() and not EmailTemplate.objects.exists()


def test_debug_template_prints_the_error_instead_of_a_traceback() -> None:
    scenario = campaign_scenario(smtp_port=free_port(), leads=1, recipients_per_lead=1, steps=1)
    EmailTemplate.objects.filter(id=scenario.steps[0].template_id).update(body_text="{{ 1 // 0 }}")
    output = run("debug_template", str(scenario.campaign.id), "--lead-id", str(scenario.leads[0].id))
    assert "template error: text: ZeroDivisionError: integer division or modulo by zero" in output


@pytest.mark.django_db(transaction=True)
def test_the_admin_preview_under_daphne_answers_within_the_budget_and_daphne_still_stops(
    processes, django_user_model
) -> None:
    template = EmailTemplate.objects.create(name="loop", subject="Hi", body_text=TRIPLE_LOOP.replace("{{ inner }}", ""))
    staff = django_user_model.objects.create_superuser("operator", password="x")
    client = Client()
    client.force_login(staff)
    port = free_port()
    daphne = processes("daphne", daphne_argv(port), env=process_env(TEMPLATE_RENDER_TIMEOUT_SECONDS="1"))
    wait_until(lambda: port_answers(port), timeout=30, what="daphne listening")

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{reverse('admin:campaigns_emailtemplate_change', args=[template.pk])}",
        headers={"Cookie": f"sessionid={client.cookies['sessionid'].value}"},
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - http on loopback
        page = response.read().decode()
    assert response.status == 200 and time.monotonic() - started < 10
    assert "text: the template took longer than 1 s to render" in page

    daphne.signal_group(signal.SIGTERM)  # nothing is left rendering, so daphne stops
    wait_until(lambda: not daphne.alive, timeout=15, what="daphne stopped after SIGTERM")


# --- test sends and previews ----------------------------------------------------------------------------------


def run(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


IDEAS = "Ideas for {{ company_name }}'s team"


def ideas_scenario(smtp_port: int, *, leads: int, threaded: bool = False):
    scenario = campaign_scenario(smtp_port=smtp_port, accounts=1, leads=leads, recipients_per_lead=1, steps=2,
                                 threaded_follow_up=threaded, daily_limit=50)  # fmt: skip
    EmailTemplate.objects.filter(steps__campaign=scenario.campaign).update(
        subject=IDEAS, body_text="Hi {{ first_name }}, about {{ pain_point }}."
    )
    return scenario


def test_a_test_send_without_a_lead_renders_for_the_campaigns_first_lead_and_says_so() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = ideas_scenario(smtp.port, leads=2)
        first = Recipient.objects.get(lead=scenario.leads[0])
        Recipient.objects.filter(id=first.id).update(company_name="Acme", first_name="Ada")
        Lead.objects.filter(id=scenario.leads[0].id).update(custom_fields={"pain_point": "deliverability"})
        step = scenario.campaign.steps.get(order=1)
        result = step_send_test(step=step, to_email="ops@team.test", account=scenario.accounts[0])
        (mail,) = smtp.snapshot()

    message = parse(mail.content)
    assert message["Subject"] == "[TEST] Ideas for Acme's team"
    assert "Hi Ada, about deliverability." in message.get_body(("plain",)).get_content()
    activity = Activity.objects.get(kind=Activity.Kind.TEST_SENT)
    assert f"rendered for lead {scenario.leads[0].id}'s first recipient (r0.lead0@customer.test)" in activity.message
    assert result.empty_variables == [] and result.test.lead_id == scenario.leads[0].id


def test_a_test_send_of_a_campaign_without_leads_uses_sample_values_and_says_so() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = ideas_scenario(smtp.port, leads=0)
        output = run("send_test", str(scenario.campaign.id), "--to", "me@team.test")
        (mail,) = smtp.snapshot()

    message = parse(mail.content)
    assert message["Subject"] == "[TEST] Ideas for Example Inc's team"
    assert "Hi Jane, about [pain_point]." in message.get_body(("plain",)).get_content()
    assert "rendered for sample values" in output
    assert "rendered for sample values" in Activity.objects.get(kind=Activity.Kind.TEST_SENT).message


def test_a_variable_that_renders_empty_is_warned_about_in_the_test_send_the_dry_run_and_debug_template() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = ideas_scenario(smtp.port, leads=1)  # lead 0's recipient has no first name and no company
        lead = scenario.leads[0]
        step = scenario.campaign.steps.get(order=1)
        result = step_send_test(step=step, to_email="ops@team.test", account=scenario.accounts[0], lead=lead)
        (mail,) = smtp.snapshot()
        lead_dry_run(lead=Lead.objects.get(id=lead.id))

    assert parse(mail.content)["Subject"] == "[TEST] Ideas for 's team"
    assert result.empty_variables == ["company_name", "first_name", "pain_point"]
    test_activity = Activity.objects.get(kind=Activity.Kind.TEST_SENT)
    assert "renders empty: company_name, first_name, pain_point" in test_activity.message
    dry_run = Activity.objects.get(kind=Activity.Kind.DRY_RUN)
    assert "renders empty: r0.lead0@customer.test: company_name, first_name, pain_point" in dry_run.message
    output = run("debug_template", str(scenario.campaign.id), "--lead-id", str(lead.id))
    assert "renders empty: company_name, first_name, pain_point" in output


def test_a_threaded_steps_test_and_dry_run_show_the_real_re_subject() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = ideas_scenario(smtp.port, leads=1, threaded=True)
        EmailTemplate.objects.filter(steps__order=2).update(subject="(follow-up)")
        Recipient.objects.filter(lead=scenario.leads[0]).update(company_name="Acme")
        lead = Lead.objects.get(id=scenario.leads[0].id)
        step = scenario.campaign.steps.get(order=2)
        step_send_test(step=step, to_email="ops@team.test", account=scenario.accounts[0], lead=lead)
        step_send_test(step=step, to_email="ops@team.test", account=scenario.accounts[0])  # the first lead too
        Lead.objects.filter(id=lead.id).update(current_step=2)
        lead_dry_run(lead=Lead.objects.get(id=lead.id))
        subjects = [parse(mail.content)["Subject"] for mail in smtp.snapshot()]

    assert subjects == ["[TEST] Re: Ideas for Acme's team", "[TEST] Re: Ideas for Acme's team"]
    assert DryRunRecord.objects.get().subject == "Re: Ideas for Acme's team"
    output = run("debug_template", str(scenario.campaign.id), "--step", "2")
    assert "Subject: Re: Ideas for Acme's team" in output and f"rendered for lead {lead.id}'s first recipient" in output
