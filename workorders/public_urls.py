"""Public pages reached from event mailings, included under /w/ by emailsys/urls.py."""

from django.urls import path

from workorders import views

urlpatterns = [
    path("u/<uuid:token>/", views.unsubscribe, name="workorder-unsubscribe"),
    path("u/test/<str:language>/", views.unsubscribe_test, name="workorder-unsubscribe-test"),
]
