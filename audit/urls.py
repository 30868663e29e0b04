"""Audit trail API routes, included under /api/v1/ by emailsys/urls.py."""

from rest_framework.routers import DefaultRouter

from audit import api

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("audit", api.AuditEntryViewSet, basename="audit-entry")

urlpatterns = router.urls
