"""How work-order events leave: through the transactional outbox (`emailsys.eventbus`, stream "workorder", key =
the work order's id) when it is installed, else straight to the `workorders.process` task after commit."""

import logging

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)

STREAM = "workorder"


def workorder_event_emit(*, work_order_id: int, kind: str, payload: dict | None = None) -> None:
    """Call inside the transaction that made the change: the event exists if and only if the change does."""
    try:
        from emailsys.eventbus import event_emit
    except ImportError:
        transaction.on_commit(
            lambda: current_app.send_task("workorders.process", kwargs={"work_order_id": work_order_id, "kind": kind})
        )
        return
    event_emit(stream=STREAM, key=str(work_order_id), kind=kind, payload=payload or {})
