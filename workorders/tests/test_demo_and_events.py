"""The demo work order, and how a stalled work order is got going again through the event bus."""

import pytest

from emailsys.models import OutboxEvent, ReceivedEvent
from workorders.demo import demo_workorder_create
from workorders.models import WorkOrder
from workorders.selectors import segment_count
from workorders.services.stream import STREAM, workorder_resume
from workorders.tests.factories import WorkOrderFactory

pytestmark = pytest.mark.django_db


def test_the_demo_work_order_is_ready_to_start_with_contacts_in_two_languages():
    work_order = demo_workorder_create()

    assert demo_workorder_create() == work_order  # idempotent
    assert work_order.status == WorkOrder.Status.READY
    assert not work_order.auto_approve  # the demo shows the review gate
    assert work_order.languages == ["en", "fr"]
    assert segment_count(segment=work_order.audience) == 12
    assert work_order.steps.count() == 5


def test_resume_redispatches_a_dead_workers_in_flight_event_else_emits_one():
    work_order = WorkOrderFactory()
    assert workorder_resume(work_order_id=work_order.id) == "resume emitted"
    assert list(OutboxEvent.objects.filter(stream=STREAM, key=str(work_order.id)).values_list("kind", flat=True)) == [
        "resume"
    ]

    outbox = OutboxEvent.objects.get(stream=STREAM, key=str(work_order.id))
    ReceivedEvent.objects.filter(outbox_id=outbox.id).delete()
    started = ReceivedEvent.objects.create(
        outbox_id=outbox.id, stream=STREAM, key=str(work_order.id), kind="resume", payload={},
        via="direct", state=ReceivedEvent.State.STARTED, dispatched_at=outbox.created_at,
        started_at=outbox.created_at, attempts=1,
    )  # fmt: skip
    assert workorder_resume(work_order_id=work_order.id) == "redispatched"
    started.refresh_from_db()
    assert started.state == ReceivedEvent.State.DISPATCHED
