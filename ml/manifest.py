"""The model bundle's manifest: what the ONNX files are, and the checks that make loading fail closed.

A bundle is a folder ``ml/models/<version>/`` holding ``manifest.json`` and the files it lists.
``ml/models/CURRENT`` names the bundle served by default.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from ml.classes import CLASSES, MALIGNANT_CLASSES
from ml.errors import ModelIntegrityError

MANIFEST_NAME = "manifest.json"
# 2: three outputs (logits, features, cam) and screening statistics (ml/screening). A format-1
# bundle predates them: `python -m ml repackage` (training extra) upgrades it.
FORMAT_VERSION = 2
MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
VARIANTS: tuple[str, ...] = ("fp32", "int8")
REQUIRED_KEYS: tuple[str, ...] = ("format", "version", "classes", "input", "outputs", "preprocessing", "variants", "screening")
# The graph's outputs by role, in the order Classifier.run returns them.
OUTPUTS: tuple[str, ...] = ("logits", "features", "cam")


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_model_dir() -> str:
    """$SKINPORTAL_MODEL_DIR, else the bundle named in ml/models/CURRENT."""
    configured = os.environ.get("SKINPORTAL_MODEL_DIR", "").strip()
    return configured or shipped_model_dir()


def shipped_model_dir() -> str:
    """The bundle named in ml/models/CURRENT, whatever the environment says."""
    name = _read_pointer("CURRENT")
    if name is None:
        current = os.path.join(MODELS_DIR, "CURRENT")
        raise ModelIntegrityError(f"no default model: {current} is missing; set SKINPORTAL_MODEL_DIR")
    return os.path.join(MODELS_DIR, name)


def _read_pointer(pointer: str) -> str | None:
    """The bundle name held in ml/models/<pointer> (CURRENT, SEGMENTER), or None without that file."""
    try:
        with open(os.path.join(MODELS_DIR, pointer)) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return None


def _read_manifest_json(model_dir: str, what: str) -> tuple[str, dict[str, Any]]:
    """(path, parsed object) of a bundle's manifest.json; ModelIntegrityError when it is missing,
    not JSON or not a JSON object. `what` names the kind of manifest in the messages."""
    path = os.path.join(model_dir, MANIFEST_NAME)
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except FileNotFoundError as exc:
        raise ModelIntegrityError(f"{what} not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ModelIntegrityError(f"{what} is not valid JSON: {path}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ModelIntegrityError(f"{path}: not a manifest object")
    return path, manifest


def load_manifest(model_dir: str) -> dict[str, Any]:
    """Read and sanity-check a manifest; ModelIntegrityError on anything off."""
    path, manifest = _read_manifest_json(model_dir, "model manifest")
    if manifest.get("format") == 1:
        raise ModelIntegrityError(
            f"{path}: manifest format 1 predates the screening statistics and class activation maps this release "
            f"needs; upgrade the bundle with `python -m ml repackage --model {model_dir}` (training extra)")
    if manifest.get("format") != FORMAT_VERSION:
        raise ModelIntegrityError(f"{path}: manifest format {manifest.get('format')} is not {FORMAT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelIntegrityError(f"{path}: missing key(s) {', '.join(missing)}")
    missing_outputs = [role for role in OUTPUTS if role not in manifest["outputs"]]
    if missing_outputs:
        raise ModelIntegrityError(f"{path}: outputs lack {', '.join(missing_outputs)}")
    if tuple(manifest["classes"]) != CLASSES:
        raise ModelIntegrityError(f"{path}: classes {manifest['classes']} differ from this code's {list(CLASSES)}")
    if set(manifest.get("malignant_classes", MALIGNANT_CLASSES)) != set(MALIGNANT_CLASSES):
        raise ModelIntegrityError(f"{path}: malignant group differs from this code's {sorted(MALIGNANT_CLASSES)}")
    return manifest


def trained_through_crop(manifest: dict[str, Any]) -> bool:
    """Whether the bundle's network was trained on views cropped to the field of view: its
    preprocessing has the crop and no repackage added it afterwards (`ml repackage --field-of-view`
    serves weights trained without it)."""
    return bool(manifest["preprocessing"].get("field_of_view")) and not manifest["training"]["fit"].get(
        "field_of_view_added")


def variant_file(model_dir: str, manifest: dict[str, Any], variant: str) -> str:
    """Path of one variant's ONNX file after checking its sha256 against the manifest."""
    entry = manifest["variants"].get(variant)
    if entry is None:
        raise ModelIntegrityError(f"model {manifest['version']} has no {variant!r} variant; it has {sorted(manifest['variants'])}")
    return verified_file(model_dir, entry, "model file")


def verified_file(model_dir: str, entry: dict[str, Any], what: str) -> str:
    """Path of a bundle file named by a manifest entry ({"file", "sha256"}) after checking that it
    is there and has that sha256; ModelIntegrityError otherwise (fail closed)."""
    path = os.path.join(model_dir, entry["file"])
    if not os.path.isfile(path):
        raise ModelIntegrityError(f"{what} missing: {path}")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ModelIntegrityError(f"{what} {path} has sha256 {actual}, manifest says {entry['sha256']}: refusing to load it")
    return path


def write_manifest(model_dir: str, manifest: dict[str, Any]) -> str:
    path = os.path.join(model_dir, MANIFEST_NAME)
    with open(path, "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=False)
        fh.write("\n")
    return path


# --- Segmentation bundles (ml/segmentation/trained.py) ---------------------------------------
# A separate kind of bundle with its own format number: one ONNX graph from an image to a lesion
# probability map. `ml/models/SEGMENTER` names the one served by default, like CURRENT does for
# the classifier; without that file the classical segmenter is used.

SEGMENTATION_FORMAT = 1
SEGMENTATION_TASK = "segmentation"
SEGMENTATION_REQUIRED_KEYS: tuple[str, ...] = ("format", "task", "version", "input", "output", "preprocessing", "files")
SEGMENTER_POINTER = "SEGMENTER"


def named_segmenter_dir() -> str | None:
    """$SKINPORTAL_SEGMENTER_DIR, else the bundle named in ml/models/SEGMENTER, else None
    (no trained segmenter named: the classical one is used). "classical" in either place names
    no bundle on purpose."""
    configured = os.environ.get("SKINPORTAL_SEGMENTER_DIR", "").strip()
    if configured:
        return None if configured == "classical" else configured
    name = _read_pointer(SEGMENTER_POINTER)
    return None if not name or name == "classical" else os.path.join(MODELS_DIR, name)


def load_segmentation_manifest(model_dir: str) -> dict[str, Any]:
    """Read and sanity-check a segmentation bundle's manifest; ModelIntegrityError on anything off
    (missing file, another task, another format, a missing key or an impossible shape)."""
    path, manifest = _read_manifest_json(model_dir, "segmentation manifest")
    if manifest.get("task") != SEGMENTATION_TASK:
        raise ModelIntegrityError(f"{path}: task {manifest.get('task')!r} is not {SEGMENTATION_TASK!r}: "
                                  "not a segmentation bundle")
    if manifest.get("format") != SEGMENTATION_FORMAT:
        raise ModelIntegrityError(f"{path}: segmentation manifest format {manifest.get('format')} "
                                  f"is not {SEGMENTATION_FORMAT}")
    missing = [k for k in SEGMENTATION_REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelIntegrityError(f"{path}: missing key(s) {', '.join(missing)}")
    if "model" not in manifest["files"]:
        raise ModelIntegrityError(f"{path}: files lack the 'model' entry")
    in_shape, out_shape = list(manifest["input"].get("shape", [])), list(manifest["output"].get("shape", []))
    if len(in_shape) != 4 or in_shape[3] != 3 or len(out_shape) != 4 or out_shape[3] != 1 \
            or out_shape[1:3] != in_shape[1:3]:
        raise ModelIntegrityError(f"{path}: input shape {in_shape} / output shape {out_shape} are not "
                                  "(N, H, W, 3) -> (N, H, W, 1)")
    threshold = manifest["output"].get("threshold")
    if not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ModelIntegrityError(f"{path}: output threshold {threshold!r} is not in (0, 1)")
    return manifest
