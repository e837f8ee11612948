"""FHIR R4 (JSON), read-only: the portal's patients, lesions, images and succeeded classifications
as Patient, BodyStructure, Media, Observation and DiagnosticReport resources (docs/interop.md).

codes.py      SNOMED CT, HL7 and the portal's own code tables
resources.py  pure builders: portal objects -> FHIR dicts, Bundles, OperationOutcome, CapabilityStatement
selectors.py  the searches, scoped to the caller's organisations
views.py      thin DRF views (authentication, scoping, throttling and audit as /api/v1/)
urls.py       mounted at /api/fhir/r4/ by skinportal/urls.py
"""
