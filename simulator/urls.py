"""The simulator's HTTP API (processing/providers.py documents it), mounted at /simulator/ when
INBOUND_SIMULATOR_ENABLED."""

from django.urls import path

from simulator import views

app_name = "simulator"

urlpatterns = [
    path("send_email", views.send_email, name="send-email"),
    path("faults", views.faults, name="faults"),
    path("mailboxes/<str:address>/profile", views.profile, name="profile"),
    path("mailboxes/<str:address>/history", views.history, name="history"),
    path("mailboxes/<str:address>/messages", views.messages, name="messages"),
    path("mailboxes/<str:address>/messages/<str:email_id>", views.message, name="message"),
    path("mailboxes/<str:address>/batch_get", views.batch_get, name="batch-get"),
    path("mailboxes/<str:address>/watch", views.watch, name="watch"),
    path("mailboxes/<str:address>/expire_history", views.expire_history, name="expire-history"),
]
