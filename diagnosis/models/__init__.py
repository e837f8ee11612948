"""SkinPortal's domain: organisations and their members, patients, lesions, images,
model classifications and clinicians' reviews, and the audit trail.

Every patient belongs to exactly one organisation, and everything below a patient inherits
that organisation; selectors scope every read to the user's memberships.

One module per sub-domain; every name is re-exported here, so callers (and migrations) write
`diagnosis.models.<Name>`.
"""

from diagnosis.models.audit import AuditEvent, AuditEventQuerySet, AuditOutcome, AuditSurface
from diagnosis.models.classifications import (
    DIAGNOSIS_CHOICES,
    OTHER_DIAGNOSIS,
    Classification,
    ClassificationStatus,
    ClinicianReview,
)
from diagnosis.models.images import (
    PIXELS_PER_MM_MAX,
    PIXELS_PER_MM_MIN,
    Batch,
    BatchKind,
    LesionImage,
    image_file_extension,
    lesion_image_path,
)
from diagnosis.models.organisations import WRITE_ROLES, Membership, Organisation, Role
from diagnosis.models.patients import (
    FOLLOW_UP_SUGGESTED_MONTHS,
    BodySite,
    Laterality,
    Lesion,
    LesionOutcome,
    MapView,
    Patient,
    Sex,
)

__all__ = [
    "DIAGNOSIS_CHOICES",
    "FOLLOW_UP_SUGGESTED_MONTHS",
    "OTHER_DIAGNOSIS",
    "PIXELS_PER_MM_MAX",
    "PIXELS_PER_MM_MIN",
    "WRITE_ROLES",
    "AuditEvent",
    "AuditEventQuerySet",
    "AuditOutcome",
    "AuditSurface",
    "Batch",
    "BatchKind",
    "BodySite",
    "Classification",
    "ClassificationStatus",
    "ClinicianReview",
    "Laterality",
    "Lesion",
    "LesionImage",
    "LesionOutcome",
    "MapView",
    "Membership",
    "Organisation",
    "Patient",
    "Role",
    "Sex",
    "image_file_extension",
    "lesion_image_path",
]
