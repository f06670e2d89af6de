from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from botplatform import views
from botplatform.admin_login import admin_login
from botplatform.dashboard import metrics_view
from botplatform.telegram.views import telegram_webhook

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("healthz", views.healthz, name="healthz"),
    path("healthz/", views.healthz),
    path("telegram/webhook/<int:bot_id>/", telegram_webhook, name="telegram_webhook"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include("botplatform.api.urls")),
    path("admin/login/", admin_login, name="admin_login"),
    path("admin/", admin.site.urls),
]
