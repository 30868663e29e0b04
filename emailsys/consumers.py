"""WebSocket relay for live pages: joins one group and forwards its messages, for as long as the user may watch it.

Who may watch what is decided in emailsys/live_access.py. The check runs at the handshake (a refusal closes
before accept: HTTP 403), on every frame the client sends, and every LIVE_SOCKET_RECHECK_SECONDS; a socket that
fails it is closed with the refusal's code (4401 logged out, 4403 forbidden), or 1011 when the check itself
failed (the client reconnects and is checked again).
"""

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.conf import settings

from emailsys.live import live_current, live_group_objects
from emailsys.live_access import LiveRefusal, live_group_permissions, live_list_members, live_socket_refusal

logger = logging.getLogger(__name__)
CHECK_FAILED = 1011  # RFC 6455 "internal error"


class LiveGroupConsumer(AsyncJsonWebsocketConsumer):
    group_name: str = ""
    joined: tuple[str, ...] = ()  # the channel-layer groups: the group itself, or a list page's objects
    permissions: tuple[str, ...] = ()
    closing: bool = False
    recheck_task: asyncio.Task | None = None

    async def __call__(self, scope, receive, send) -> None:
        """The one exit every connection takes (client gone, server close, the server cancelling the application):
        the re-check timer ends with it."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.recheck_task is not None:
                self.recheck_task.cancel()
                try:
                    await self.recheck_task
                except asyncio.CancelledError:
                    pass

    async def connect(self) -> None:
        group = self.scope["url_route"]["kwargs"]["group"]
        permissions = live_group_permissions(group)
        if permissions is None or await self.refusal(permissions) is not None:
            await self.close(code=int(LiveRefusal.FORBIDDEN))
            return
        self.group_name, self.permissions = group, permissions
        members = live_list_members(group, self.scope.get("query_string", b""))
        self.joined = (group,) if members is None else tuple(members)
        for joined in self.joined:
            await self.channel_layer.group_add(joined, self.channel_name)
        await self.accept()
        await self.send_json({"type": "subscribed", "group": self.group_name})
        await self.send_current_state()
        self.recheck_task = asyncio.create_task(self.recheck_periodically(), name=f"live-recheck {self.channel_name}")

    async def send_current_state(self) -> None:
        """Right after joining (so nothing published meanwhile is missed): the group's objects as they stand, so a
        client that was disconnected needs nothing it missed."""
        for joined in self.joined:
            for kind_name, object_id in live_group_objects(joined):
                payload = await database_sync_to_async(live_current)(kind_name, object_id)
                if payload is not None:
                    await self.send_json({"type": "update", "group": self.group_name, "payload": payload})

    async def disconnect(self, code: int) -> None:
        await self.leave()

    async def leave(self) -> None:
        joined, self.joined = self.joined, ()
        for group in joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        """Clients only listen: what they send is not read, but it re-checks their access at once."""
        await self.recheck()

    async def live_message(self, event: dict) -> None:
        if not self.closing:
            await self.send_json({"type": "update", "group": self.group_name, "payload": event["payload"]})

    async def recheck_periodically(self) -> None:
        while not self.closing:
            await asyncio.sleep(settings.LIVE_SOCKET_RECHECK_SECONDS)
            await self.recheck()

    async def recheck(self) -> None:
        """Closes the socket when its user may no longer watch the group (or the check cannot be made)."""
        if self.closing:
            return
        try:
            refusal = await self.refusal(self.permissions)
        except Exception:
            logger.exception("live socket access check failed; closing %s", self.group_name)
            refusal = CHECK_FAILED
        if refusal is not None and not self.closing:
            self.closing = True
            await self.leave()
            await self.close(code=int(refusal))  # autobahn takes a plain int only

    async def refusal(self, permissions: tuple[str, ...]) -> LiveRefusal | None:
        user, session = self.scope.get("user"), self.scope.get("session")
        if user is None or not user.is_authenticated or session is None:
            return LiveRefusal.LOGGED_OUT
        return await database_sync_to_async(live_socket_refusal)(
            session_key=session.session_key, user_id=user.pk, permissions=permissions
        )


class NoSuchSocketConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: refused at the handshake (HTTP 403) instead of the router's error (HTTP 500 and a
    traceback in the log)."""

    async def connect(self) -> None:
        await self.close(code=int(LiveRefusal.FORBIDDEN))
