"""How a batch's progress is shown: each image in one of four buckets, from the status of its
newest classification, and the counts of a batch by bucket. No queries here: the selectors
(diagnosis/selectors/) fetch the statuses; pages and the API show what this makes of them.

Also the short badges that lists (dashboard, batch page, lesion timeline) show for one result:
its reading level (diagnosis/interpretation.py) and each screening warning in a few words."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from diagnosis.inference import IMAGE_WARNINGS, WARNING_CODES, warning_label, warning_text
from diagnosis.interpretation import FLAGGED, REASSURING, UNCERTAIN, UNRELIABLE, level_of
from diagnosis.models import Classification, ClassificationStatus

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
_BUCKET = {
    None: QUEUED,
    ClassificationStatus.PENDING: QUEUED,
    ClassificationStatus.RUNNING: RUNNING,
    ClassificationStatus.SUCCEEDED: DONE,
    ClassificationStatus.FAILED: FAILED,
}


def image_bucket(status: str | None) -> str:
    """The bucket of an image whose newest classification has `status` (None: none yet)."""
    return _BUCKET.get(status, QUEUED)


@dataclass(frozen=True)
class BatchProgress:
    received: int  # files received (stored ones, refused ones, and any still being stored)
    total: int  # images stored
    queued: int
    running: int
    done: int
    failed: int
    rejected: int  # files refused at upload (listed in batch.rejected)

    @classmethod
    def of(cls, *, received: int, rejected: int, buckets: Iterable[str]) -> BatchProgress:
        counts = {QUEUED: 0, RUNNING: 0, DONE: 0, FAILED: 0}
        for bucket in buckets:
            counts[bucket] += 1
        return cls(received=received, total=sum(counts.values()), rejected=rejected, **counts)

    @property
    def finished(self) -> bool:
        """Every file stored or refused, and every stored image done or failed."""
        return self.queued == 0 and self.running == 0 and self.total + self.rejected >= self.received

    @property
    def status(self) -> str:
        return "finished" if self.finished else "running"

    @property
    def percent(self) -> int:
        return 100 if self.total == 0 else round(100 * (self.done + self.failed) / self.total)


@dataclass(frozen=True)
class BatchImageStatus:
    """One image of a batch as its progress view shows it: one row of one query. No figures, but
    what a polling page needs to mark a finished image: its warnings and whether it is flagged."""

    id: int
    source_name: str
    lesion_id: int
    patient_id: int
    captured_at: dt.date
    status: str  # queued, running, done or failed
    warnings: tuple[str, ...] = ()  # of the newest classification (empty until it is done)
    malignant: bool | None = None  # None until done
    top_class: str | None = None  # None until done
    malignancy_score: float | None = None  # None until done
    reviewed: bool = False  # a clinician reviewed the image
    confirmed_diagnosis: str | None = None  # the diagnosis histopathology confirmed, if any

    @property
    def level(self) -> str | None:
        """The reading level (diagnosis/interpretation.py) of a done image, from the same two
        fields read_result decides it by; None while not done."""
        if self.status != DONE or self.malignant is None:
            return None
        return level_of(malignant=self.malignant, warnings=self.warnings)


# --- Result badges in lists -------------------------------------------------------------------

# The badge's words for each reading level; its colour is the level's class (portal.css).
LEVEL_LABELS: dict[str, str] = {
    UNRELIABLE: "Image in doubt",
    FLAGGED: "Above threshold",
    UNCERTAIN: "Below threshold",  # amber, with an "uncertain" warning badge beside it
    REASSURING: "Below threshold",
}


@dataclass(frozen=True)
class WarningBadge:
    code: str
    label: str  # a few words
    message: str  # the full sentence
    image: bool  # the picture itself is in doubt (not only the model's confidence)

    @property
    def css(self) -> str:
        return "warning" if self.image else "uncertain"


def warning_badges(codes: Sequence[str] | None) -> list[WarningBadge]:
    """Badges for warning codes, most fundamental first (unknown codes shown as they are)."""
    order = {code: index for index, code in enumerate(WARNING_CODES)}
    ordered = sorted(codes or [], key=lambda code: order.get(code, len(order)))
    return [WarningBadge(code, warning_label(code), warning_text(code), code in IMAGE_WARNINGS)
            for code in ordered]


@dataclass(frozen=True)
class ResultBadge:
    """One succeeded result as a list shows it: green only when the reading is reassuring."""

    level: str  # interpretation.LEVELS: also the badge's CSS class
    label: str
    score: float | None
    warnings: list[WarningBadge] = field(default_factory=list)


def result_badge(classification: Classification | None) -> ResultBadge | None:
    """The badge of a succeeded classification; None otherwise (the page shows its status)."""
    if classification is None or not classification.succeeded:
        return None
    level = level_of(malignant=classification.malignant, warnings=classification.warnings)
    return ResultBadge(
        level=level,
        label=LEVEL_LABELS[level],
        score=classification.malignancy_score,
        warnings=warning_badges(classification.warnings),
    )
