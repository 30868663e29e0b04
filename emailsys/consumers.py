"""WebSocket relay for live pages: joins one group and forwards its messages, for as long as the user may watch it.

Sockets of one process share one channel-layer channel (`_GroupHub`): each group a socket of this process watches
is joined once, and each message of it is taken off Redis and encoded once, then written to every local socket of
the group. Without it, a message to a group of 50 sockets is 50 channel-layer messages, each popped, decoded and
encoded by this process in turn (bench/live_latency.py). The hub's reader lives as long as the process: no read is
cancelled when a socket closes (a cancelled channel-layer read can lose the message it was receiving).

Who may watch what is decided in emailsys/live_access.py. The check runs at the handshake (a refusal closes
before accept: HTTP 403), on every frame the client sends, and every LIVE_SOCKET_RECHECK_SECONDS; a socket that
fails it is closed with the refusal's code (4401 logged out, 4403 forbidden), or 1011 when the check itself
failed (the client reconnects and is checked again).
"""

import asyncio
import json
import logging
import weakref

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from emailsys.live import live_current, live_group_objects
from emailsys.live_access import LiveRefusal, live_group_permissions, live_list_members, live_socket_refusal
from emailsys.metrics import live_count, live_sockets_change

logger = logging.getLogger(__name__)
CHECK_FAILED = 1011  # RFC 6455 "internal error"
HUB_RETRY_SECONDS = 1.0  # after a failed channel-layer read
HUB_REFRESH_SECONDS = 3600.0  # re-joins its groups this often (channels_redis drops members after group_expiry)


class _GroupHub:
    """This process's (event loop's) one channel-layer channel for live groups, and the local sockets of each."""

    def __init__(self) -> None:
        self.members: dict[str, set[LiveGroupConsumer]] = {}
        self.joined: set[str] = set()  # groups the hub's channel is a member of in the channel layer
        self.lock = asyncio.Lock()  # orders the channel-layer joins and leaves
        self.channel = ""
        self.tasks: list[asyncio.Task] = []

    async def join(self, consumer: "LiveGroupConsumer", group: str) -> None:
        """Returns once messages of `group` reach `consumer` (so a snapshot sent after it misses nothing)."""
        layer = get_channel_layer()
        async with self.lock:
            if not self.channel:
                self.channel = await layer.new_channel(prefix="live-hub")
                self.tasks = [asyncio.create_task(self.read(), name="live-hub read"),
                              asyncio.create_task(self.refresh(), name="live-hub refresh")]  # fmt: skip
            self.members.setdefault(group, set()).add(consumer)
            if group not in self.joined:
                await layer.group_add(group, self.channel)
                self.joined.add(group)

    def leave(self, consumer: "LiveGroupConsumer", group: str) -> None:
        """At once, without waiting (a cancelled socket leaves too); the channel layer is told in the background."""
        members = self.members.get(group)
        if members is not None:
            members.discard(consumer)
            if not members:
                del self.members[group]
                asyncio.get_running_loop().create_task(self._discard(group))

    async def _discard(self, group: str) -> None:
        async with self.lock:
            if group in self.members or group not in self.joined:
                return
            self.joined.discard(group)
            try:
                await get_channel_layer().group_discard(group, self.channel)
            except Exception as error:  # noqa: BLE001 - it expires in the channel layer; messages to it are dropped
                logger.warning("live hub could not leave %s: %s", group, type(error).__name__)

    async def read(self) -> None:
        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(self.channel)
            except Exception as error:  # noqa: BLE001 - Redis gone: retry, then join again (it may have restarted)
                logger.warning("live hub read failed: %s: %s", type(error).__name__, error)
                await asyncio.sleep(HUB_RETRY_SECONDS)
                await self.rejoin()
                continue
            self.deliver(message.get("group", ""), message.get("payload"))

    def deliver(self, group: str, payload) -> None:
        encoded: dict[str, str] = {}  # by the socket's own group name (a list page's differs from the object's)
        for consumer in list(self.members.get(group, ())):
            name = consumer.group_name
            if name not in encoded:
                encoded[name] = json.dumps({"type": "update", "group": name, "payload": payload})
            consumer.deliver(encoded[name])

    async def refresh(self) -> None:
        while True:
            await asyncio.sleep(HUB_REFRESH_SECONDS)
            await self.rejoin()

    async def rejoin(self) -> None:
        async with self.lock:
            for group in sorted(self.joined):
                try:
                    await get_channel_layer().group_add(group, self.channel)
                except Exception as error:  # noqa: BLE001 - the next failed read or refresh tries again
                    logger.warning("live hub could not rejoin %s: %s", group, type(error).__name__)
                    return


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GroupHub]" = weakref.WeakKeyDictionary()


def _hub() -> _GroupHub:
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = _GroupHub()
    return _hubs[loop]


class LiveGroupConsumer(AsyncJsonWebsocketConsumer):
    # No channel-layer channel of its own: the process's hub reads the groups' messages for every socket.
    channel_layer_alias = "live sockets read through the hub"
    group_name: str = ""
    joined: tuple[str, ...] = ()  # the channel-layer groups: the group itself, or a list page's objects
    permissions: tuple[str, ...] = ()
    closing: bool = False
    recheck_task: asyncio.Task | None = None
    counted: bool = False  # in emailsys_live_sockets_open
    writer: asyncio.Task | None = None
    subscribed: bool = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.outbox: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, scope, receive, send) -> None:
        """The one exit every connection takes (client gone, server close, the server cancelling the application):
        the re-check timer ends with it."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.leave()
            if self.counted:
                live_sockets_change(-1)
            for task in (self.recheck_task, self.writer):
                if task is not None:
                    task.cancel()
                    try:
                        await task
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
            await _hub().join(self, joined)
        await self.accept()
        self.counted = True
        live_sockets_change(+1)
        self.recheck_task = asyncio.create_task(self.recheck_periodically(), name=f"live-recheck {self.group_name}")
        await self.send_json({"type": "subscribed", "group": self.group_name})
        await self.send_current_state()
        self.subscribed = True
        self.write_start()

    async def send_current_state(self) -> None:
        """Right after joining (so nothing published meanwhile is missed): the group's objects as they stand, so a
        client that was disconnected needs nothing it missed."""
        for joined in self.joined:
            for kind_name, object_id in live_group_objects(joined):
                payload = await database_sync_to_async(live_current)(kind_name, object_id)
                if payload is not None:
                    await self.send_json({"type": "update", "group": self.group_name, "payload": payload})
                    live_count("delivered")

    async def disconnect(self, code: int) -> None:
        self.leave()

    def leave(self) -> None:
        joined, self.joined = self.joined, ()
        for group in joined:
            _hub().leave(self, group)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        """Clients only listen: what they send is not read, but it re-checks their access at once."""
        await self.recheck()

    def deliver(self, text: str) -> None:
        """From the hub: an update, already encoded. Written by a task of its own, so one socket's send waits for
        no other's; in order, as the writes queue on the one connection."""
        if not self.closing:
            self.outbox.put_nowait(text)
            self.write_start()

    def write_start(self) -> None:
        """Once subscribed and sent its snapshot (updates that came meanwhile wait in the outbox)."""
        if self.writer is None and self.subscribed:
            self.writer = asyncio.create_task(self.write_outbox(), name=f"live-writer {self.group_name}")

    async def write_outbox(self) -> None:
        while True:
            text = await self.outbox.get()
            if self.closing:
                return
            await self.send(text_data=text)
            live_count("delivered")

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
            self.leave()
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
