from django.urls import re_path

from emailsys.consumers import LiveGroupConsumer, NoSuchSocketConsumer
from processing.consumers import EmailEventsConsumer

# Channel-layer group names allow ASCII letters, digits, hyphens, underscores and periods (< 100 chars).
websocket_urlpatterns = [
    re_path(r"^ws/live/(?P<group>[A-Za-z0-9_.-]{1,80})/$", LiveGroupConsumer.as_asgi()),
    # The seed's inbound feed; client_id names the client (any id of up to 100 safe characters).
    re_path(r"^ws/emails/(?P<client_id>[A-Za-z0-9_.:-]{1,100})/?$", EmailEventsConsumer.as_asgi()),
    re_path(r"", NoSuchSocketConsumer.as_asgi()),  # last: every other path
]
