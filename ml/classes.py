"""The label space of the HAM10000 / ISIC 2018 Task 3 classifier.

Order matters: it is the order of the model's output vector and of every stored
probability list. Changing it is a new model version.
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

# The malignant group used for the malignancy score and the referral flag.
MALIGNANT_CLASSES: frozenset[str] = frozenset({"mel", "bcc", "akiec"})

# Names a clinician reads; the code stays visible so results match the literature.
CLASS_NAMES: dict[str, str] = {
    "akiec": "Actinic keratosis / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}

MALIGNANT_INDICES: tuple[int, ...] = tuple(i for i, c in enumerate(CLASSES) if c in MALIGNANT_CLASSES)
BENIGN_INDICES: tuple[int, ...] = tuple(i for i, c in enumerate(CLASSES) if c not in MALIGNANT_CLASSES)


def display_name(code: str) -> str:
    """'Melanoma (mel)' style label for pages and reports."""
    return f"{CLASS_NAMES[code]} ({code})"
