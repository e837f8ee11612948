from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from skinportal.accounts import AdminLoginForm, LoginForm, PasswordResetView
from skinportal.health import healthz, readyz

# Every login form checks the password inside the per-username lock (skinportal/accounts.py).
admin.site.login_form = AdminLoginForm

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("diagnosis.api.urls")),
    path("api/fhir/r4/", include("diagnosis.fhir.urls")),  # FHIR R4, read-only (docs/interop.md)
    # Django's account pages, two of them with our forms: these come first, so they win.
    path("accounts/login/", auth_views.LoginView.as_view(authentication_form=LoginForm), name="login"),
    path("accounts/password_reset/", PasswordResetView.as_view(), name="password_reset"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("diagnosis.urls")),
]

handler400 = "skinportal.errors.bad_request"
handler403 = "skinportal.errors.permission_denied"
handler404 = "skinportal.errors.page_not_found"
handler500 = "skinportal.errors.server_error"
