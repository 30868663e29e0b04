"""Bad input anywhere in the API is a JSON 4xx naming where, never a 500 or an HTML page (inputs found by
fuzzing); and the errors Django answers itself under /api/ are JSON too."""

import json

import pytest
from django.conf import settings
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

from campaigns.models import Lead
from campaigns.tests.factories import CampaignFactory, SendRecordFactory, SuppressionFactory
from emailsys.apijson import MAX_JSON_DEPTH, JSONRenderer
from emailsys.testing import api_authorization
from workorders.models import WorkOrder
from workorders.tests.factories import ContactFactory, EventFactory, SegmentFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db

DEEP = "[" * 1000 + "]" * 1000  # Python's json: RecursionError, which DRF's parser does not catch
TOO_DEEP_MESSAGE = f"JSON parse error - nested too deeply (at most {MAX_JSON_DEPTH} levels of arrays and objects)."


@pytest.fixture
def api(admin_user) -> Client:
    return Client(HTTP_AUTHORIZATION=api_authorization(admin_user), raise_request_exception=False)


def post_json(api: Client, path: str, body: str, method: str = "post"):
    """`body` as written: escapes such as \\u0000 and \\ud800 reach the server as JSON text."""
    return getattr(api, method)(path, data=body.encode(), content_type="application/json")


def lead_body(campaign_id, custom_fields: str = "{}") -> str:
    return f'{{"campaign": {campaign_id}, "custom_fields": {custom_fields}, "recipients": [{{"email": "a@x.test"}}]}}'


# --- nesting ------------------------------------------------------------------------------------------------


def json_operations() -> list[tuple[str, str]]:
    """Every operation of the schema that takes a JSON body."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]


@pytest.fixture
def existing_ids() -> dict[str, int]:
    """An existing row for each kind of detail path, so the body is read (a missing row is a 404 first)."""
    record = SendRecordFactory()
    return {
        "campaigns": record.campaign_id,
        "leads": record.lead_id,
        "accounts": record.account_id,
        "templates": record.step.template_id,
        "send-records": record.pk,
        "workorders": WorkOrderFactory().pk,
        "steps": record.step_id,
        "suppressions": SuppressionFactory().pk,
        "contacts": ContactFactory().pk,
        "segments": SegmentFactory().pk,
        "events": EventFactory().pk,
    }


def test_every_json_operation_is_listed() -> None:
    operations = json_operations()
    assert ("POST", "/api/v1/leads/bulk/") in operations and ("PATCH", "/api/v1/workorders/{id}/") not in operations
    assert len(operations) >= 15


@pytest.mark.parametrize(("method", "path"), json_operations())
def test_json_nested_1000_deep_is_a_400_on_every_json_operation(api, existing_ids, method, path) -> None:
    kind = path.removeprefix("/api/v1/").split("/")[0]
    response = post_json(api, path.replace("{id}", str(existing_ids.get(kind, 0))), DEEP, method=method.lower())
    assert response.status_code == 400, response.content[:300]
    assert response.json() == {"detail": TOO_DEEP_MESSAGE}


def test_json_deeper_than_the_limit_is_refused_and_the_limit_itself_passes_the_parser(api) -> None:
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    over = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    assert post_json(api, "/api/v1/leads/bulk/", over).json() == {"detail": TOO_DEEP_MESSAGE}
    # A list of one list: the parser lets it through and the view says what is wrong with it.
    assert post_json(api, "/api/v1/leads/bulk/", at_limit).status_code == 400
    assert post_json(api, "/api/v1/leads/bulk/", at_limit).json() != {"detail": TOO_DEEP_MESSAGE}


def test_a_json_field_sent_as_a_form_value_nested_1000_deep_is_a_400(api) -> None:
    order = WorkOrderFactory()
    form = {
        "event": order.event_id, "stage": "invitation", "audience": order.audience_id, "account": order.account_id,
        "template": order.template_id, "subjects": DEEP,
    }  # fmt: skip
    response = api.post("/api/v1/workorders/", form)
    assert response.status_code == 400
    assert response.json() == {"subjects": [f"Nested more than {MAX_JSON_DEPTH} levels deep."]}


# --- NUL and lone surrogates --------------------------------------------------------------------------------


def test_nul_in_lead_custom_fields_is_a_400_naming_the_path_and_nothing_is_stored(api) -> None:
    campaign = CampaignFactory()
    response = post_json(api, "/api/v1/leads/", lead_body(campaign.pk, '{"plan": "gold", "note": "a\\u0000b"}'))
    assert response.status_code == 400
    assert response.json() == {
        "custom_fields": ["custom_fields.note: contains a NUL character (\\u0000), which cannot be stored."]
    }
    assert not Lead.objects.exists()


def test_nul_in_a_custom_field_name_is_a_400(api) -> None:
    campaign = CampaignFactory()
    response = post_json(api, "/api/v1/leads/", lead_body(campaign.pk, '{"no\\u0000te": "x"}'))
    assert response.status_code == 400
    assert response.json() == {
        "custom_fields": [
            "custom_fields.no\\u0000te: has a key that contains a NUL character (\\u0000), which cannot be stored."
        ]
    }


def test_lone_surrogate_in_bulk_leads_names_the_item(api) -> None:
    campaign = CampaignFactory()
    second = lead_body(campaign.pk, '{"plan": ["ok", "\\ud800"]}')
    body = f"[{lead_body(campaign.pk)}, {second}]"
    response = post_json(api, "/api/v1/leads/bulk/", body)
    assert response.status_code == 400
    assert response.json() == {
        "detail": "[1].custom_fields.plan[1]: contains a lone surrogate (\\ud800), which is not valid Unicode."
    }
    assert not Lead.objects.exists()


def test_lone_surrogate_in_work_order_subjects_is_a_400_and_nothing_changes(api) -> None:
    order = WorkOrderFactory()
    response = post_json(api, f"/api/v1/workorders/{order.pk}/", '{"subjects": {"en": "Hi \\udfff"}}', "patch")
    # PATCH is not an operation of work orders: 405, before the body is read.
    assert response.status_code == 405 and response.json() == {"detail": 'Method "PATCH" not allowed.'}
    body = json.dumps({
        "event": order.event_id, "stage": "invitation", "audience": order.audience_id, "account": order.account_id,
        "template": order.template_id, "subjects": {"en": "Hi \udfff"},
    })  # fmt: skip
    response = post_json(api, "/api/v1/workorders/", body)
    assert response.status_code == 400
    assert response.json() == {
        "subjects": ["subjects.en: contains a lone surrogate (\\udfff), which is not valid Unicode."]
    }
    assert WorkOrder.objects.count() == 1


def test_nul_in_work_order_subjects_sent_as_a_form_value_is_a_400(api) -> None:
    order = WorkOrderFactory()
    form = {
        "event": order.event_id, "stage": "invitation", "audience": order.audience_id, "account": order.account_id,
        "template": order.template_id, "subjects": '{"en": "Hi\\u0000"}',
    }  # fmt: skip
    response = api.post("/api/v1/workorders/", form)
    assert response.status_code == 400
    assert response.json() == {"subjects": ["subjects.en: contains a NUL character (\\u0000), which cannot be stored."]}
    assert WorkOrder.objects.count() == 1


def test_lone_surrogate_in_a_choice_field_is_a_400_that_renders(api) -> None:
    record = SendRecordFactory()
    response = post_json(api, f"/api/v1/send-records/{record.pk}/resolve/", '{"action": "\\ud800"}')
    assert response.status_code == 400
    assert response.json() == {"action": ["action: contains a lone surrogate (\\ud800), which is not valid Unicode."]}


def test_the_renderer_escapes_text_utf8_cannot_encode() -> None:
    """What a choice field's 400 echoes ("\\ud800" is not a valid choice) if such text ever gets that far."""
    rendered = JSONRenderer().render({"action": ['"\ud800" is not a valid choice.']})
    assert rendered == b'{"action": ["\\"\\ud800\\" is not a valid choice."]}'
    assert JSONRenderer().render({"name": "Zoë"}) == '{"name":"Zoë"}'.encode()


# --- other inputs -------------------------------------------------------------------------------------------


def test_a_superscript_digit_as_campaign_in_bulk_leads_is_a_400(api) -> None:
    CampaignFactory()
    response = post_json(api, "/api/v1/leads/bulk/", "[" + lead_body('"²"') + "]")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "1 of 1 leads are invalid; nothing was created.",
        "errors": [{"index": 0, "errors": {"campaign": ["Incorrect type. Expected pk value, received str."]}}],
    }


def test_a_20_mb_body_is_a_json_413(api) -> None:
    campaign = CampaignFactory()
    body = lead_body(campaign.pk, json.dumps({"blob": "x" * 20_000_000}))
    response = post_json(api, "/api/v1/leads/", body)
    assert response.status_code == 413
    assert response.json() == {
        "detail": f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes, the most this API "
        "reads."
    }
    assert not Lead.objects.exists()


# --- errors Django and DRF answer before a view -------------------------------------------------------------


def test_unknown_api_url_is_a_json_404(api, client) -> None:
    for answer in (api.get("/api/v1/nothing-here/"), client.get("/api/v2/")):
        assert answer.status_code == 404
        assert answer["Content-Type"] == "application/json"
        assert "No API endpoint at /api/" in answer.json()["detail"]
    assert "text/html" in client.get("/no-such-page/")["Content-Type"]  # pages keep Django's page


def test_missing_row_405_415_and_406_are_json(api) -> None:
    assert api.get("/api/v1/campaigns/999999/").json() == {"detail": "No Campaign matches the given query."}
    assert api.delete("/api/v1/health/").json() == {"detail": 'Method "DELETE" not allowed.'}
    unsupported = api.post("/api/v1/campaigns/", data=b"name=x", content_type="text/plain")
    assert unsupported.status_code == 415
    assert unsupported.json() == {"detail": 'Unsupported media type "text/plain" in request.'}
    not_acceptable = api.get("/api/v1/campaigns/", HTTP_ACCEPT="application/xml")
    assert not_acceptable.status_code == 406
    assert not_acceptable.json() == {"detail": "Could not satisfy the request Accept header."}


def test_a_crash_under_api_is_a_json_500_without_traceback(api, monkeypatch) -> None:
    def crash() -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("campaigns.api.campaign_list", crash)
    response = api.get("/api/v1/campaigns/")
    assert response.status_code == 500
    assert response.json() == {"detail": "Server error; it has been logged."}
    assert b"secret internals" not in response.content and b"Traceback" not in response.content


def test_every_writable_json_field_of_the_api_refuses_what_the_parser_refuses() -> None:
    """A form value reaches a JSON field without the parser: each such field must check it itself."""
    from django.urls import URLPattern, URLResolver, get_resolver
    from rest_framework import serializers

    from emailsys.apijson import StorableJSONField

    def views(patterns) -> set[type]:
        found = set()
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found |= views(pattern.url_patterns)
            elif isinstance(pattern, URLPattern) and getattr(pattern.callback, "cls", None) is not None:
                found.add(pattern.callback.cls)
        return found

    checked = []
    for view in views(get_resolver().url_patterns):
        serializer_class = getattr(view, "serializer_class", None)
        if serializer_class is None or not (hasattr(view, "create") or hasattr(view, "update")):
            continue  # read-only views take no body
        for name, field in serializer_class().fields.items():
            if isinstance(field, serializers.JSONField) and not field.read_only:
                checked.append(f"{serializer_class.__name__}.{name}")
                assert isinstance(field, StorableJSONField), f"{serializer_class.__name__}.{name}"
    assert {"LeadSerializer.custom_fields", "WorkOrderSerializer.subjects"} <= set(checked)
