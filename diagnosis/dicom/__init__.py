"""DICOM export of a lesion image (export.py) and the body-site codes it carries (codes.py).

Import goes the other way through the one upload path (diagnosis.inference.sanitise_upload ->
ml.dicom_input), so a DICOM upload is checked and stored like any JPEG or PNG.
"""
