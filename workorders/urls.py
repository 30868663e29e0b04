"""Work-orders API routes, included under /api/v1/ by emailsys/urls.py; and `admin_urlpatterns`, the admin-side
pages of work orders outside the model admin (their artifacts), included under /admin/workorders/workorder/
before the admin's own URLs."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from workorders import api, views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("workorders", api.WorkOrderViewSet, basename="workorder")
router.register("contacts", api.ContactViewSet, basename="contact")
router.register("segments", api.SegmentViewSet, basename="segment")
router.register("events", api.EventViewSet, basename="event")

urlpatterns = router.urls

admin_urlpatterns = [
    path("<int:work_order_id>/artifacts/<str:name>", views.workorder_artifact, name="workorder-artifact"),
]
