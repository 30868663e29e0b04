"""The seed's paths, at the site's root so its clients work unchanged: /webhook, /results/{id}, /emails,
/emails/{id}, /stats (and /health, /metrics: emailsys/urls.py). The simulator is mounted by emailsys/urls.py."""

from django.urls import path

from processing import api, webhook

urlpatterns = [
    path("webhook", webhook.webhook_receive, name="inbound-webhook"),
    path("results/<str:email_id>", api.ResultView.as_view(), name="inbound-result"),
    path("emails", api.EmailListView.as_view(), name="inbound-emails"),
    path("emails/<str:email_id>", api.EmailDetailView.as_view(), name="inbound-email"),
    path("stats", api.StatsView.as_view(), name="inbound-stats"),
]
