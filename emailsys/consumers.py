"""WebSocket relay for live pages: staff only, joins one group and forwards its messages. No logic here."""

from channels.generic.websocket import AsyncJsonWebsocketConsumer

# Closing before accept makes the server answer the handshake with HTTP 403.
REFUSED = 4403


class LiveGroupConsumer(AsyncJsonWebsocketConsumer):
    group_name: str = ""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not (user.is_active and user.is_staff):
            await self.close(code=REFUSED)
            return
        self.group_name = self.scope["url_route"]["kwargs"]["group"]
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()
        await self.send_json({"type": "subscribed", "group": self.group_name})

    async def disconnect(self, code: int) -> None:
        if self.group_name:
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """Clients only listen; anything they send is ignored."""

    async def live_message(self, event: dict) -> None:
        await self.send_json({"type": "update", "group": self.group_name, "payload": event["payload"]})
