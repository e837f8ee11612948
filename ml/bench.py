"""`python -m ml bench`: Keras vs onnxruntime fp32 vs onnxruntime int8 speed on this machine.

    python -m ml bench [--model DIR] [--images DIR] [--n 64] [--repeats 50] [--threads N]
                       [--keras PATH] [--markdown]

One run, one table, the same preprocessed images for every backend:

* batch-1 latency (median and 95th percentile over --repeats calls, cycling through the images),
* batch-32 throughput (32 / median time of one 32-image call),
* speed-up at batch 1 relative to Keras.

The backends are timed in interleaved rounds (one call of each per round), so a background
job slowing the machine down slows all of them alike. The onnxruntime rows use the serving
session (``ml.inference.Classifier``: intra-op threads as given, spinning off); the Keras row
calls the bundle's ``model.keras`` through a ``tf.function`` with TensorFlow's intra-op threads
set to the same number. TensorFlow is imported only for that row, so the command works (and
says "not available") without it. Also printed: decode + preprocess cost per image through
``Classifier.prepare`` on the real file bytes, whether each backend agrees with fp32, and a
description of the machine.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ml.cpu import int8_kernel_class
from ml.errors import MLError, ModelIntegrityError
from ml.manifest import default_model_dir, load_manifest, sha256_file
from ml.scores import softmax

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_IMAGES = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "ham10000", "images"))
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
THROUGHPUT_BATCH = 32
SYNTHETIC_SIZE = (600, 450)  # HAM10000's original width x height

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Row:
    name: str
    runner: Runner | None = None
    reason: str = ""  # why it is not available
    batch1: list[float] = field(default_factory=list)  # seconds
    batch32: list[float] = field(default_factory=list)
    agreement: str = ""

    @property
    def available(self) -> bool:
        return self.runner is not None

    def median_ms(self) -> float:
        return float(np.median(self.batch1)) * 1e3

    def p95_ms(self) -> float:
        return float(np.percentile(self.batch1, 95)) * 1e3

    def throughput(self) -> float:
        return THROUGHPUT_BATCH / float(np.median(self.batch32))


# ---------------------------------------------------------------------------------------- images


def synthetic_jpegs(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Dermoscopy-like stand-ins: skin-toned background, a dark irregular blob, sensor noise."""
    rng = np.random.default_rng(seed)
    width, height = SYNTHETIC_SIZE
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for i in range(n):
        skin = np.array([rng.uniform(150, 220), rng.uniform(110, 170), rng.uniform(90, 150)], dtype=np.float32)
        cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
        rx, ry = rng.uniform(60, 180), rng.uniform(50, 150)
        wobble = 1 + 0.15 * np.sin(np.arctan2(yy - cy, xx - cx) * rng.integers(3, 7))
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < wobble
        img = np.broadcast_to(skin, (height, width, 3)).copy()
        img[inside] *= rng.uniform(0.3, 0.6)
        img += rng.normal(0, 6, img.shape).astype(np.float32)
        rgb = np.clip(img, 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError("OpenCV could not encode a synthetic JPEG")
        images.append((f"synthetic_{i:03d}.jpg", buf.tobytes()))
    return images


def load_images(folder: str | None, n: int) -> tuple[list[tuple[str, bytes]], str]:
    """(name, bytes) for the first ``n`` image files sorted by name, and a line saying where from."""
    if folder is None:
        if os.path.isdir(DEFAULT_IMAGES):
            folder = DEFAULT_IMAGES
        else:
            w, h = SYNTHETIC_SIZE
            return synthetic_jpegs(n), (
                f"{n} synthetic {w}x{h} JPEGs (no --images and no {DEFAULT_IMAGES}); "
                "timings of real photographs may differ slightly"
            )
    if not os.path.isdir(folder):
        raise MLError(f"image folder not found: {folder}")
    names = sorted(f for f in os.listdir(folder) if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)[:n]
    if not names:
        raise MLError(f"no .jpg/.jpeg/.png files in {folder}")
    images = []
    for name in names:
        with open(os.path.join(folder, name), "rb") as fh:
            images.append((name, fh.read()))
    short = f" (only {len(names)} there)" if len(names) < n else ""
    return images, f"first {len(names)} files (sorted) of {folder}{short}"


# --------------------------------------------------------------------------------------- backends


def onnx_runner(classifier) -> Runner:
    """The serving session's raw forward pass (logits), as Classifier.probabilities calls it."""
    session, name = classifier.session, classifier.session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def keras_file(model_dir: str, manifest: dict, override: str | None) -> tuple[str | None, str]:
    """(path, "") of the Keras model to time, or (None, reason)."""
    if override:
        return (override, "") if os.path.isfile(override) else (None, f"--keras file not found: {override}")
    entry = manifest.get("files", {}).get("keras")
    if not entry:
        return None, "the bundle lists no Keras file"
    path = os.path.join(model_dir, entry["file"])
    if not os.path.isfile(path):
        return None, f"{entry['file']} is listed in the manifest but missing"
    if "sha256" in entry and sha256_file(path) != entry["sha256"]:
        return None, f"{entry['file']} does not match the manifest's sha256"
    return path, ""


def _logits_all(runner: Runner, x: np.ndarray) -> np.ndarray:
    return np.concatenate([runner(x[i : i + THROUGHPUT_BATCH]) for i in range(0, len(x), THROUGHPUT_BATCH)])


def agreement(reference: np.ndarray, other: np.ndarray, temperature: float) -> str:
    p_ref, p = softmax(reference, temperature), softmax(other, temperature)
    same = int((p_ref.argmax(1) == p.argmax(1)).sum())
    return f"top-1 equal to fp32 on {same}/{len(p)} images, max |Δp| {float(np.abs(p - p_ref).max()):.2g}"


# ---------------------------------------------------------------------------------------- timing


def time_rows(rows: Sequence[Row], x: np.ndarray, *, repeats: int, batch_repeats: int, warmup: int) -> None:
    """Interleaved rounds: each round calls every backend once on the same input."""
    singles = [np.ascontiguousarray(x[i : i + 1]) for i in range(len(x))]
    big = np.ascontiguousarray(x[np.arange(THROUGHPUT_BATCH) % len(x)])
    live = [r for r in rows if r.available]
    for k in range(warmup):
        for row in live:
            row.runner(singles[k % len(singles)])
    for row in live:
        row.runner(big)
    for k in range(repeats):
        for row in live:
            start = time.perf_counter()
            row.runner(singles[k % len(singles)])
            row.batch1.append(time.perf_counter() - start)
    for _ in range(batch_repeats):
        for row in live:
            start = time.perf_counter()
            row.runner(big)
            row.batch32.append(time.perf_counter() - start)


def time_preprocessing(classifier, images: Sequence[tuple[str, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """(stacked model inputs, seconds per image) through Classifier.prepare on the file bytes."""
    for _, data in images[:3]:
        classifier.prepare(data)  # warm-up (OpenCV and allocator)
    tensors, seconds = [], []
    for _, data in images:
        start = time.perf_counter()
        tensors.append(classifier.prepare(data))
        seconds.append(time.perf_counter() - start)
    return np.stack(tensors).astype(np.float32), np.array(seconds)


# --------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _installed(*dists: str) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def machine_description(threads: int, tf_version: str | None) -> str:
    import onnxruntime as ort

    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    tf = tf_version or _installed("tensorflow", "tensorflow-cpu")
    tf_text = f"TensorFlow {tf}" if tf else "TensorFlow not installed"
    try:
        load = ", load average at start {:.2f}".format(os.getloadavg()[0])
    except (AttributeError, OSError):
        load = ""
    return (
        f"{cpu_model()} (int8 kernels: {int8_kernel_class()}), {cores} logical core(s) ({usable} usable){load}; "
        f"{platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__}, numpy {np.__version__}, "
        f"OpenCV {cv2.__version__}, {tf_text}; {threads} intra-op thread(s) for onnxruntime and TensorFlow"
    )


# ----------------------------------------------------------------------------------------- table

HEADERS = ("backend", "batch-1 median (ms)", "batch-1 p95 (ms)", "batch-32 (images/s)", "speed-up vs Keras (batch 1)")


def _ms(value: float) -> str:
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def table_cells(rows: Sequence[Row]) -> list[list[str]]:
    keras = next((r for r in rows if r.name.startswith("Keras") and r.available), None)
    cells = []
    for row in rows:
        if not row.available:
            cells.append([row.name, f"not available ({row.reason})", "", "", ""])
            continue
        speedup = f"{keras.median_ms() / row.median_ms():.2f}x" if keras else "n/a"
        cells.append([row.name, _ms(row.median_ms()), _ms(row.p95_ms()), f"{row.throughput():.1f}", speedup])
    return cells


def format_table(rows: Sequence[Row], *, markdown: bool) -> str:
    cells = table_cells(rows)
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |", "|---|" + "---:|" * (len(HEADERS) - 1)]
        lines += ["| " + " | ".join(v.replace("|", "\\|") for v in c) + " |" for c in cells]
        return "\n".join(lines)
    numeric = [c for c in cells if c[2:] != ["", "", ""]]
    widths = [max(len(HEADERS[0]), *(len(c[0]) for c in cells))]
    widths += [max(len(HEADERS[i]), *(len(c[i]) for c in numeric), 0) for i in range(1, len(HEADERS))]
    out = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(HEADERS, widths)))]
    out.append("  ".join("-" * w for w in widths))
    for c in cells:
        if c[2:] == ["", "", ""]:  # not available: one cell spanning the numbers
            out.append(c[0].ljust(widths[0]) + "  " + c[1])
        else:
            out.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml bench",
        description="Time Keras (TensorFlow), onnxruntime fp32 and onnxruntime int8 on the same images, "
                    "in one run, and print one table.",
    )
    parser.add_argument("--model", metavar="DIR", default=None,
                        help="model bundle (default: $SKINPORTAL_MODEL_DIR, else ml/models/<CURRENT>)")
    parser.add_argument("--images", metavar="DIR", default=None,
                        help=f"image folder; its first --n files sorted by name are used (default: {DEFAULT_IMAGES} "
                             "if present, else synthetic JPEGs)")
    parser.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    parser.add_argument("--repeats", type=int, default=50, help="timed batch-1 calls per backend (default 50)")
    parser.add_argument("--batch-repeats", type=int, default=None,
                        help=f"timed batch-{THROUGHPUT_BATCH} calls per backend (default: max(3, repeats / 5))")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batch-1 calls per backend first (default 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for every backend (default: cores, at most 4, as served)")
    parser.add_argument("--keras", metavar="PATH", default=None,
                        help="Keras model file to time instead of the bundle's files.keras entry")
    parser.add_argument("--markdown", action="store_true", help="print the table (and notes) as Markdown")
    return parser


def run(args: argparse.Namespace) -> str:
    from ml.inference import Classifier

    threads = args.threads or min(4, os.cpu_count() or 1)
    model_dir = os.path.abspath(args.model or default_model_dir())
    manifest = load_manifest(model_dir)
    images, source = load_images(args.images, args.n)

    fp32 = Classifier(model_dir, variant="fp32", threads=threads)
    x, prep_seconds = time_preprocessing(fp32, images)

    rows: list[Row] = []
    tf_version = None
    path, reason = keras_file(model_dir, manifest, args.keras)
    keras_row = Row("Keras (TensorFlow)", reason=reason)
    if path:
        from ml.training.keras_runner import keras_runner  # TensorFlow lives under ml/training only

        keras_row.runner, keras_row.reason, tf_version = keras_runner(path, fp32.config.height_width, threads)
    rows.append(keras_row)
    rows.append(Row("onnxruntime fp32", runner=onnx_runner(fp32)))
    if "int8" in manifest["variants"]:
        try:
            rows.append(Row("onnxruntime int8", runner=onnx_runner(Classifier(model_dir, variant="int8",
                                                                              threads=threads))))
        except ModelIntegrityError as exc:
            rows.append(Row("onnxruntime int8", reason=str(exc)))
    else:
        rows.append(Row("onnxruntime int8", reason="the bundle has no int8 variant"))

    reference = _logits_all(rows[1].runner, x)
    for row in rows:
        if row.available and row is not rows[1]:
            row.agreement = agreement(reference, _logits_all(row.runner, x), fp32.temperature)

    batch_repeats = args.batch_repeats or max(3, args.repeats // 5)
    time_rows(rows, x, repeats=args.repeats, batch_repeats=batch_repeats, warmup=args.warmup)

    h, w = _first_image_size(images)
    notes = [
        f"Model: {fp32.model_version} ({model_dir}), input {fp32.config.describe()}x3; "
        f"{args.repeats} batch-1 calls and {batch_repeats} batch-{THROUGHPUT_BATCH} calls per backend after "
        f"{args.warmup} warm-up calls, interleaved.",
        f"Preprocessing (decode + preprocess, Classifier.prepare on the file bytes, first image {w}x{h}): "
        f"median {np.median(prep_seconds) * 1e3:.2f} ms/image, p95 {np.percentile(prep_seconds, 95) * 1e3:.2f} ms "
        f"over {len(images)} images; not included in the model timings above.",
        f"Images: {source}.",
    ]
    notes += [f"{row.name}: {row.agreement}." for row in rows if row.agreement]
    notes.append(f"Machine: {machine_description(threads, tf_version)}.")
    table = format_table(rows, markdown=args.markdown)
    if args.markdown:
        return table + "\n\n" + "\n".join(f"- {n}" for n in notes)
    return table + "\n\n" + "\n".join(notes)


def _first_image_size(images: Sequence[tuple[str, bytes]]) -> tuple[int, int]:
    from ml.preprocessing import check_image_header

    _, width, height = check_image_header(images[0][1])
    return height, width


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("n", "repeats", "warmup", "threads", "batch_repeats"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            print(f"bench: error: --{name.replace('_', '-')} must be at least {0 if name == 'warmup' else 1}",
                  file=sys.stderr)
            return 2
    try:
        print(run(args))
    except MLError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
