"""What every page module shares: service errors shown on forms, the status of a refused form,
the write check before a form is shown."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.forms import Form
from django.http import HttpRequest

from diagnosis.permissions import READ_ONLY_PAGE, require_write

PATIENTS_PER_PAGE = 20


def add_service_errors(form: Form, exc: ValidationError, field_map: dict[str, str] | None = None) -> None:
    """Show a service's ValidationError on the form, next to the field it concerns."""
    field_map = field_map or {}
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            target = field_map.get(field, field)
            form.add_error(target if target in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def form_status(request: HttpRequest) -> int:
    """A form shown again after a POST is shown because the POST was refused: 400, not 200."""
    return 400 if request.method == "POST" else 200


def require_page_write(request: HttpRequest, organisation_id: int) -> None:
    """Before a form is shown: a read-only role gets the 403 page, not a form that would fail."""
    require_write(user=request.user, organisation_id=organisation_id, message=READ_ONLY_PAGE)
