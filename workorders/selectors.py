"""Work-order reads for the admin, the API, commands and live pages: querysets and small read models, each in
a few queries. Nothing here writes; the writes are `workorders.services`."""

from django.db.models import QuerySet

from workorders.models import Segment, WorkOrder, WorkOrderStep
from workorders.services.segments import segment_contacts

# --- work orders -------------------------------------------------------------------------------------------


def workorder_list() -> QuerySet[WorkOrder]:
    """Newest first, each with its event and its steps: the API's list and detail (lease fields are on the row)."""
    return WorkOrder.objects.select_related("event").prefetch_related("steps").order_by("-id")


def workorder_snapshot(*, work_order_id: int) -> dict:
    """Full state for live clients (duplicates and reordering are harmless): the work order, its lease and its
    steps in pipeline order; None when it is gone. The version is the live message's (emailsys.live)."""
    work_order = WorkOrder.objects.filter(id=work_order_id).first()
    if work_order is None:
        return None
    steps = list(WorkOrderStep.objects.filter(work_order_id=work_order_id).order_by("order"))
    return {
        "type": "workorder",
        "id": work_order.id,
        "status": work_order.status,
        "stop_requested": work_order.stop_requested,
        "lock_owner": work_order.lock_owner,
        "lock_expires_at": work_order.lock_expires_at.isoformat() if work_order.lock_expires_at else None,
        "resume_at": work_order.resume_at.isoformat() if work_order.resume_at else None,
        "steps": [
            {"name": s.name, "status": s.status, "message": s.message, "done": s.done, "total": s.total} for s in steps
        ],
    }


# --- segments ----------------------------------------------------------------------------------------------


def segment_count(*, segment: Segment) -> int:
    """How many contacts `segment` makes eligible now: two queries (the segments' rules, then one COUNT).
    Raises ValidationError for a rule that went bad (see `segment_contacts`)."""
    return segment_contacts(segment=segment).count()


def segment_sample_emails(*, segment: Segment, limit: int) -> list[str]:
    """The addresses of the first `limit` contacts `segment` makes eligible now, by address. Raises
    ValidationError for a rule that went bad."""
    return list(segment_contacts(segment=segment).order_by("email").values_list("email", flat=True)[:limit])
