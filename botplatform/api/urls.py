"""Routes of /api/v1/ (included by botplatform/urls.py)."""

from django.http import JsonResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from botplatform.api import views

app_name = "api"


@csrf_exempt
def not_found(request, rest: str = ""):
    """Any other address under /api/v1/ (a malformed id too): a JSON 404, not HTML."""
    return JsonResponse({"code": "not_found", "detail": "no such API endpoint"}, status=404)


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
    re_path(r"^(?P<rest>.*)$", not_found),
]
