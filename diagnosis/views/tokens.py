"""A user's own API tokens: list, a new one, rotate, revoke (the same services as the API).

A new key is shown once, on the page that answers the request (never in a message or the
session, which are stored); a new or rotated key needs the password again, so a borrowed
browser session cannot mint a key that outlives it.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from diagnosis import selectors, services
from diagnosis.forms import ApiTokenKeyForm, ApiTokenRotateForm, ReauthForm
from diagnosis.services.accounts import API_TOKEN_KEY_ID, IssuedApiToken
from diagnosis.views.common import add_service_errors, form_status


def _tokens_page(
    request: HttpRequest, form: Form, *, issued: IssuedApiToken | None = None, status: int = 200
) -> HttpResponse:
    return render(
        request,
        "diagnosis/api_tokens.html",
        {"tokens": selectors.api_token_list(user=request.user), "form": form, "issued": issued},
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request: HttpRequest) -> HttpResponse:
    """The list, and a new token after the password."""
    form = ReauthForm(request.POST or None, request=request)
    if request.method == "POST" and form.is_valid():
        try:
            issued = services.accounts.api_token_create(user=request.user)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            return _tokens_page(request, ReauthForm(request=request), issued=issued)
    return _tokens_page(request, form, status=form_status(request))


@login_required
@require_POST
def api_token_revoke(request: HttpRequest) -> HttpResponse:
    form = ApiTokenKeyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say which token to revoke.")
        return _tokens_page(request, ReauthForm(request=request), status=400)
    key = form.cleaned_data["key"]
    try:
        services.accounts.api_token_revoke(user=request.user, token_key=key)
    except Http404:
        messages.error(request, f"You have no API token {key}… (revoked or expired already?).")
        return _tokens_page(request, ReauthForm(request=request), status=404)
    messages.success(request, f"API token {key}… was revoked: it no longer works.")
    return redirect("account-api-tokens")


@login_required
@require_http_methods(["GET", "POST"])
def api_token_rotate(request: HttpRequest) -> HttpResponse:
    """GET ?key=…: the confirmation (password); POST: a new key with the old one's expiry."""
    data = request.POST if request.method == "POST" else None
    form = ApiTokenRotateForm(data, request=request, initial={"key": request.GET.get("key", "")})
    key = (request.POST if request.method == "POST" else request.GET).get("key", "")
    well_formed = bool(API_TOKEN_KEY_ID.fullmatch(key))
    token = selectors.api_token_list(user=request.user).filter(token_key=key).first() if well_formed else None
    if token is None:
        messages.error(request, "You have no such API token (revoked or expired already?).")
        return _tokens_page(request, ReauthForm(request=request), status=404 if key else 400)
    if request.method == "POST" and form.is_valid():
        try:
            issued = services.accounts.api_token_rotate(user=request.user, token_key=form.cleaned_data["key"])
        except Http404:
            messages.error(request, "You have no such API token (revoked or expired already?).")
            return _tokens_page(request, ReauthForm(request=request), status=404)
        return _tokens_page(request, ReauthForm(request=request), issued=issued)
    return render(
        request, "diagnosis/api_token_rotate.html", {"token": token, "form": form}, status=form_status(request)
    )
