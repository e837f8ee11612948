"""The portal's one door into the ml package.

Everything diagnosis/ needs from ml/ passes through this module, so the boundary stays visible:
the class vocabulary, the image checks used at upload, and the classifier. Only ml.inference,
ml.preprocessing, ml.manifest, ml.classes and ml.errors are imported: never ml.training, which
pulls in TensorFlow. At import only the light ml.classes and ml.errors load (the models import
the class names from here); OpenCV, NumPy and onnxruntime load on first use, so importing the
models, the admin or the URLs loads none of them.

The model served comes from the settings SKINPORTAL_MODEL_DIR, SKINPORTAL_MODEL_VARIANT and
SKINPORTAL_ORT_THREADS (skinportal/settings.py), passed in explicitly: ml/ reads no Django.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

from django.conf import settings

from diagnosis.archives import human_size
from diagnosis.budget import BudgetExceeded, UploadBudget
from ml.classes import CLASS_NAMES, CLASSES, MALIGNANT_CLASSES, display_name
from ml.errors import ImageTooLargeError, InvalidImageError, MLError, ModelIntegrityError
from ml.screening import (
    IMAGE_WARNINGS,
    MIN_IMAGE_SIDE,
    WARNING_CODES,
    WARNING_TEXT,
    check_minimum_size,
    warning_label,
    warning_text,
)

if TYPE_CHECKING:
    from ml.inference import Classifier

__all__ = [
    "ACCEPTED_UPLOAD_FORMATS",
    "CLASSES",
    "CLASS_NAMES",
    "IMAGE_WARNINGS",
    "MALIGNANT_CLASSES",
    "MIN_IMAGE_SIDE",
    "WARNING_CODES",
    "WARNING_TEXT",
    "BudgetExceeded",
    "ImageTooLargeError",
    "InvalidImageError",
    "MLError",
    "ModelIntegrityError",
    "ModelPerformance",
    "PortalPrediction",
    "SanitisedImage",
    "UploadBudget",
    "check_minimum_size",
    "classify_many",
    "decode_stored_image",
    "display_name",
    "get_classifier",
    "heatmap_overlay",
    "heatmap_png",
    "model_check",
    "model_performance",
    "png_inflated_size",
    "sanitise_upload",
    "segment_image",
    "use_one_opencv_thread",
    "warm_up",
    "warning_label",
    "warning_text",
]

# Formats a clinician may upload, judged from the bytes, never from the file name.
ACCEPTED_UPLOAD_FORMATS = frozenset({"JPEG", "PNG"})
# Scans a JPEG may have: encoders write one to three (baseline) or about ten (progressive); each is
# a pass of the decoder over the whole image, so thousands of tiny repeated scans are a bomb.
JPEG_MAX_SCANS = 100


@dataclass(frozen=True)
class SanitisedImage:
    data: bytes  # what is stored: the pixels' own compressed data, without metadata
    extension: str  # "jpg" or "png": the stored file's format
    source_format: str  # what was uploaded: "JPEG", "PNG" or "DICOM" (stored as PNG)
    width: int
    height: int
    pixels_per_mm: float | None = None  # a DICOM upload's PixelSpacing, when it states one
    acquired_on: dt.date | None = None  # a DICOM upload's own date (the import command may use it)


@dataclass(frozen=True)
class PortalPrediction:
    probabilities: dict[str, float]
    top_class: str
    malignancy_score: float
    malignant: bool
    threshold: float
    model_version: str
    variant: str
    inference_ms: float
    warnings: tuple[str, ...] = ()  # ml.screening.WARNING_CODES, most fundamental first
    screening: dict[str, float | None] = field(default_factory=dict)  # the measures behind them
    activation_map: list | None = None  # [row][column][class], rounded; drawn by heatmap_png


_opencv_lock = threading.Lock()
_opencv_ready = False


def use_one_opencv_thread() -> ModuleType:
    """OpenCV (cv2), imported on first use and set to one thread in every portal process (web
    and worker); every path to OpenCV in the portal comes through here first.

    The unit of parallelism here is the request or the worker process: OpenCV's own pool adds
    more hand-off cost than it saves on images this small (CLAHE of a 224x224 image takes twice
    as long on 2 threads as on 1), and it competes with onnxruntime's threads for the same cores.
    Results are identical whatever the thread count.
    """
    global _opencv_ready
    import cv2

    if not _opencv_ready:
        with _opencv_lock:
            if not _opencv_ready:
                cv2.setNumThreads(1)
                _opencv_ready = True
    return cv2


def sanitise_upload(data: bytes, *, budget: UploadBudget | None = None, name: str = "the file") -> SanitisedImage:
    """Check an upload, remove its metadata and prove that what will be stored decodes.

    The format is judged from the bytes (never the name or declared type); a truncated or
    corrupt file, or one with data after the image's end (a polyglot), is refused before any
    pixel is decoded (ml.preprocessing.check_image_header), and so is an image over the budget's
    per-image pixel cap or a JPEG of more than JPEG_MAX_SCANS scans. The image then pays its
    pixels (and a PNG the bytes its image data inflates to) to `budget`, the request's
    decompression budget shared by all its files (diagnosis/budget.py; a fresh one when None):
    BudgetExceeded refuses the whole request.

    The stored file keeps the upload's own compressed pixel data and nothing else
    (ml.preprocessing.without_metadata): EXIF (GPS, device, dates), XMP, ICC, comments and text
    chunks are gone, nothing is re-encoded (a JPEG keeps its size and exact pixels) and the
    worker decodes exactly what was checked here. A JPEG with an EXIF orientation keeps it in
    an EXIF block of that one tag, written here (_jpeg_with_orientation): its stored file is no
    larger than the upload (a PNG re-encoding of a 7 MB photo was 105 MB). A PNG with one (rare:
    browsers ignore it in PNG) is decoded upright and re-encoded as PNG, refused if that comes
    out over the upload cap. The stored file is decoded before it is accepted (_check_decodes).
    An image under ml.screening.MIN_IMAGE_SIDE pixels on a side is refused as too small to
    classify. Raises InvalidImageError (ImageTooLargeError over the pixel cap) or BudgetExceeded.
    """
    cv2 = use_one_opencv_thread()
    from ml.dicom_input import is_dicom
    from ml.preprocessing import check_image_header, decode_image, exif_orientation, jpeg_scan_count, without_metadata

    budget = budget if budget is not None else UploadBudget.for_request()
    if is_dicom(data):  # judged from the bytes (DICM at offset 128), like JPEG and PNG
        return _sanitise_dicom(data, budget=budget, name=name)
    source_format, width, height = check_image_header(data, max_pixels=budget.max_image_pixels)
    if source_format not in ACCEPTED_UPLOAD_FORMATS:
        raise InvalidImageError(f"unsupported image format {source_format}: upload a JPEG or PNG file")
    too_small = check_minimum_size(width, height)
    if too_small:  # refused before decoding: a thumbnail or a 1x1 pixel gets no diagnosis
        raise InvalidImageError(too_small.rstrip("."))
    if source_format == "JPEG" and (scans := jpeg_scan_count(data)) > JPEG_MAX_SCANS:
        raise ImageTooLargeError(
            f"the image is too large to decode safely: the JPEG has {scans:,} scans, each a pass over the whole "
            f"image (the limit is {JPEG_MAX_SCANS}; a progressive JPEG has about ten)"
        )
    # Paid before any pixel is decoded: the request's files share the one budget.
    budget.charge_pixels(width * height, what=name)
    if source_format == "PNG":
        budget.charge_inflated(png_inflated_size(data), what=name)
    extension = "jpg" if source_format == "JPEG" else "png"
    stored = without_metadata(data, source_format)
    orientation = exif_orientation(data)
    if orientation != 1:
        if orientation >= 5:  # turned by 90 degrees: upright, the sides swap
            width, height = height, width
        if source_format == "JPEG":
            stored = _jpeg_with_orientation(stored, orientation)
        else:
            rgb = decode_image(data, max_pixels=budget.max_image_pixels)  # OpenCV turns it by the tag
            ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            del rgb
            if not ok:
                raise InvalidImageError("the image could not be re-encoded")
            stored = encoded.tobytes()
            max_bytes = settings.SKINPORTAL_MAX_UPLOAD_BYTES
            if len(stored) > max_bytes:
                raise InvalidImageError(
                    f"turned upright by its EXIF orientation the PNG is {human_size(len(stored))}, over the "
                    f"{human_size(max_bytes, unit='MiB')} limit: save it upright without an orientation tag"
                )
    _check_decodes(stored, source_format)
    return SanitisedImage(data=stored, extension=extension, source_format=source_format, width=width, height=height)


def _sanitise_dicom(data: bytes, *, budget: UploadBudget, name: str) -> SanitisedImage:
    """A DICOM upload (ml.dicom_input) stored as an RGB PNG of its one frame (a JPEG baseline frame:
    as that JPEG, without metadata, like a JPEG upload), nothing of its header kept: refused from
    the header alone (transfer syntax, frames, bits, samples, the pixel cap) before any pixel is
    decoded, then it pays its pixels to the budget like any image."""
    cv2 = use_one_opencv_thread()
    from ml.dicom_input import check_dicom_header, decode_dicom
    from ml.preprocessing import without_metadata

    header = check_dicom_header(data, max_pixels=budget.max_image_pixels)
    too_small = check_minimum_size(header.width, header.height)
    if too_small:
        raise InvalidImageError(too_small.rstrip("."))
    budget.charge_pixels(header.width * header.height, what=name)
    pixels = decode_dicom(data, max_pixels=budget.max_image_pixels, header=header, decode_jpeg=False)
    if pixels.jpeg is not None:
        # A JPEG frame is stored as the JPEG it is, like a JPEG upload: not re-encoded, no larger
        # (a 12 MP frame of 1.7 MiB is 14.5 MiB as PNG, over the upload cap).
        stored, extension = without_metadata(pixels.jpeg, "JPEG"), "jpg"
        _check_decodes(stored, "JPEG")
    else:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels.rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise InvalidImageError("the image could not be re-encoded")
        stored, extension = encoded.tobytes(), "png"
        max_bytes = settings.SKINPORTAL_MAX_UPLOAD_BYTES
        if len(stored) > max_bytes:  # cannot happen from an upload under the cap; checked all the same
            raise InvalidImageError(
                f"stored as PNG the DICOM image is {human_size(len(stored))}, over the "
                f"{human_size(max_bytes, unit='MiB')} limit"
            )
    return SanitisedImage(
        data=stored,
        extension=extension,
        source_format="DICOM",
        width=header.width,
        height=header.height,
        pixels_per_mm=pixels.pixels_per_mm,
        acquired_on=pixels.acquired_on,
    )


def decode_stored_image(data: bytes):
    """A stored image file (JPEG or PNG) as H x W x 3 uint8 RGB, decoded as the classifier
    decodes it (ml.preprocessing.decode_image). Raises InvalidImageError."""
    use_one_opencv_thread()
    from ml.preprocessing import decode_image

    return decode_image(data)


def _check_decodes(stored: bytes, source_format: str) -> None:
    """Decode the file that will be stored, so corrupt image data is refused now, not in the
    worker. Every byte of it is decoded, with little held: a PNG's rows are all inflated and
    unfiltered (to grey, a byte a pixel), and a JPEG's every coefficient is entropy-decoded at
    1/8 scale (libjpeg skips the full-size inverse DCT: a fraction of the time and 1/64 of the
    memory). Raises InvalidImageError."""
    cv2 = use_one_opencv_thread()
    import numpy as np

    flags = cv2.IMREAD_REDUCED_GRAYSCALE_8 if source_format == "JPEG" else cv2.IMREAD_GRAYSCALE
    try:
        decoded = cv2.imdecode(np.frombuffer(stored, dtype=np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as exc:  # a decoder that throws instead of returning None
        raise InvalidImageError("the image data is corrupt and could not be decoded") from exc
    if decoded is None or decoded.size == 0:
        raise InvalidImageError("the image data is corrupt or truncated and could not be decoded")


def _jpeg_with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """`jpeg` (without metadata) with one EXIF block, written here, that holds the orientation
    tag and nothing else (no bytes of the upload's own EXIF are kept). Browsers, OpenCV (the
    worker, the heatmap) and the PDF report turn the picture upright by it."""
    ifd_entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # Orientation, SHORT, 1 value
    payload = b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + ifd_entry + struct.pack(">I", 0)
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    position = 2  # after the start-of-image marker, and after a JFIF header (it comes first)
    if jpeg[2:4] == b"\xff\xe0":
        position = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:position] + segment + jpeg[position:]


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey+alpha, RGBA
_ADAM7_PASSES = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_inflated_size(data: bytes) -> int:
    """The bytes a PNG's image data inflates to (each row a filter byte and its pixels' bits;
    an interlaced image's seven passes), from its IHDR: what zlib produces when it is decoded.
    `data` must have passed check_image_header (IHDR is its first chunk)."""
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = _PNG_CHANNELS.get(colour_type, 4) * depth

    def rows(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w > 0 and h > 0 else 0

    if interlace != 1:
        return rows(width, height)
    return sum(rows(-(-(width - x0) // dx), -(-(height - y0) // dy)) for x0, y0, dx, dy in _ADAM7_PASSES)


def configured_model_dir() -> str:
    """The configured bundle folder: settings.SKINPORTAL_MODEL_DIR, else ml/models/<CURRENT>.
    Raises ModelIntegrityError when neither is there."""
    from ml.manifest import shipped_model_dir

    return settings.SKINPORTAL_MODEL_DIR or shipped_model_dir()


def get_classifier() -> Classifier:
    """This process's classifier, loaded and verified on first use with the settings' bundle,
    variant and threads (after changing them, ml.inference.reset_classifier() loads it again).
    Raises MLError for a model problem."""
    use_one_opencv_thread()  # ml.inference loads OpenCV (preprocessing)
    from ml import inference as ml_inference

    return ml_inference.get_classifier(
        model_dir=configured_model_dir(),
        variant=settings.SKINPORTAL_MODEL_VARIANT,
        threads=settings.SKINPORTAL_ORT_THREADS,
    )


def loaded_model_version() -> str:
    """Version of the model this process serves (loads it on first use)."""
    return get_classifier().model_version


ImageSource = bytes | Callable[[], bytes]  # the bytes, or a reader called when the image's turn comes


def classify_many(images: Sequence[ImageSource]) -> list[PortalPrediction | InvalidImageError | OSError]:
    """Classify images in one onnxruntime call per 32 (a micro-batch; one image is a list of one).

    Each image is read (a reader is called only when its turn comes), decoded and at once
    reduced to the model's input size, before the next: a micro-batch holds one full-size image
    at a time and model-sized ones otherwise (16 decoded 36 MP images were 1.7 GB). The
    reduction is the one preprocess_views applies, so the results are the same.
    Returns one entry per input, in order: a prediction, or the InvalidImageError of an image
    that could not be decoded, or the OSError of one that could not be read (the others still
    get their results). Raises MLError for a model problem. `inference_ms` is the image's
    decode time plus its share of the batched model time.
    """
    use_one_opencv_thread()
    import numpy as np

    from ml.preprocessing import decode_image, resize

    classifier = get_classifier()
    model_size = classifier.config.height_width
    results: list[PortalPrediction | InvalidImageError | OSError | None] = [None] * len(images)
    reduced, positions, decode_ms = [], [], []
    for index, source in enumerate(images):
        started = time.perf_counter()
        try:
            data = source() if callable(source) else source
            rgb = decode_image(bytes(data), max_pixels=classifier.max_pixels)
        except (InvalidImageError, OSError) as exc:
            results[index] = exc
            continue
        del data
        reduced.append(resize(rgb, model_size))
        del rgb  # before the next image is decoded
        positions.append(index)
        decode_ms.append((time.perf_counter() - started) * 1000.0)
    if reduced:
        started = time.perf_counter()
        predictions = classifier.predict_batch(reduced)
        share_ms = (time.perf_counter() - started) * 1000.0 / len(reduced)
        for index, prediction, own_ms in zip(positions, predictions, decode_ms):
            results[index] = PortalPrediction(
                probabilities=dict(prediction.probabilities),
                top_class=prediction.top_class,
                malignancy_score=float(prediction.malignancy_score),
                malignant=bool(prediction.malignant),
                threshold=float(prediction.threshold),
                model_version=prediction.model_version,
                variant=prediction.variant,
                inference_ms=own_ms + share_ms,
                warnings=tuple(prediction.warnings),
                screening=dict(prediction.screening),
                # Four decimals of a logit contribution are far below what a colour shows.
                activation_map=None if prediction.cam is None else np.round(prediction.cam, 4).tolist(),
            )
    return results  # type: ignore[return-value]


HEATMAP_MAX_SIDE = 1024  # the overlay is a picture to look at, not a copy of the upload


def heatmap_overlay(rgb, activation_map: list, class_code: str):
    """An RGB uint8 array: `rgb` with one class's activation map blended over it. Raises
    ValueError for an unknown class or a malformed map."""
    use_one_opencv_thread()
    import numpy as np

    from ml.explain import heat_map, overlay

    if class_code not in CLASSES:
        raise ValueError(f"unknown class {class_code!r}; expected one of {', '.join(CLASSES)}")
    cam = np.asarray(activation_map, dtype=np.float32)
    if cam.ndim != 3 or cam.shape[2] != len(CLASSES):
        raise ValueError(f"activation map of shape {cam.shape} is not (rows, columns, {len(CLASSES)})")
    return overlay(rgb, heat_map(cam, CLASSES.index(class_code), rgb.shape[:2]))


def heatmap_png(image_data: bytes, activation_map: list, class_code: str) -> bytes:
    """PNG of the stored image with one class's activation map blended over it (at most
    HEATMAP_MAX_SIDE pixels on the long side). Raises InvalidImageError for an unreadable image
    and ValueError for an unknown class or a malformed map."""
    cv2 = use_one_opencv_thread()
    from ml.explain import encode_png
    from ml.preprocessing import decode_image

    rgb = decode_image(image_data)
    height, width = rgb.shape[:2]
    scale = min(1.0, HEATMAP_MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return encode_png(heatmap_overlay(rgb, activation_map, class_code))


# The lesion is segmented on the image reduced to this long side: descriptors of one size are
# comparable between visits (a border's raggedness depends on the resolution), a 36 MP upload
# costs no more than a small one, and the stored mask stays a few kilobytes.
SEGMENTATION_MAX_SIDE = 1024
OUTLINE_MAX_POINTS = 400  # the stored outline (an SVG polygon over the picture), simplified to this


def segment_image(image_data: bytes, *, pixels_per_mm: float | None = None) -> dict:
    """The lesion's segmentation as JSON-ready data to store with a classification
    (ml.segmentation.analyse on the image reduced to SEGMENTATION_MAX_SIDE):

    method, fallback (no lesion found: the outline is a centred guess), the image's own width and
    height, the descriptors (ml.segmentation.descriptors; area_px and diameter_px in the stored
    image's own pixels, mm values when `pixels_per_mm` of the stored image is given), centroid
    [x, y] and bbox [x, y, width, height] and the outline [[x, y], ...] in the image's own
    pixels, and the mask as a PNG (base64, 0/255, at the analysed size: mask_width x mask_height).
    Raises InvalidImageError for an unreadable image; other errors are the caller's to log.
    """
    cv2 = use_one_opencv_thread()
    import base64

    import numpy as np

    from ml.preprocessing import decode_image
    from ml.segmentation import analyse

    rgb = decode_image(image_data)
    height, width = rgb.shape[:2]
    scale = min(1.0, SEGMENTATION_MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    scale_y, scale_x = rgb.shape[0] / height, rgb.shape[1] / width
    scale = (scale_x + scale_y) / 2
    result = analyse(rgb, pixels_per_mm=None if pixels_per_mm is None else pixels_per_mm * scale)
    del rgb
    data = result.to_dict(with_mask=False)
    mask = result.mask
    data.update(
        width=width,
        height=height,
        mask_width=int(mask.shape[1]),
        mask_height=int(mask.shape[0]),
        # In the stored image's own pixels, whatever size it was analysed at.
        area_px=round(data["area_px"] / (scale_x * scale_y)),
        diameter_px=None if data["diameter_px"] is None else round(data["diameter_px"] / scale, 2),
        pixels_per_mm=pixels_per_mm,
    )
    binary = (mask > 0).astype(np.uint8)
    moments = cv2.moments(binary, binaryImage=True)
    if moments["m00"] > 0:
        data["centroid"] = [round(moments["m10"] / moments["m00"] / scale_x, 1),
                            round(moments["m01"] / moments["m00"] / scale_y, 1)]
        x, y, w, h = cv2.boundingRect(binary)
        data["bbox"] = [round(x / scale_x, 1), round(y / scale_y, 1), round(w / scale_x, 1), round(h / scale_y, 1)]
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contour = max(contours, key=cv2.contourArea)
        # 0.3% of the long side (3 px at 1024): invisible at display size, and it drops the
        # staircase of a mask drawn at the segmenter's working size.
        epsilon = max(1.0, 0.003 * max(mask.shape))
        points = cv2.approxPolyDP(contour, epsilon, True)
        while len(points) > OUTLINE_MAX_POINTS:
            epsilon *= 1.5
            points = cv2.approxPolyDP(contour, epsilon, True)
        data["outline"] = [[round(float(px) / scale_x, 1), round(float(py) / scale_y, 1)]
                           for px, py in points.reshape(-1, 2)]
    else:
        data["centroid"] = data["bbox"] = None
        data["outline"] = []
    ok, buffer = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if ok:
        data["mask_png_base64"] = base64.b64encode(buffer.tobytes()).decode("ascii")
    return data


def warm_up() -> None:
    """Load and verify the model now (a worker process at start), logging instead of raising:
    a missing model is reported on each image's result, and by /readyz."""
    import logging

    try:
        loaded_model_version()
    except Exception as exc:  # noqa: BLE001 - the worker starts anyway; each result and /readyz say why
        logging.getLogger(__name__).error("model not loaded at worker start: %s", exc)


@dataclass(frozen=True)
class ModelStatus:
    ok: bool
    version: str
    detail: str


_check_lock = threading.Lock()
_check_cache: dict[tuple, ModelStatus] = {}


def model_check() -> ModelStatus:
    """Is the configured model bundle present and intact? (manifest and the variant's sha256)

    Cheap enough for a readiness probe: no onnxruntime session is created, and the sha256 is
    computed again only when the file's size or modification time changes.
    """
    from ml.manifest import load_manifest

    variant = settings.SKINPORTAL_MODEL_VARIANT
    try:
        bundle = configured_model_dir()
        manifest = load_manifest(bundle)
        entry = manifest["variants"].get(variant)
        if entry is None:
            return ModelStatus(False, str(manifest.get("version", "")), f"the bundle has no {variant} variant")
        path = os.path.join(bundle, entry["file"])
        stat = os.stat(path)
    except MLError as exc:
        return ModelStatus(False, "", str(exc))
    except OSError as exc:
        return ModelStatus(False, "", f"model file unreadable: {exc}")
    key = (path, variant, stat.st_size, stat.st_mtime_ns, entry["sha256"])
    with _check_lock:
        cached = _check_cache.get(key)
    if cached is not None:
        return cached
    from ml.manifest import variant_file

    try:
        variant_file(bundle, manifest, variant)
        status = ModelStatus(True, str(manifest["version"]), f"{manifest['version']} ({variant})")
    except (MLError, OSError) as exc:
        status = ModelStatus(False, str(manifest.get("version", "")), str(exc))
    with _check_lock:
        _check_cache.clear()
        _check_cache[key] = status
    return status


@dataclass(frozen=True)
class ModelPerformance:
    """How the model did on held-out images, shown beside every result so the clinician knows how
    far to trust it: the flag's sensitivity and specificity at the model's own threshold, with
    95% intervals over lesions, on the bundle's test split (HAM10000, never used for any choice)."""

    model_version: str
    threshold: float
    sensitivity: float
    sensitivity_interval: tuple[float, float] | None
    specificity: float
    specificity_interval: tuple[float, float] | None
    balanced_accuracy: float
    test_images: int
    evaluated_on: str


_manifest_lock = threading.Lock()
_manifest_cache: dict[tuple, dict | None] = {}


def _served_manifest() -> dict | None:
    """The configured bundle's manifest, read again only when the file changes (results pages
    ask for it once per result shown); None when it cannot be read."""
    from ml.manifest import MANIFEST_NAME, load_manifest

    try:
        bundle = configured_model_dir()
        key = (bundle, os.stat(os.path.join(bundle, MANIFEST_NAME)).st_mtime_ns)
    except (MLError, OSError):
        return None
    with _manifest_lock:
        if key in _manifest_cache:
            return _manifest_cache[key]
    try:
        manifest = load_manifest(bundle)
    except MLError:
        manifest = None
    with _manifest_lock:
        _manifest_cache.clear()
        _manifest_cache[key] = manifest
    return manifest


def model_performance(model_version: str, variant: str = "fp32") -> ModelPerformance | None:
    """The configured bundle's measured test figures when it is the bundle that gave
    `model_version`'s results (None for an older model, or a bundle without them)."""
    manifest = _served_manifest()
    if manifest is None or manifest["version"] != model_version:
        return None
    test = manifest.get("metrics", {}).get("test", {}).get(variant or "fp32")
    entry = manifest["variants"].get(variant or "fp32")
    if not (test and entry):
        return None
    intervals = test.get("intervals_95", {})
    splits = manifest.get("training_data", {})

    def interval(key: str) -> tuple[float, float] | None:
        return tuple(intervals[key]) if key in intervals else None

    return ModelPerformance(
        model_version=model_version,
        threshold=float(entry["malignancy_threshold"]),
        sensitivity=float(test["malignant_sensitivity"]),
        sensitivity_interval=interval("malignant_sensitivity"),
        specificity=float(test["malignant_specificity"]),
        specificity_interval=interval("malignant_specificity"),
        balanced_accuracy=float(test["balanced_accuracy"]),
        test_images=int(test["n_images"]),
        evaluated_on=f"{test['n_images']:,} held-out test images of {splits.get('name', 'the training data set')}",
    )


def current_model_version() -> str:
    """Version of the configured bundle, from its manifest (no session). Raises MLError."""
    from ml.manifest import load_manifest

    return str(load_manifest(configured_model_dir())["version"])
