"""Campaigns API routes, included under /api/v1/ by emailsys/urls.py."""

from rest_framework.routers import DefaultRouter

from campaigns import api

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("campaigns", api.CampaignViewSet, basename="campaign")
router.register("leads", api.LeadViewSet, basename="lead")
router.register("accounts", api.SenderAccountViewSet, basename="account")
router.register("templates", api.EmailTemplateViewSet, basename="template")
router.register("steps", api.SequenceStepViewSet, basename="step")
router.register("suppressions", api.SuppressionViewSet, basename="suppression")
router.register("activities", api.ActivityViewSet, basename="activity")
router.register("send-records", api.SendRecordViewSet, basename="send-record")

urlpatterns = router.urls
