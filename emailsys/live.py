"""Live updates: services publish full-state snapshots to channel-layer groups; consumers relay them.

Group names: `dashboard` for overviews, `<kind>-<id>` for one object (e.g. `workorder-42`).
"""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

LIVE_MESSAGE_TYPE = "live.message"


def live_publish_now(*, group: str, payload: dict) -> None:
    async_to_sync(get_channel_layer().group_send)(group, {"type": LIVE_MESSAGE_TYPE, "payload": payload})


def live_broadcast(*, group: str, payload: dict) -> None:
    """Publishes after the surrounding transaction commits, so no client sees state that was rolled back."""
    transaction.on_commit(lambda: live_publish_now(group=group, payload=payload))
