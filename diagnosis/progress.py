"""How a batch's progress is shown: each image in one of four buckets, from the status of its
newest classification, and the counts of a batch by bucket. No queries here: the selectors
(diagnosis/selectors.py) fetch the statuses; pages and the API show what this makes of them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from diagnosis.models import ClassificationStatus

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
    """One image of a batch as its progress view shows it: one row of one query, no results."""

    id: int
    source_name: str
    lesion_id: int
    patient_id: int
    captured_at: dt.date
    status: str  # queued, running, done or failed
