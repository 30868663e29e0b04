from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from campaigns.views import unsubscribe
from emailsys import views
from emailsys.api import SystemHealthView

handler400 = "emailsys.views.bad_request"
handler403 = "emailsys.views.permission_denied"
handler404 = "emailsys.views.page_not_found"
handler500 = "emailsys.views.server_error"

admin.site.site_header = "emailsys"
admin.site.site_title = "emailsys"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", ExportToDjangoView, name="metrics"),
    path("captured/", views.captured_mail_index, name="captured-mail"),
    path("captured/<str:name>", views.captured_mail_detail, name="captured-mail-detail"),
    # The captured mail's old address (/outbox/), kept for bookmarks.
    path("outbox/", RedirectView.as_view(pattern_name="captured-mail", permanent=True, query_string=True)),
    path(
        "outbox/<str:name>",
        RedirectView.as_view(pattern_name="captured-mail-detail", permanent=True, query_string=True),
    ),
    path("api/v1/health/", SystemHealthView.as_view(), name="api-health"),
    path("api/v1/", include("campaigns.urls")),
    path("api/v1/", include("workorders.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("u/<uuid:token>/", unsubscribe, name="unsubscribe"),
    path("w/", include("workorders.public_urls")),
    path("admin/", admin.site.urls),
]
