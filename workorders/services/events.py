"""The handler of the work-order stream (settings.EVENT_HANDLERS["workorder"]): what a `workorders` worker runs for
each event of a work order. It sits above the pipeline (`steps`); emitting is `workorders.services.stream`."""

import logging

from workorders.services.steps import workorder_run

logger = logging.getLogger(__name__)


def workorder_event_handle(*, event) -> str:
    """EVENT_HANDLERS["workorder"]: "start", "restart", "approve" and "resume" all process the work order (restart
    reset its steps, approve opened the gate, when they were requested); the lease makes a duplicate harmless.
    Other kinds are logged and ignored."""
    if event.kind not in ("start", "restart", "approve", "resume"):
        logger.warning("work order event %s: unknown kind %r ignored", event.id, event.kind)
        return "ignored"
    return workorder_run(work_order_id=int(event.key))
