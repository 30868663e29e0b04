from django.urls import re_path

from emailsys.consumers import LiveGroupConsumer, NoSuchSocketConsumer

# Channel-layer group names allow ASCII letters, digits, hyphens, underscores and periods (< 100 chars).
websocket_urlpatterns = [
    re_path(r"^ws/live/(?P<group>[A-Za-z0-9_.-]{1,80})/$", LiveGroupConsumer.as_asgi()),
    re_path(r"", NoSuchSocketConsumer.as_asgi()),  # last: every other path
]
