from django.contrib import admin
from django.urls import include, path

from skinportal.health import healthz, readyz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("diagnosis.api.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("diagnosis.urls")),
]

handler400 = "skinportal.errors.bad_request"
handler403 = "skinportal.errors.permission_denied"
handler404 = "skinportal.errors.page_not_found"
handler500 = "skinportal.errors.server_error"
