"""Schemathesis against the OpenAPI schema as served (drf-spectacular's generator), with a superuser's token:
no input makes a 500. Bounded and derandomized so CI sees the same cases each run: 30 examples per operation
(schema-valid and schema-invalid), no coverage phase (it adds ~500 cases per write operation).

Requests go to Django's own WSGI handler in this process, on the test's transaction, like Django's test client:
the whole stack from middleware to PostgreSQL, without a server's start-up and with the error's traceback in the
test output. Each operation is a test of its own, on fresh fixture rows (DELETE may remove them)."""

from collections.abc import Iterator

import pytest
import schemathesis
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings

from campaigns.tests.factories import (
    ActivityFactory,
    CampaignAccountFactory,
    CampaignFactory,
    LeadFactory,
    RecipientFactory,
    SenderAccountFactory,
    SendRecordFactory,
    SequenceStepFactory,
    SuppressionFactory,
)
from emailsys.testing import api_authorization
from workorders.tests.factories import ContactFactory, EventFactory, SegmentFactory, WorkOrderFactory

schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
schema.app = WSGIHandler()
schema.config.phases.coverage.enabled = False


@pytest.fixture
def superuser_headers(db, admin_user) -> Iterator[dict[str, str]]:
    """Rows for the detail operations to find (ids 1, 2, ... are what Hypothesis tries first), and the token."""
    for _ in range(2):
        campaign = CampaignFactory()
        account = SenderAccountFactory()
        CampaignAccountFactory(campaign=campaign, account=account)
        step = SequenceStepFactory(campaign=campaign)
        lead = LeadFactory(campaign=campaign)
        SendRecordFactory(recipient=RecipientFactory(lead=lead), step=step, account=account)
        ActivityFactory(lead=lead)
        WorkOrderFactory()
        ContactFactory()
        SegmentFactory()
        EventFactory()
        SuppressionFactory()
    cache.clear()  # the throttles' counters: one operation's examples stay far below the user rate
    # Django's test client does the same: the connection holds the test's transaction across requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield {"Authorization": api_authorization(admin_user)}
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# The CRUD of issue 15 (31 operations), a test of its own so that its time shows: 20 examples each, ~40 s on two
# busy cores (its share of the suite's time).
CRUD_TAGS = ["contacts", "segments", "events", "steps", "suppressions"]


def _no_server_error(case, headers: dict[str, str]) -> None:
    response = case.call(headers=headers)
    documented = set(case.operation.definition.raw.get("responses", {}))  # /health/ documents its 503
    assert response.status_code < 500 or str(response.status_code) in documented, (
        f"{response.status_code} for {case.as_curl_command()}\n{response.text[:2000]}"
    )


@schema.exclude(tag=CRUD_TAGS).parametrize()
@settings(max_examples=30, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case, superuser_headers) -> None:
    _no_server_error(case, superuser_headers)


@schema.include(tag=CRUD_TAGS).parametrize()
@settings(max_examples=20, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_crud_input_makes_a_server_error(case, superuser_headers) -> None:
    _no_server_error(case, superuser_headers)
