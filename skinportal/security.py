"""Response headers that every page and API answer carries (static files are served earlier,
by whitenoise, with their own caching).

* Content-Security-Policy: scripts and styles only from this origin; no inline scripts anywhere.
  The two API documentation pages (Swagger UI, ReDoc) build their styles at run time, so they
  alone may use inline styles; they still load no inline script and nothing from elsewhere.
* Cache-Control: no-store, so no patient page, image or API answer stays in a browser or proxy cache.
* Permissions-Policy: no camera, microphone, geolocation... (uploads use the file picker).

HSTS, nosniff, Referrer-Policy, Cross-Origin-Opener-Policy and X-Frame-Options come from Django's
SecurityMiddleware and XFrameOptionsMiddleware (settings.py).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; font-src 'self'; "
    "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Swagger UI and ReDoc inject <style> elements; no inline script is allowed there either.
API_DOCS_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
)
API_DOCS_PATHS = ("/api/v1/docs/", "/api/v1/redoc/")
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()"


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        docs_page = request.path in API_DOCS_PATHS
        response.setdefault(
            "Content-Security-Policy", API_DOCS_CONTENT_SECURITY_POLICY if docs_page else CONTENT_SECURITY_POLICY
        )
        response["Cache-Control"] = "no-store"
        response.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response
