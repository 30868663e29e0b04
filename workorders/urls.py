"""Work-orders API routes, included under /api/v1/ by emailsys/urls.py."""

from rest_framework.routers import DefaultRouter

from workorders import api

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("workorders", api.WorkOrderViewSet, basename="workorder")

urlpatterns = router.urls
