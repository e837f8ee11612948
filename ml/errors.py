"""Typed errors of the ml package: callers catch these, never bare exceptions."""

from __future__ import annotations


class MLError(Exception):
    """Base class for every error raised on purpose by ``ml``."""


class InvalidImageError(MLError, ValueError):
    """The input is not an image we can decode (empty, text, corrupt, unsupported)."""


class ImageTooLargeError(InvalidImageError):
    """The image header announces more pixels than we agree to decode."""


class ModelIntegrityError(MLError):
    """The model bundle on disk does not match its manifest: we refuse to serve it."""


class DatasetError(MLError, ValueError):
    """A metadata CSV or an image folder is not usable (missing file, column or label)."""
