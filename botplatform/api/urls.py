"""Routes of /api/v1/ (included by botplatform/urls.py)."""

from django.urls import path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from botplatform.api import views

app_name = "api"

urlpatterns = [
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("customers", views.CustomersView.as_view(), name="customers"),
    path("customers/<int:customer_id>", views.CustomerView.as_view(), name="customer"),
    path(
        "customers/<int:customer_id>/history",
        views.CustomerHistoryView.as_view(),
        name="customer_history",
    ),
    path(
        "customers/<int:customer_id>/events",
        views.CustomerEventsView.as_view(),
        name="customer_events",
    ),
    path("purchases", views.PurchasesView.as_view(), name="purchases"),
    path("refunds", views.RefundsView.as_view(), name="refunds"),
    path("holds", views.HoldsView.as_view(), name="holds"),
    path("holds/<int:hold_id>", views.HoldView.as_view(), name="hold"),
    path("holds/<int:hold_id>/confirm", views.HoldConfirmView.as_view(), name="hold_confirm"),
    path("holds/<int:hold_id>/release", views.HoldReleaseView.as_view(), name="hold_release"),
]
