"""The work-order stream on the event bus (`emailsys.eventbus`): stream "workorder", key = the work order's id, so a
work order's events run one at a time, in order, on the `workorders` pool. Operator actions, the pipeline and the
sweeper emit through here; the stream's handler, which runs the pipeline, is `workorders.services.events`."""

from emailsys.eventbus import event_emit, event_redispatch
from emailsys.models import ReceivedEvent

STREAM = "workorder"


def workorder_event_emit(*, work_order_id: int, kind: str, payload: dict | None = None) -> None:
    """Call inside the transaction that made the change: the event exists if and only if the change does."""
    event_emit(stream=STREAM, key=str(work_order_id), kind=kind, payload=payload or {})


def workorder_resume(*, work_order_id: int) -> str:
    """Gets a stalled work order going again. A dead worker's event is still in flight and holds back every later
    event of the work order, so that one is re-dispatched; with none in flight a "resume" event is emitted."""
    in_flight = (
        ReceivedEvent.objects.filter(stream=STREAM, key=str(work_order_id), state__in=ReceivedEvent.IN_FLIGHT)
        .order_by("id")
        .values_list("id", flat=True)
        .first()
    )
    if in_flight is not None and event_redispatch(event_id=in_flight):
        return "redispatched"
    workorder_event_emit(work_order_id=work_order_id, kind="resume")
    return "resume emitted"
