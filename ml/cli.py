"""Folder command lines over the serving path (onnxruntime + OpenCV, no TensorFlow).

    python -m ml predict --images DIR [--model DIR] [--context CSV] --csv OUT
        one row per image (*.jpg, *.jpeg, *.png in DIR, sorted by name):
        image_id, top_class, p_akiec ... p_vasc, malignancy_score, malignant, warnings, context, error
        `warnings` holds the screening codes joined by ";" (empty when none); an image that cannot
        be classified (unreadable, corrupt, too small) gets a row with its `error` and empty figures.
        --context: a CSV with image_id and HAM10000-style age, sex and localization columns; a model
        with a clinical-context table weighs them (ml.context) and `context` names the fields used
        (e.g. "age=60-69;sex=female;site=back").

    python -m ml explain --images DIR [--model DIR] --out DIR [--class CODE]
        for each image, <image_id>.png (the class activation map over the image) and
        <image_id>.npy (float32 map in [0, 1] at the image's own height x width); the class is
        the model's top class unless --class names one.

Both show a progress bar on stderr, never stop at a bad image, and exit 0 when every image was
handled, 1 when some could not be, 2 for a problem with the arguments or the model.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Iterator

import numpy as np

from ml.classes import CLASSES
from ml.data import read_contexts
from ml.errors import DatasetError, InvalidImageError, MLError
from ml.manifest import default_model_dir
from ml.screening import check_minimum_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CHUNK = 32  # images decoded and run together: memory stays at one chunk of decoded pixels
PREDICT_COLUMNS = ["image_id", "top_class", *(f"p_{c}" for c in CLASSES), "malignancy_score", "malignant",
                   "warnings", "context", "error"]
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def image_files(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, name) for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, name))
    )


def image_id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


class Progress:
    """A one-line bar on stderr, redrawn in place; silent when stderr is not a terminal except
    for the final line, so logs stay readable."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.live = sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if self.live or self.done == self.total:
            filled = int(30 * self.done / max(1, self.total))
            end = "\n" if self.done == self.total else ""
            print(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}", end=end,
                  file=sys.stderr, flush=True)


def decoded(paths: list[str], max_pixels: int) -> Iterator[tuple[str, np.ndarray | None, str]]:
    """(path, RGB image or None, error) for each path, in order."""
    from ml.preprocessing import read_image

    for path in paths:
        try:
            image = read_image(path, max_pixels=max_pixels)
        except InvalidImageError as exc:
            yield path, None, f"unreadable image: {exc}"
            continue
        except OSError as exc:
            yield path, None, f"cannot read the file: {exc.strerror or exc}"
            continue
        too_small = check_minimum_size(image.shape[1], image.shape[0])
        yield path, (None if too_small else image), too_small or ""


def classified(classifier, paths: list[str], progress: Progress, contexts: dict | None = None):
    """(path, image, prediction or None, error) for each path, in the order of `paths`, run CHUNK
    images at a time. An image that cannot be classified waits in the chunk with the others, so
    its row comes where its name puts it."""
    pending: list[tuple[str, np.ndarray | None, str]] = []
    decoded_images = 0

    def flush():
        nonlocal decoded_images
        kept = [(path, image) for path, image, _ in pending if image is not None]
        chosen = [(contexts or {}).get(image_id(path)) for path, _ in kept]
        predictions = iter(classifier.predict_batch([image for _, image in kept], contexts=chosen) if kept else ())
        for path, image, error in pending:
            progress.step()
            yield path, image, (None if image is None else next(predictions)), error
        pending.clear()
        decoded_images = 0

    for path, image, error in decoded(paths, classifier.max_pixels):
        pending.append((path, image, error))
        decoded_images += image is not None
        if decoded_images == CHUNK:
            yield from flush()
    if pending:
        yield from flush()


def predict_row(path: str, prediction, error: str) -> dict[str, str]:
    row = dict.fromkeys(PREDICT_COLUMNS, "")
    row["image_id"] = image_id(path)
    if prediction is None:
        row["error"] = error
        return row
    row["top_class"] = prediction.top_class
    for code in CLASSES:
        row[f"p_{code}"] = f"{prediction.probabilities[code]:.6f}"
    row["malignancy_score"] = f"{prediction.malignancy_score:.6f}"
    row["malignant"] = "1" if prediction.malignant else "0"
    row["warnings"] = ";".join(prediction.warnings)
    row["context"] = ";".join(f"{field}={value}" for field, value in prediction.context.items())
    return row


def run_predict(classifier, paths: list[str], csv_path: str, contexts: dict | None = None) -> int:
    failures = 0
    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PREDICT_COLUMNS)
        writer.writeheader()
        for path, _, prediction, error in classified(classifier, paths, Progress(len(paths), "predict"), contexts):
            failures += prediction is None
            writer.writerow(predict_row(path, prediction, error))
    print(f"{len(paths) - failures} of {len(paths)} images classified; results in {csv_path}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def run_explain(classifier, paths: list[str], out_dir: str, class_code: str | None) -> int:
    from ml.explain import encode_png, heat_map, overlay

    os.makedirs(out_dir, exist_ok=True)
    failures = 0
    for path, image, prediction, error in classified(classifier, paths, Progress(len(paths), "explain")):
        if prediction is None:
            failures += 1
            print(f"{os.path.basename(path)}: {error}", file=sys.stderr)
            continue
        code = class_code or prediction.top_class
        heat = heat_map(prediction.cam, CLASSES.index(code), image.shape[:2], classifier.config.height_width,
                        field_of_view=prediction.field_of_view)
        stem = os.path.join(out_dir, image_id(path))
        np.save(stem + ".npy", heat.astype(np.float32))
        with open(stem + ".png", "wb") as fh:
            fh.write(encode_png(overlay(image, heat)))
    print(f"{len(paths) - failures} of {len(paths)} images explained; maps in {out_dir}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    parser = argparse.ArgumentParser(prog=f"python -m ml {command}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of *.jpg, *.jpeg, *.png images")
    parser.add_argument("--model", help="model bundle folder (default: $SKINPORTAL_MODEL_DIR, else ml/models/CURRENT)")
    if command == "predict":
        parser.add_argument("--csv", required=True, help="the CSV to write")
        parser.add_argument("--context", metavar="CSV",
                            help="image_id with HAM10000-style age, sex and localization columns, weighed as the "
                                 "clinical context when the model has a table")
    elif command == "explain":
        parser.add_argument("--out", required=True, help="folder for <image_id>.png and <image_id>.npy")
        parser.add_argument("--class", dest="class_code", choices=CLASSES, help="class to explain (default: the top class)")
    else:
        parser.error("the command is predict or explain")
    args = parser.parse_args(argv[1:])
    if not os.path.isdir(args.images):
        print(f"error: {args.images} is not a folder", file=sys.stderr)
        return EXIT_USAGE
    paths = image_files(args.images)
    if not paths:
        print(f"error: no *.jpg, *.jpeg or *.png images in {args.images}", file=sys.stderr)
        return EXIT_USAGE
    from ml.inference import Classifier

    try:
        classifier = Classifier(args.model or default_model_dir())
    except MLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if command == "predict":
        try:
            contexts = read_contexts(args.context) if args.context else None
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return run_predict(classifier, paths, args.csv, contexts)
    return run_explain(classifier, paths, args.out, args.class_code)
