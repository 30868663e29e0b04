"""Live updates of work orders: a full snapshot (`workorders.selectors.workorder_snapshot`) after commit, to the
work order's group (`workorder-<id>`) and the dashboard, so duplicate or reordered messages are harmless."""

from emailsys.live import live_broadcast
from workorders.selectors import workorder_snapshot


def workorder_broadcast(*, work_order_id: int) -> None:
    """Call inside the transaction that made the change: clients get the snapshot only once it is committed."""
    snapshot = workorder_snapshot(work_order_id=work_order_id)
    live_broadcast(group=f"workorder-{work_order_id}", payload=snapshot)
    live_broadcast(group="dashboard", payload=snapshot)
