"""Imports and exports API routes, included under /api/v1/ by emailsys/urls.py."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from transfers import api

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("imports", api.ImportJobViewSet, basename="import")

urlpatterns = [
    *router.urls,
    path("exports/<slug:name>/", api.ExportView.as_view(), name="export"),
]
