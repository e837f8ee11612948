"""The body site as DICOM's Anatomic Region Sequence: SNOMED CT (coding scheme designator `SCT`).

One table for every export: the codes are the FHIR export's (diagnosis/fhir/codes.BODY_SITES,
checked there against published value sets), written here with DICOM's scheme designator.
`acral` (palms, soles, nails: no one SNOMED CT region) and `unknown` have no code: their Anatomic
Region Sequence is left out rather than coded wrongly.
"""

from __future__ import annotations

from typing import NamedTuple

from diagnosis.fhir.codes import BODY_SITES, SNOMED

SNOMED_CT = "SCT"


class Code(NamedTuple):
    value: str
    meaning: str
    scheme: str = SNOMED_CT


BODY_SITE_CODES: dict[str, Code] = {
    site: Code(code.code, code.display) for site, code in BODY_SITES.items() if code.system == SNOMED
}


def body_site_code(body_site: str) -> Code | None:
    """The SNOMED CT code of a body site; None for acral and unknown."""
    return BODY_SITE_CODES.get(body_site)
