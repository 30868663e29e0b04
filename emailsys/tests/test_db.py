"""Database helpers: the statements every email repeats are prepared once per connection (unless a pooler
forbids it), and rows_update writes per-row values guarded by a condition."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.models import Lead
from campaigns.tests.factories import LeadFactory
from emailsys.db import execute_prepared, rows_update

pytestmark = pytest.mark.django_db

STATEMENT = "UPDATE campaigns_lead SET last_sent_at = NULL WHERE id = %(lead)s"


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_a_repeated_statement_is_prepared_once_per_connection_and_still_logged() -> None:
    lead = LeadFactory()
    with CaptureQueriesContext(connection) as captured:
        assert [execute_prepared(STATEMENT, {"lead": lead.id}) for _ in range(3)] == [1, 1, 1]
    assert [query["sql"] for query in captured.captured_queries] == [STATEMENT] * 3
    assert len([text for text in prepared_statements() if "campaigns_lead SET last_sent_at" in text]) == 1


def test_without_prepared_statements_nothing_is_prepared(settings) -> None:
    settings.DB_PREPARED_STATEMENTS = False
    lead = LeadFactory()
    statement = STATEMENT.replace("last_sent_at = NULL", "last_sent_at = NULL, current_step = current_step")
    assert [execute_prepared(statement, {"lead": lead.id}) for _ in range(3)] == [1, 1, 1]
    assert not [text for text in prepared_statements() if "current_step = current_step" in text]


def test_rows_update_writes_each_rows_values_only_where_the_guard_holds() -> None:
    first, second, stopped = LeadFactory(), LeadFactory(), LeadFactory(state=Lead.State.STOPPED)
    rows_update(
        Lead,
        {first.id: {"current_step": 2}, second.id: {"current_step": 3}, stopped.id: {"current_step": 4}},
        only_if={"state": Lead.State.IN_PROGRESS},
    )
    steps = dict(Lead.objects.filter(id__in=[first.id, second.id, stopped.id]).values_list("id", "current_step"))
    assert steps == {first.id: 2, second.id: 3, stopped.id: stopped.current_step}
