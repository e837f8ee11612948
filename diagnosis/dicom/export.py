"""One lesion image as a DICOM VL Photographic Image (SOP class 1.2.840.10008.5.1.4.1.1.77.1.4).

Built with pydicom from what the portal stores and nothing else: the patient (external id as
Patient ID, name, sex and birth date as stored), the lesion (body site coded in SNOMED CT,
laterality), the visit (capture date), the pixels decoded from the stored file exactly as the
classifier decodes them (RGB, 8 bits, uncompressed explicit VR little endian) and the latest
classification as Image Comments, with "decision support, not a diagnosis".

UIDs are derived, not stored: `2.25.<uuid5>` of the object's id and creation time, so every export
of the same image gives the same UIDs (a PACS files a re-export as the same instance) and two
installations do not collide. Study and series: one per lesion and visit (capture date); the
instance: one per image and shown result (a new classification changes the comments, so it is a
new instance). No ORM writes here.
"""

from __future__ import annotations

import io
import re
import uuid

from django.utils.text import get_valid_filename

from diagnosis import inference, selectors
from diagnosis.dicom.codes import body_site_code
from diagnosis.interpretation import context_sentence, favoured_reason
from diagnosis.models import Classification, Laterality, Lesion, LesionImage, Patient, Sex

VL_PHOTOGRAPHIC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.4"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
# pydicom's implementation class UID names the library that wrote the file; the portal names itself.
IMPLEMENTATION_VERSION_NAME = "SKINPORTAL_1"
# A fixed namespace for the derived UIDs: never change it, or re-exports get new UIDs.
UID_NAMESPACE = uuid.UUID("5f4c2a0e-8d1b-4c5e-9a57-2b8e1f0d6c31")
NOTICE = "Decision support, not a diagnosis."

SEX_CODES = {Sex.FEMALE: "F", Sex.MALE: "M", Sex.OTHER: "O"}  # unknown: empty (type 2)
LATERALITY_CODES = {Laterality.LEFT: "L", Laterality.RIGHT: "R", Laterality.MIDLINE: "B"}  # else U

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")  # a backslash separates values in DICOM strings


def derived_uid(*parts: object) -> str:
    """`2.25.` and the integer of a UUID 5 of `parts`: deterministic, at most 44 characters."""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, ':'.join(str(p) for p in parts)).int}"


def _lesion_key(lesion: Lesion) -> str:
    return f"lesion:{lesion.pk}:{lesion.created_at.isoformat()}"


def study_uid(image: LesionImage) -> str:
    return derived_uid("study", _lesion_key(image.lesion), image.captured_at.isoformat())


def series_uid(image: LesionImage) -> str:
    return derived_uid("series", _lesion_key(image.lesion), image.captured_at.isoformat())


def instance_uid(image: LesionImage, shown: Classification | None) -> str:
    result = f"{shown.pk}:{shown.model_version}:{shown.updated_at.isoformat()}" if shown else "none"
    return derived_uid("image", image.pk, image.sha256, image.uploaded_at.isoformat(), result)


def _text(value: str, limit: int) -> str:
    """Free text as a DICOM string value: no control characters or backslashes, within the VR's length."""
    return _CONTROL.sub(" ", value).strip()[:limit]


def _figure(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.3f}"


def classification_note(shown: Classification | None) -> str:
    """The Image Comments: the shown result in words, with the notice."""
    if shown is None:
        return f"Not classified yet. {NOTICE}"
    if not shown.succeeded:
        return f"No result: the classification failed ({_text(shown.error_message, 200)}). {NOTICE}"
    probabilities = ", ".join(
        f"{code} {probability:.3f}" for code, _name, probability in shown.ranked_probabilities()
    )
    flag = "flagged" if shown.malignant else "not flagged"
    warnings = ", ".join(shown.warnings) if shown.warnings else "none"
    return (
        f"SkinPortal classification. {shown.top_class_label} class: {shown.top_class_name}. "
        + "".join(f"{reason} " for reason in favoured_reason(shown))
        + f"Probabilities: {probabilities}. {context_sentence(shown.context)} "
        f"Malignancy score {_figure(shown.malignancy_score)} against the threshold {_figure(shown.threshold)}: {flag}. "
        f"Warnings: {warnings}. Model version {shown.model_version} ({shown.model_variant or 'fp32'}). {NOTICE}"
    )


def _patient_module(ds, patient: Patient) -> None:
    ds.PatientName = _text(patient.name, 64).replace("^", " ").replace("=", " ")
    ds.PatientID = _text(patient.external_id, 64)
    ds.PatientBirthDate = patient.date_of_birth.strftime("%Y%m%d") if patient.date_of_birth else ""
    ds.PatientSex = SEX_CODES.get(patient.sex, "")


def _anatomic_region(ds, lesion: Lesion) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    code = body_site_code(lesion.body_site)
    if code is None:  # type 1C: absent, not empty, when the region is not known (dciodvfy: an error)
        return
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning
    ds.AnatomicRegionSequence = Sequence([item])


def image_dicom(*, image: LesionImage) -> bytes:
    """The DICOM file (Part 10, explicit VR little endian) of a stored image the caller may read.
    Raises OSError for a missing file and inference.InvalidImageError for an unreadable one."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence

    with image.file.open("rb") as handle:
        rgb = inference.decode_stored_image(handle.read())
    lesion, patient = image.lesion, image.lesion.patient
    shown = selectors.image_latest_classification(image=image)
    sop_instance = instance_uid(image, shown)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VL_PHOTOGRAPHIC_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME

    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names are not all ASCII
    ds.SOPClassUID = VL_PHOTOGRAPHIC_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_instance
    # Patient
    _patient_module(ds, patient)
    # General Study: one per lesion and visit
    ds.StudyInstanceUID = study_uid(image)
    ds.StudyDate = image.captured_at.strftime("%Y%m%d")
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = f"L{lesion.pk}"[:16]
    ds.AccessionNumber = ""
    ds.StudyDescription = "Dermoscopy"
    # General Series
    ds.Modality = "XC"  # external-camera photography
    ds.SeriesInstanceUID = series_uid(image)
    ds.SeriesNumber = 1
    ds.SeriesDescription = _text(f"Lesion {lesion.pk}: {lesion.side_and_site}", 64)
    # General Equipment: the camera is not known; the portal converted the pixels
    ds.Manufacturer = ""
    ds.SoftwareVersions = "SkinPortal"
    # General Image, VL Image, Image Pixel
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = image.captured_at.strftime("%Y%m%d")
    ds.ContentTime = "000000"  # the capture time is not stored, only its date
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImageLaterality = LATERALITY_CODES.get(lesion.laterality, "U")
    ds.ImageComments = _text(classification_note(shown), 10240)
    stored_jpeg = image.stored_extension == "jpg"
    ds.LossyImageCompression = "01" if stored_jpeg else "00"  # the stored file's pixels went through JPEG
    if stored_jpeg:
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    height, width = rgb.shape[:2]
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    _anatomic_region(ds, lesion)
    ds.AcquisitionContextSequence = Sequence([])  # type 2: nothing is known of the acquisition
    ds.PixelData = rgb.tobytes()  # rows of R, G, B (planar configuration 0)
    del rgb  # a 25 MP image is 75 MB: hold one copy of it, not two

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def image_dicom_filename(image: LesionImage) -> str:
    return get_valid_filename(f"image-{image.pk}-{image.captured_at:%Y%m%d}.dcm")


__all__ = [
    "NOTICE",
    "VL_PHOTOGRAPHIC_IMAGE_STORAGE",
    "classification_note",
    "derived_uid",
    "image_dicom",
    "image_dicom_filename",
    "instance_uid",
    "series_uid",
    "study_uid",
]
