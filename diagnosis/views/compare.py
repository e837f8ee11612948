"""Two visits of a lesion side by side (the compare page) and an image's lesion mask."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from diagnosis.compare import NOTICE, CompareError, parse_image_id
from diagnosis.outlines import mask_png_response
from diagnosis.scoping import url_object
from diagnosis.selectors.compare import lesion_comparison


@login_required
@require_GET
def lesion_compare(request: HttpRequest, lesion_id: int) -> HttpResponse:
    """?a=&b= (image ids of this lesion; default the first and the latest). An image of another
    lesion, or of none, is a 400 page that says so; another organisation's lesion a 404."""
    lesion = url_object(request, "lesion_id")
    context = {"lesion": lesion, "patient": lesion.patient, "notice": NOTICE}
    try:
        a = parse_image_id(request.GET.get("a"), "a")
        b = parse_image_id(request.GET.get("b"), "b")
        context["result"] = result = lesion_comparison(lesion=lesion, a=a, b=b)
        context["images"] = result.images
    except CompareError as exc:
        context["error"] = str(exc)
        context["images"] = list(lesion.images.all())
        return render(request, "diagnosis/lesion_compare.html", context, status=400)
    return render(request, "diagnosis/lesion_compare.html", context)


@login_required
@require_GET
def image_mask(request: HttpRequest, image_id: int) -> HttpResponse:
    """The lesion mask of the image's current result as a PNG (404 without one)."""
    return mask_png_response(url_object(request, "image_id"))
