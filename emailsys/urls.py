from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from campaigns.views import unsubscribe
from emailsys import views
from emailsys.api import SystemHealthView, TokenLoginView, TokenLogoutView
from workorders.urls import admin_urlpatterns as workorder_admin_urlpatterns

handler400 = "emailsys.views.bad_request"
handler403 = "emailsys.views.permission_denied"
handler404 = "emailsys.views.page_not_found"
handler500 = "emailsys.views.server_error"

admin.site.site_header = "emailsys"
admin.site.site_title = "emailsys"
admin.site.site_url = "/admin/"  # "View site": the operations dashboard (the admin index), not a redirect to it

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("health", views.healthz, name="health"),  # the inbound seed's path
    path("metrics", views.metrics, name="metrics"),
    path("captured/", views.captured_mail_index, name="captured-mail"),
    path("captured/<str:name>", views.captured_mail_detail, name="captured-mail-detail"),
    # The captured mail's old address (/outbox/), kept for bookmarks.
    path("outbox/", RedirectView.as_view(pattern_name="captured-mail", permanent=True, query_string=True)),
    path(
        "outbox/<str:name>",
        RedirectView.as_view(pattern_name="captured-mail-detail", permanent=True, query_string=True),
    ),
    path("api/v1/health/", SystemHealthView.as_view(), name="api-health"),
    path("api/v1/auth/login/", TokenLoginView.as_view(), name="api-login"),
    path("api/v1/auth/logout/", TokenLogoutView.as_view(), name="api-logout"),
    path("api/v1/", include("campaigns.urls")),
    path("api/v1/", include("workorders.urls")),
    path("api/v1/", include("audit.urls")),
    path("api/v1/", include("transfers.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The docs pages send a browser without a staff session to the admin login (the schema answers 401).
    path("api/docs/", staff_member_required(views.api_docs), name="api-docs"),
    path("api/redoc/", staff_member_required(views.api_redoc), name="api-redoc"),
    path("u/<uuid:token>/", unsubscribe, name="unsubscribe"),
    path("w/", include("workorders.public_urls")),
    path("admin/workorders/workorder/", include(workorder_admin_urlpatterns)),  # before the admin's catch-all
    path("admin/", admin.site.urls),
    path("", include("processing.urls")),
    # The front page (and the admin's "View site") is the operations dashboard, the admin index.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
]

if settings.INBOUND_SIMULATOR_ENABLED:
    urlpatterns.insert(0, path("simulator/", include("simulator.urls")))
