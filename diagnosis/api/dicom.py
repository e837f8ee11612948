"""An image as DICOM over the API: `GET /api/v1/images/{id}/dicom/` (diagnosis/dicom/export.py).

Scoped, throttled and authenticated like the image file (`ImageFileApi`): another organisation's
id is a 404 before the view runs; audited as an export (diagnosis/audit.py). The body is the file
whatever the Accept header asks for (reports.FileDownloadNegotiation); errors are JSON.
"""

from __future__ import annotations

from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request

from diagnosis import inference
from diagnosis.api.reports import FileDownloadNegotiation
from diagnosis.api.schema import ERROR
from diagnosis.api.views import ScopedApiView
from diagnosis.dicom.export import image_dicom, image_dicom_filename

DICOM_CONTENT_TYPE = "application/dicom"


def dicom_response(data: bytes, *, filename: str) -> HttpResponse:
    response = HttpResponse(data, content_type=DICOM_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class ImageDicomApi(ScopedApiView):
    renderer_classes = (JSONRenderer,)
    content_negotiation_class = FileDownloadNegotiation

    @extend_schema(
        responses={(200, DICOM_CONTENT_TYPE): OpenApiTypes.BINARY, 404: ERROR},
        tags=["images"],
        description=(
            "The image as a DICOM VL Photographic Image (SOP class 1.2.840.10008.5.1.4.1.1.77.1.4, modality XC), "
            "uncompressed explicit VR little endian, RGB 8-bit: the stored image's own decoded pixels; the patient "
            "(Patient ID = the portal's external id, name, sex, birth date as stored), the capture date as study "
            "date, the body site as a SNOMED CT Anatomic Region Sequence, the lesion's side as Image Laterality, and "
            "the latest classification as Image Comments (top class, probabilities, malignancy score and flag, "
            "model version; decision support, not a diagnosis). Study, series and instance UIDs are derived "
            "(2.25.<uuid>), so re-exports give the same UIDs. Sent as a download (`Content-Disposition: "
            "attachment`), whatever the Accept header; errors are JSON."
        ),
    )
    def get(self, request: Request, image_id: int) -> HttpResponse:
        image = self.url_object("image_id")
        try:
            data = image_dicom(image=image)
        except (OSError, inference.InvalidImageError) as exc:
            raise Http404("The image file is missing or unreadable.") from exc
        return dicom_response(data, filename=image_dicom_filename(image))
