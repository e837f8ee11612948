"""The code systems and code tables of the FHIR export: SNOMED CT for body sites and laterality,
HL7's own systems where FHIR names one, and the portal's own CodeSystem for what no standard
terminology codes (the AI classification, its seven classes, its warnings).

Every SNOMED CT code here was checked by hand against published value sets (FHIR's SNOMED CT Body
Structures, the laterality value sets of HL7 implementation guides, DICOM CID 4031); the table is
repeated, with its sources and its gaps, in docs/interop.md. A portal value without a code that
fits (acral: palms, soles and nails, no one SNOMED CT region; unknown) is exported as text only,
never as a guessed code.
"""

from __future__ import annotations

from dataclasses import dataclass

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
MEDIA_TYPE = "http://terminology.hl7.org/CodeSystem/media-type"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
# HL7's extension that points from any element at the BodyStructure it describes (R4 core,
# extension-bodysite): how a Media or an Observation names the lesion, since neither has a
# Reference(BodyStructure) element in R4.
BODY_STRUCTURE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/bodySite"

# The portal's own systems (URNs: this installation has no canonical web address of its own).
PORTAL_CODES = "urn:skinportal:fhir:CodeSystem:skinportal"  # classification, report, components
PORTAL_CLASSES = "urn:skinportal:fhir:CodeSystem:lesion-class"  # the model's seven classes (HAM10000)
PORTAL_WARNINGS = "urn:skinportal:fhir:CodeSystem:screening-warning"
PORTAL_READING = "urn:skinportal:fhir:CodeSystem:reading-level"  # interpretation.read_result's levels


def patient_identifier_system(organisation_id: int) -> str:
    """External ids are unique per organisation, so the system names the organisation."""
    return f"urn:skinportal:organisation:{organisation_id}:patient-id"


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str

    def coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}


# Portal body site (diagnosis.models.BodySite, the HAM10000 vocabulary) -> SNOMED CT body structure.
BODY_SITES: dict[str, Code] = {
    "abdomen": Code(SNOMED, "113345001", "Abdominal structure"),
    "back": Code(SNOMED, "77568009", "Back structure, excluding neck"),
    "chest": Code(SNOMED, "51185008", "Thoracic structure"),
    "ear": Code(SNOMED, "117590005", "Ear structure"),
    "face": Code(SNOMED, "89545001", "Face structure"),
    "foot": Code(SNOMED, "56459004", "Foot structure"),
    "genital": Code(SNOMED, "263767004", "Genital structure"),
    "hand": Code(SNOMED, "85562004", "Hand structure"),
    "lower extremity": Code(SNOMED, "61685007", "Lower limb structure"),
    "neck": Code(SNOMED, "45048000", "Neck structure"),
    "scalp": Code(SNOMED, "41695006", "Scalp structure"),
    "trunk": Code(SNOMED, "22943007", "Trunk structure"),
    "upper extremity": Code(SNOMED, "53120007", "Upper limb structure"),
    # "acral" and "unknown": text only (see the module's docstring).
}

# Portal laterality -> SNOMED CT qualifier value (BodyStructure.locationQualifier); "unknown": none.
LATERALITY: dict[str, Code] = {
    "left": Code(SNOMED, "7771000", "Left"),
    "right": Code(SNOMED, "24028007", "Right"),
    "midline": Code(SNOMED, "399488007", "Midline"),
}

LESION_MORPHOLOGY = Code(SNOMED, "52988006", "Lesion")

CLASSIFICATION = Code(PORTAL_CODES, "ai-skin-lesion-classification", "AI skin lesion classification")
CLASSIFICATION_REPORT = Code(
    PORTAL_CODES, "ai-skin-lesion-classification-report", "AI skin lesion classification report"
)
MALIGNANCY_SCORE = Code(
    PORTAL_CODES, "malignancy-score", "Malignancy score (melanoma + basal cell carcinoma + actinic keratosis)"
)
MALIGNANCY_FLAG = Code(PORTAL_CODES, "malignancy-flag", "Malignancy score at or above the model's threshold")
SCREENING_WARNING = Code(PORTAL_CODES, "screening-warning", "Screening warning about the image or the result")
IMAGING_CATEGORY = Code(OBSERVATION_CATEGORY, "imaging", "Imaging")
MEDIA_IMAGE = Code(MEDIA_TYPE, "image", "Image")
# DICOM modality XC, external-camera photography: what a dermatoscope attached to a camera is.
MODALITY_XC = Code(DICOM_DCM, "XC", "External-camera Photography")

DEVICE_TYPE_TEXT = "AI skin lesion classifier (decision support software)"
DEVICE_NAME = "SkinPortal skin lesion classifier"

DECISION_SUPPORT_NOTE = (
    "Decision support, not a diagnosis: SkinPortal is research and education software, not a certified "
    "medical device. A clinician decides."
)
