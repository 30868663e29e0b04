"""WS /ws/emails/{client_id}: the seed's live feed of inbound mail (`email_event` and `stats_update` messages), for
active staff users logged in by a session who hold processing.view_inboundemail and processing.view_emailresult.

A relay only: it is the project's live socket (emailsys.consumers.LiveGroupConsumer: the process's shared group
hub, the access checks at the handshake, on each frame and periodically, closing 4401/4403) joined to the one
group services/events.py publishes to, writing each message as the seed's clients expect it (the message itself,
not wrapped in a live "update"). `client_id` names the client; every client gets the same feed.
"""

import asyncio
import json

from channels.db import database_sync_to_async

from emailsys.consumers import LiveGroupConsumer, _hub
from emailsys.live_access import LiveRefusal
from emailsys.metrics import live_sockets_change
from processing.services.events import EMAIL_EVENTS_GROUP, stats_message

EMAIL_EVENTS_PERMISSIONS = ("processing.view_emailresult", "processing.view_inboundemail")


class EmailEventsConsumer(LiveGroupConsumer):
    async def connect(self) -> None:
        if await self.refusal(EMAIL_EVENTS_PERMISSIONS) is not None:
            await self.close(code=int(LiveRefusal.FORBIDDEN))
            return
        self.group_name, self.permissions = "emails", EMAIL_EVENTS_PERMISSIONS
        self.joined = (EMAIL_EVENTS_GROUP,)
        await _hub().join(self, EMAIL_EVENTS_GROUP)
        await self.accept()
        self.counted = True
        live_sockets_change(+1)
        self.recheck_task = asyncio.create_task(self.recheck_periodically(), name="live-recheck emails")
        await self.send_json(await database_sync_to_async(stats_message)())  # the state as it stands
        self.subscribed = True
        self.write_start()

    def deliver(self, text: str) -> None:
        """The hub wraps each publish (a list of messages) as a live update: the seed's clients get each message
        itself, a frame each."""
        for message in json.loads(text)["payload"]:
            super().deliver(json.dumps(message))
