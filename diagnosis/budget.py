"""How much decoding one upload may cost the server: the per-image pixel cap and the per-request
budget of decoded pixels, file bytes and inflated bytes, backed by a clock.

A size cap bounds what a client sends; it does not bound what that unpacks to. A 27 KB ZIP of
zero-filled 6000x6000 PNGs is 60 x 108 MB of pixels, and 500 ZIP entries can point at the same
10 MiB member. So every request (a page upload, an API upload, a whole batch) gets one
UploadBudget, and everything it unpacks pays for itself *before* it is unpacked, in the three
things decoding costs by:

* pixels: an image pays width x height, read from its header, before any pixel is decoded;
* file bytes: each file pays its size before it is read from a ZIP (whose members are refused
  together, before any is inflated, when their declared sizes go over) or decoded; a JPEG's
  entropy decoding costs by the byte (8 MB of a noisy progressive JPEG take half a second,
  whatever its pixels);
* inflated bytes: a PNG pays what its image data inflates to (rows of width x channels x bit
  depth), up to 1,000 times its file.

Each is sized to a few seconds of decoding at most on 2 busy cores. They add up, though (the
slowest JPEG bytes, then the slowest PNG rows, then many small files), so a wall-clock limit
backs them: once the request has spent `max_seconds`, the next file is not read or decoded.

The first charge over the budget refuses the whole request (BudgetExceeded): the services turn it
into a 400 and store nothing. The figures and why: SECURITY.md, "Decompression cost".
No ORM, no ml/: the services make one per request and hand it to archives.ZipMembers and
inference.sanitise_upload.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.conf import settings


class BudgetExceeded(Exception):
    """The request needs more decoding than one request may do; nothing of it is stored."""


def megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:,.1f} megapixels"


def mebibytes(n_bytes: int) -> str:
    return f"{n_bytes / (1024 * 1024):,.0f} MiB"


@dataclass
class UploadBudget:
    """What one request may decode; counts what it has decoded so far."""

    max_image_pixels: int  # one image (checked from its header, with the format checks)
    max_pixels: int  # all the images of the request together
    max_file_bytes: int  # the files read: sent as they are, or unpacked from a ZIP
    max_inflated_bytes: int  # what zlib unpacks inside the PNGs (their image data)
    max_seconds: float = float("inf")  # checked before each file is read or decoded
    started: float = field(default_factory=lambda: time.monotonic())  # looked up at each call: tests set the clock
    pixels: int = 0
    file_bytes: int = 0
    inflated_bytes: int = 0

    @classmethod
    def for_request(cls) -> UploadBudget:
        """A fresh budget from the settings: one per page upload, API upload or batch."""
        return cls(
            max_image_pixels=settings.SKINPORTAL_MAX_IMAGE_PIXELS,
            max_pixels=settings.SKINPORTAL_UPLOAD_PIXEL_BUDGET,
            max_file_bytes=settings.SKINPORTAL_UPLOAD_FILE_BUDGET,
            max_inflated_bytes=settings.SKINPORTAL_UPLOAD_INFLATE_BUDGET,
            max_seconds=settings.SKINPORTAL_UPLOAD_SECONDS,
        )

    @property
    def file_bytes_left(self) -> int:
        return self.max_file_bytes - self.file_bytes

    def _check_time(self, what: str) -> None:
        elapsed = time.monotonic() - self.started
        if elapsed > self.max_seconds:
            raise BudgetExceeded(
                f"{what}: this upload has taken {elapsed:.1f} s to check, over the {self.max_seconds:g} s one upload "
                "or batch may take (a large upload, or a busy server); nothing was stored: send the images in "
                "smaller groups"
            )

    def charge_pixels(self, pixels: int, *, what: str) -> None:
        """Pay for decoding `pixels` (before decoding them). Raises BudgetExceeded."""
        self._check_time(what)
        if self.pixels + pixels > self.max_pixels:
            raise BudgetExceeded(
                f"{what} would bring this upload to {megapixels(self.pixels + pixels)} to decode, over the "
                f"limit of {megapixels(self.max_pixels)} for one upload or batch; nothing was stored: send the "
                "images in smaller groups"
            )
        self.pixels += pixels

    def charge_file_bytes(self, n_bytes: int, *, what: str) -> None:
        """Pay for reading and decoding a file of `n_bytes` (before reading it). Raises BudgetExceeded."""
        self._check_time(what)
        if n_bytes > self.file_bytes_left:
            raise BudgetExceeded(
                f"{what} would bring this upload to {mebibytes(self.file_bytes + n_bytes)} of image files, over "
                f"the limit of {mebibytes(self.max_file_bytes)} for one upload or batch; nothing was stored: send "
                "the images in smaller groups"
            )
        self.file_bytes += n_bytes

    def charge_inflated(self, n_bytes: int, *, what: str) -> None:
        """Pay for inflating `n_bytes` of PNG image data (before inflating them). Raises BudgetExceeded."""
        if self.inflated_bytes + n_bytes > self.max_inflated_bytes:
            raise BudgetExceeded(
                f"{what} would bring this upload to {mebibytes(self.inflated_bytes + n_bytes)} of PNG image data "
                f"unpacked, over the limit of {mebibytes(self.max_inflated_bytes)} for one upload or batch; nothing "
                "was stored: send the images in smaller groups"
            )
        self.inflated_bytes += n_bytes
