"""`python -m ml evaluate`: score a model bundle on a labelled image folder (an external test set).

    python -m ml evaluate --images DIR --labels labels.csv [--model DIR] [--variant fp32|int8]
                          [--json results/eval.json] [--predictions results/eval_predictions.csv]

The labels CSV needs the columns ``image_id`` and ``dx`` (other columns are ignored; a
``lesion_id`` column, when present, makes --bootstrap resample whole lesions; HAM10000-style
``age``, ``sex`` and ``localization`` columns are weighed as the clinical context, as the portal
does, when the model has a context table: --image-only ignores them). Each image is
``DIR/<image_id>.jpg``, else ``.jpeg`` or ``.png``. Images go through the serving path
(``ml.inference.Classifier``: OpenCV decode, the manifest's preprocessing, onnxruntime), one
batch at a time, so only one batch of decoded images is held in memory. No TensorFlow.

Every figure comes from ``ml.metrics.summary`` so it is computed the way training reports it.
Problems with the inputs (missing file or column, unknown diagnosis, missing or undecodable
images, a model bundle that fails its integrity checks) end with a message on stderr and exit
code 2.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ml.classes import CLASS_NAMES, CLASSES, MALIGNANT_CLASSES
from ml.data import read_contexts, read_csv_rows
from ml.errors import DatasetError, InvalidImageError, MLError, ModelIntegrityError
from ml.manifest import VARIANTS, default_model_dir
from ml.metrics import BOOTSTRAP_KEYS, bootstrap_intervals, malignancy_scores, roc_curve, summary
from ml.scores import suggested_classes

EXIT_OK = 0
EXIT_INPUT_ERROR = 2
# Image files tried for an image_id, in this order.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
DEFAULT_PLOT_STEM = "evaluation"
SHOW_AT_MOST = 10


class OutputError(MLError):
    """An output file could not be written."""


@dataclass(frozen=True)
class Item:
    image_id: str
    dx: str
    label: int
    path: str
    lesion_id: str | None = None


# ---------------------------------------------------------------------------------------- inputs


def _shown(names: Sequence[str], limit: int = SHOW_AT_MOST) -> str:
    text = ", ".join(names[:limit])
    return text + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_labels(csv_path: str) -> list[tuple[str, str, str | None]]:
    """(image_id, dx, lesion_id or None) for every row; DatasetError naming any problem."""
    rows = read_csv_rows(csv_path, ("image_id", "dx"))
    out: list[tuple[str, str, str | None]] = []
    seen: set[str] = set()
    unknown: dict[str, list[int]] = {}
    for line, row in enumerate(rows, start=2):
        image_id = row["image_id"]
        if not image_id:
            raise DatasetError(f"{csv_path} line {line}: empty image_id")
        if image_id in seen:
            raise DatasetError(f"{csv_path} line {line}: duplicate image_id {image_id}")
        seen.add(image_id)
        dx = row["dx"].lower()
        if dx not in CLASSES:
            unknown.setdefault(row["dx"], []).append(line)
            continue
        out.append((image_id, dx, row.get("lesion_id") or None))
    if unknown:
        parts = [
            f"{dx!r} (line{'s' if len(lines) > 1 else ''} {_shown([str(n) for n in lines], 5)})"
            for dx, lines in unknown.items()
        ]
        raise DatasetError(
            f"{csv_path}: unknown diagnosis {', '.join(parts)}; expected one of {', '.join(CLASSES)}"
        )
    return out


def locate_images(image_dir: str, labels: Sequence[tuple[str, str, str | None]]) -> list[Item]:
    """Find each image_id's file in ``image_dir``; DatasetError naming the missing ones."""
    if not os.path.isdir(image_dir):
        raise DatasetError(f"image folder not found: {image_dir}")
    names = set(os.listdir(image_dir))
    items: list[Item] = []
    missing: list[str] = []
    for image_id, dx, lesion_id in labels:
        name = next((image_id + s for s in IMAGE_SUFFIXES if image_id + s in names), None)
        if name is None and os.path.splitext(image_id)[1].lower() in (".jpg", ".jpeg", ".png") and image_id in names:
            name = image_id  # the CSV already carries the file name
        if name is None:
            missing.append(image_id)
            continue
        items.append(Item(image_id, dx, CLASSES.index(dx), os.path.join(image_dir, name), lesion_id))
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(labels)} image(s) listed in the labels are not in {image_dir} "
            f"(looked for <image_id>.jpg/.jpeg/.png): {_shown(missing)}"
        )
    return items


# --------------------------------------------------------------------------------------- scoring


def score_images(classifier, items: Sequence[Item], *, batch_size: int, progress: bool = False) -> np.ndarray:
    """Calibrated probabilities (N, 7), streaming ``batch_size`` decoded images at a time.

    Undecodable images do not stop the pass at the first one: every image is read so the
    error can name all of them, and inference stops as soon as one is found.
    """
    probs = np.zeros((len(items), len(CLASSES)), dtype=np.float64)
    bad: list[str] = []
    batch: list[np.ndarray] = []
    where: list[int] = []

    def flush() -> None:
        if batch and not bad:
            probs[where] = classifier.probabilities(np.stack(batch))
        batch.clear()
        where.clear()

    for i, item in enumerate(items):
        try:
            with open(item.path, "rb") as fh:
                tensor = classifier.prepare(fh.read())
        except InvalidImageError as exc:
            bad.append(f"{item.path} ({exc})")
            continue
        except OSError as exc:
            bad.append(f"{item.path} ({exc.strerror or exc})")
            continue
        if bad:
            continue  # only checking the remaining files now
        batch.append(tensor)
        where.append(i)
        if len(batch) >= batch_size:
            flush()
        if progress and (i + 1) % (batch_size * 4) == 0:
            print(f"\rscored {i + 1}/{len(items)} images", end="", file=sys.stderr, flush=True)
    flush()
    if progress:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    if bad:
        raise DatasetError(f"{len(bad)} image(s) could not be decoded: {_shown(bad)}")
    return probs


# --------------------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def format_report(result: dict) -> str:
    lines: list[str] = []
    n = result["n_images"]
    cm = np.asarray(result["confusion_matrix"])
    support = cm.sum(axis=1)
    n_malignant = int(sum(support[CLASSES.index(c)] for c in MALIGNANT_CLASSES))
    present = [c for c, s in zip(CLASSES, support) if s]
    intervals = result.get("intervals_95", {})

    def ci(key: str) -> str:
        lo_hi = intervals.get(key)
        return f"  95% CI [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else ""

    lines.append(
        f"model {result['model_version']} ({result['variant']}) on {n} image(s)"
        f" from {result['images']}"
    )
    lines.append(f"labels: {result['labels']}")
    context = result.get("clinical_context", {})
    if context.get("used_for_images"):
        alone = context["image_alone"]
        lines.append(f"clinical context (the labels' age, sex, localization) weighed for {context['used_for_images']} "
                     f"image(s); the image alone: balanced accuracy {_fmt(alone['balanced_accuracy'])}, malignant AUC "
                     f"{_fmt(alone['malignant_auc'])}")
    elif context:
        lines.append(f"clinical context not used: {context.get('why_not', '')}")
    if any(result.get("class_bias", {}).values()):
        biases = ", ".join(f"{code} +{bias:g}" for code, bias in result["class_bias"].items())
        lines.append(f"suggested class at the model's operating point (log-probability bias {biases}); "
                     "the calibration error judges the probabilities' own argmax")
    lines.append("")
    rows = [
        ("balanced accuracy", result["balanced_accuracy"],
         f"mean recall over the {len(present)} class(es) present", "balanced_accuracy"),
        ("accuracy", result["accuracy"], "", "accuracy"),
        ("macro F1", result["macro_f1"], "over the classes present", "macro_f1"),
        ("malignant sensitivity", result["malignant_sensitivity"],
         (f"score >= {result['threshold']:.4f}" if not isinstance(result["threshold"], str)
          else "score >= the threshold for answers with or without context")
         + f"; {n_malignant} malignant (mel, bcc, akiec)", "malignant_sensitivity"),
        ("malignant specificity", result["malignant_specificity"], f"{n - n_malignant} benign",
         "malignant_specificity"),
        ("malignant AUC", result["malignant_auc"],
         "" if result["malignant_auc"] is not None else "not defined: only one of malignant/benign present",
         "malignant_auc"),
        ("ECE (15 bins)", result["ece"], "top-label expected calibration error", None),
    ]
    for name, value, note, key in rows:
        extra = (ci(key) if key else "") + (f"  ({note})" if note else "")
        lines.append(f"  {name:<22} {_fmt(value):>6}{extra}")
    lines.append("")
    lines.append(f"  {'class':<6} {'name':<46} {'support':>7} {'precision':>9} {'recall':>6} {'f1':>6}")
    for code in CLASSES:
        row = result["per_class"][code]
        lines.append(
            f"  {code:<6} {CLASS_NAMES[code]:<46} {row['support']:>7} {_fmt(row['precision']):>9}"
            f" {_fmt(row['recall']):>6} {_fmt(row['f1']):>6}"
        )
    lines.append("")
    lines.append("  confusion matrix (rows: true class, columns: predicted class)")
    width = max(6, len(str(int(cm.max()))) + 1)
    lines.append("  " + " " * 6 + "".join(f"{c:>{width}}" for c in CLASSES))
    for code, counts in zip(CLASSES, cm):
        lines.append(f"  {code:<6}" + "".join(f"{int(v):>{width}}" for v in counts))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(result: dict, path: str) -> str:
    """Counts in each cell; colour is the row-normalised fraction (recall on the diagonal)."""
    plt = _pyplot()
    cm = np.asarray(result["confusion_matrix"], dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=9,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(
        f"{result['model_version']} ({result['variant']}), n={result['n_images']}\n"
        f"balanced accuracy {result['balanced_accuracy']:.3f}",
        fontsize=10,
    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_roc(result: dict, probs: np.ndarray, labels: np.ndarray, path: str) -> str:
    """ROC of the malignancy score against malignant truth, with the shipped operating point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.6), dpi=120)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    auc = result["malignant_auc"]
    malignant = np.isin(labels, [CLASSES.index(c) for c in MALIGNANT_CLASSES])
    if auc is None:
        which = "benign" if not malignant.any() else "malignant"
        ax.text(0.5, 0.5, f"ROC not defined:\nevery image is {which}\n(AUC needs both groups)",
                ha="center", va="center", fontsize=12, transform=ax.transAxes,
                bbox={"boxstyle": "round", "fc": "white", "ec": "0.5"})
    else:
        fpr, tpr = roc_curve(malignant, malignancy_scores(probs))
        ax.plot(fpr, tpr, lw=2, label=f"malignancy score (AUC = {auc:.3f})")
        sens, spec = result["malignant_sensitivity"], result["malignant_specificity"]
        ax.plot([1 - spec], [sens], "o", ms=8, color="crimson",
                label=(f"operating point: threshold {result['threshold']:.3f}\n"
                       if not isinstance(result["threshold"], str) else "operating point (per-image thresholds)\n")
                      + f"sensitivity {sens:.3f}, specificity {spec:.3f}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 − specificity (benign flagged)")
    ax.set_ylabel("sensitivity (malignant flagged)")
    ax.set_title(f"Malignant (mel, bcc, akiec) vs benign\n{result['model_version']} ({result['variant']}), "
                 f"n={result['n_images']}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------- output


def write_predictions(path: str, items: Sequence[Item], probs: np.ndarray, threshold: float | np.ndarray,
                      class_bias: np.ndarray | None = None) -> None:
    scores = malignancy_scores(probs)
    suggested = suggested_classes(probs, class_bias)
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=float), scores.shape)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "dx", "predicted", "malignancy_score", "flagged", *[f"p_{c}" for c in CLASSES]])
        for item, p, s, t, k in zip(items, probs, scores, thresholds, suggested):
            writer.writerow([item.image_id, item.dx, CLASSES[int(k)], repr(float(s)),
                             int(s >= t), *[repr(float(v)) for v in p]])


def _ensure_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def plot_paths(json_path: str | None) -> tuple[str, str]:
    stem = os.path.splitext(json_path)[0] if json_path else DEFAULT_PLOT_STEM
    return f"{stem}_confusion.png", f"{stem}_roc.png"


# ------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml evaluate",
        description="Score a model bundle on labelled images with the serving code path (onnxruntime) "
                    "and report balanced accuracy, per-class metrics, malignant sensitivity/specificity/AUC, "
                    "calibration and the confusion matrix.",
        epilog="Plots: <stem>_confusion.png and <stem>_roc.png are written next to --json (stem = the JSON "
               "path without its extension), or as evaluation_confusion.png / evaluation_roc.png in the "
               "current directory when --json is not given (--no-plots to skip). Exit codes: 0 done; "
               "2 unusable input (labels, images, arguments) or a model bundle that fails its checks.",
    )
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of <image_id>.jpg (.jpeg, .png)")
    parser.add_argument("--labels", required=True, metavar="CSV", help="CSV with columns image_id,dx (others ignored)")
    parser.add_argument("--model", metavar="DIR", default=None,
                        help="model bundle folder (default: $SKINPORTAL_MODEL_DIR, else ml/models/<CURRENT>)")
    parser.add_argument("--variant", choices=VARIANTS, default="fp32", help="which ONNX variant (default fp32)")
    parser.add_argument("--json", metavar="OUT", default=None, help="write every metric as JSON here")
    parser.add_argument("--predictions", metavar="CSV", default=None,
                        help="write per-image predictions: image_id, dx, predicted, malignancy_score, flagged, "
                             "p_<class> for the 7 classes")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per onnxruntime call (32)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="onnxruntime intra-op threads (default: cores, at most 4)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="add 95%% bootstrap intervals from N resamples (whole lesions when the CSV has "
                             "lesion_id); default 0 = off")
    parser.add_argument("--image-only", action="store_true",
                        help="ignore the labels' age, sex and localization columns (by default a model with a "
                             "clinical-context table weighs them, as the portal does)")
    parser.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    return parser


def evaluate(args: argparse.Namespace) -> dict:
    labels_rows = load_labels(args.labels)
    items = locate_images(args.images, labels_rows)

    from ml.inference import Classifier  # onnxruntime only once the inputs are known to be usable

    model_dir = args.model or default_model_dir()
    try:
        classifier = Classifier(model_dir, variant=args.variant, threads=args.threads)
    except (KeyError, TypeError, ValueError) as exc:  # a manifest that passed the basic checks but is malformed
        problem = f"{type(exc).__name__}: {exc}"
        raise ModelIntegrityError(f"model bundle {model_dir}: malformed manifest ({problem})") from exc
    started = time.perf_counter()
    probs = score_images(classifier, items, batch_size=args.batch_size, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - started
    labels = np.array([item.label for item in items], dtype=int)

    # With the labels' age, sex and localization columns, answers weigh them as the portal does.
    threshold: float | np.ndarray = classifier.threshold
    contexts = {} if args.image_only else read_contexts(args.labels)
    context_report: dict = {"used_for_images": 0, "why_not": "--image-only" if args.image_only else
                            "the labels CSV has no age, sex or localization column"}
    if contexts and classifier.context_prior is None:
        context_report["why_not"] = "this model has no clinical-context table"
    elif contexts:
        per_item = [contexts.get(item.image_id) for item in items]
        alone = summary(probs, labels, threshold=classifier.threshold, class_bias=classifier.class_bias)
        probs = classifier.probabilities_with_context(probs, per_item)
        threshold = classifier.thresholds_for(per_item)
        context_report = {"used_for_images": sum(bool(classifier.context_used(c)) for c in per_item),
                          "image_alone": {k: alone[k] for k in ("balanced_accuracy", "malignant_sensitivity",
                                                                "malignant_specificity", "malignant_auc")}}
    metrics = summary(probs, labels, threshold=threshold, class_bias=classifier.class_bias)
    result: dict = {
        "model_version": classifier.model_version,
        "model_dir": classifier.model_dir,
        "variant": classifier.variant,
        "classes": list(CLASSES),
        "malignant_classes": sorted(MALIGNANT_CLASSES),
        "images": os.path.abspath(args.images),
        "labels": os.path.abspath(args.labels),
        "evaluated_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "seconds": round(seconds, 3),
        **metrics,
        "clinical_context": context_report,
        # The suggested class's operating point (ml.scores.suggested_classes); {} = plain argmax.
        "class_bias": ({} if classifier.class_bias is None else
                       {code: float(bias) for code, bias in zip(CLASSES, classifier.class_bias) if bias}),
    }
    if args.bootstrap > 0:
        groups = [item.lesion_id or item.image_id for item in items]
        result["intervals_95"] = bootstrap_intervals(
            probs, labels, threshold, groups=groups, n_resamples=args.bootstrap, class_bias=classifier.class_bias
        )
        result["bootstrap"] = {
            "resamples": args.bootstrap,
            "unit": "lesion_id" if any(item.lesion_id for item in items) else "image",
            "keys": list(BOOTSTRAP_KEYS),
        }

    print(format_report(result))
    print(f"\nscored in {seconds:.1f} s ({len(items) / max(seconds, 1e-9):.1f} images/s)")
    try:
        if args.json:
            _ensure_parent(args.json)
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=2, allow_nan=False)
                fh.write("\n")
            print(f"metrics: {args.json}")
        if args.predictions:
            _ensure_parent(args.predictions)
            write_predictions(args.predictions, items, probs, threshold, classifier.class_bias)
            print(f"predictions: {args.predictions}")
        if not args.no_plots:
            confusion_png, roc_png = plot_paths(args.json)
            _ensure_parent(confusion_png)
            plot_confusion(result, confusion_png)
            plot_roc(result, probs, labels, roc_png)
            print(f"plots: {confusion_png}, {roc_png}")
    except OSError as exc:
        raise OutputError(f"cannot write {exc.filename or 'output'}: {exc.strerror or exc}") from exc
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("evaluate: error: --batch-size must be at least 1", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if args.threads is not None and args.threads < 1:
        print("evaluate: error: --threads must be at least 1", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if args.bootstrap < 0:
        print("evaluate: error: --bootstrap must be 0 or more", file=sys.stderr)
        return EXIT_INPUT_ERROR
    try:
        evaluate(args)
    except MLError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
