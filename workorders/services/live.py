"""Live updates of work orders: a full snapshot (`workorders.selectors.workorder_snapshot`) to the work order's
group (`workorder-<id>`) and the dashboard, after commit (emailsys.live)."""

from emailsys.live import LiveKind, live_changed, live_kind_register
from workorders.models import WorkOrder
from workorders.selectors import workorder_snapshot


def workorder_fragments(work_order_id: int, payload: dict) -> dict[str, str]:
    """Element id → HTML of the work order's live parts (the page templates render the same ones)."""
    return {}


def workorder_live_register() -> None:
    live_kind_register(
        LiveKind(
            name="workorder",
            model=WorkOrder,
            snapshot=lambda work_order_id: workorder_snapshot(work_order_id=work_order_id),
            render=workorder_fragments,
            also_groups=("dashboard",),
        )
    )


def workorder_broadcast(*, work_order_id: int) -> None:
    """Call inside the transaction that made the change: its version is incremented there, clients get the
    snapshot once it is committed."""
    live_changed("workorder", work_order_id)
