"""`python -m ml screening-report`: how well a bundle knows when not to answer, and where it looks.

    python -m ml screening-report --model DIR --metadata CSV --images DIR [--masks DIR]
                                  [--nonderm-per-kind 100] [--limit N]

Everything goes through the serving path (ml.inference.Classifier) on the bundle's own test
split (split.csv), which took no part in fitting any limit:

  - not_dermoscopic false alarms on the test images, and on other-dermatoscope views of them
    (round field of view, zoom, colour casts, hard JPEG: ml/screening/perturb.py);
  - not_dermoscopic detection on the generated non-dermatoscopic corpus (ml/nonderm), per kind;
  - each warning's rate on the clean test images, and on degraded copies per degradation and
    level (blur, under- and over-exposure, low contrast);
  - low_confidence: how often it fires and the top-class accuracy with and without it;
  - heatmap localisation against the HAM10000 lesion masks: the share of the map's mass inside
    the lesion against the lesion's share of the image, and the pointing game (is the map's
    peak inside the lesion?), for the top class.

The figures are written into the bundle's metrics.json ("screening_report"), which
`python -m ml card` renders, and printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ml.classes import CLASSES
from ml.data import load_metadata, read_split_csv, records_in
from ml.explain import heat_map
from ml.preprocessing import read_image
from ml.screening import WARNING_CODES
from ml.screening.perturb import DEGRADATIONS, DERMATOSCOPE_SHIFTS


def rate(flags: Sequence[bool]) -> float:
    return round(float(np.mean(flags)), 4) if len(flags) else float("nan")


def warning_rates(predictions) -> dict[str, float]:
    rates = {code: rate([code in p.warnings for p in predictions]) for code in WARNING_CODES}
    rates["any"] = rate([bool(p.warnings) for p in predictions])
    return rates


def localisation(predictions, masks: Sequence[np.ndarray | None], input_shape: tuple[int, int] | None = None) -> dict:
    """Mass inside the lesion and pointing game for the top class's map (`input_shape`: the
    model input's (height, width), see ml.explain.heat_map)."""
    inside, area, hits = [], [], []
    for prediction, mask in zip(predictions, masks):
        if mask is None or prediction.cam is None:
            continue
        lesion = mask > 127
        if not lesion.any() or lesion.all():
            continue
        heat = heat_map(prediction.cam, CLASSES.index(prediction.top_class), lesion.shape, input_shape,
                        field_of_view=prediction.field_of_view)
        total = float(heat.sum())
        if total <= 0:
            continue
        inside.append(float(heat[lesion].sum()) / total)
        area.append(float(lesion.mean()))
        hits.append(bool(lesion.flat[int(np.argmax(heat))]))
    return {
        "images": len(inside),
        "mass_inside_lesion_mean": round(float(np.mean(inside)), 4),
        "lesion_area_share_mean": round(float(np.mean(area)), 4),
        "mass_inside_over_area_median": round(float(np.median(np.array(inside) / np.array(area))), 3),
        "pointing_game": round(float(np.mean(hits)), 4),
        "pointing_game_random_baseline": round(float(np.mean(area)), 4),
        "class": "top class",
    }


def read_mask(masks_dir: str | None, image_id: str, shape: tuple[int, int]) -> np.ndarray | None:
    if not masks_dir:
        return None
    mask = cv2.imread(os.path.join(masks_dir, f"{image_id}_segmentation.png"), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        return None
    if mask.shape != shape:
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return mask


def build_report(classifier, model_dir: str, *, metadata: str, images: Sequence[str], masks_dir: str | None,
                 nonderm_per_kind: int, limit: int | None, log: Callable[[str], None]) -> dict:
    from ml.nonderm import generate

    split_of = read_split_csv(os.path.join(model_dir, "split.csv"))
    test = records_in([r for r in load_metadata(metadata, images) if r.image_id in split_of], split_of, "test")
    test = test[:limit] if limit else test
    test_images = [read_image(r.path) for r in test]
    labels = np.array([r.label for r in test])
    report: dict = {"test_images": len(test), "model": classifier.model_version}

    started = time.time()
    clean = classifier.predict_batch(test_images)
    correct = np.array([CLASSES.index(p.top_class) for p in clean]) == labels
    low = np.array(["low_confidence" in p.warnings for p in clean])
    report["clean_test"] = warning_rates(clean)
    report["low_confidence"] = {
        "rate": rate(low),
        "accuracy_when_flagged": rate(correct[low]),
        "accuracy_otherwise": rate(correct[~low]),
    }
    log(f"clean test: {report['clean_test']} ({time.time() - started:.0f}s)")

    report["dermatoscope_views"] = {
        name: rate(["not_dermoscopic" in p.warnings for p in classifier.predict_batch([fn(image) for image in test_images])])
        for name, fn in DERMATOSCOPE_SHIFTS.items()
    }
    log(f"other-dermatoscope views, not_dermoscopic: {report['dermatoscope_views']}")

    degraded: dict = {}
    for name, (fn, expected, levels) in DEGRADATIONS.items():
        for level in levels:
            predictions = classifier.predict_batch([fn(image, level) for image in test_images])
            degraded[f"{name} {level:g}"] = (
                {"expected": expected, "expected_rate": rate([expected in p.warnings for p in predictions])}
                | {f"{code}_rate": rate([code in p.warnings for p in predictions]) for code in WARNING_CODES if code != expected}
                | {"any_rate": rate([bool(p.warnings) for p in predictions])}
            )
    report["degradations"] = degraded
    log(f"degradations: { {k: v['expected_rate'] for k, v in degraded.items()} }")

    corpus = list(generate(per_kind=nonderm_per_kind))
    corpus_predictions = classifier.predict_batch([item.image for item in corpus])
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for item, prediction in zip(corpus, corpus_predictions):
        by_kind[item.kind].append("not_dermoscopic" in prediction.warnings)
    flags = [f for kind in by_kind.values() for f in kind]
    report["non_dermoscopic"] = {
        "images": len(flags),
        "detected_rate": rate(flags),
        "by_kind": {kind: {"images": len(v), "detected_rate": rate(v)} for kind, v in sorted(by_kind.items())},
        "top_class_when_missed": dict(Counter(p.top_class for item, p in zip(corpus, corpus_predictions)
                                              if "not_dermoscopic" not in p.warnings)),
        "corpus": f"python -m ml nonderm --per-kind {nonderm_per_kind} (generated, no network)",
    }
    log(f"non-dermatoscopic corpus: {report['non_dermoscopic']['detected_rate']} of {len(flags)} flagged")

    if masks_dir:
        masks = [read_mask(masks_dir, r.image_id, img.shape[:2]) for r, img in zip(test, test_images)]
        report["localisation"] = localisation(clean, masks, classifier.config.height_width)
        log(f"localisation: {report['localisation']}")
    report["seconds"] = round(time.time() - started, 1)
    return report


def markdown(report: dict) -> str:
    lines = [f"Screening of {report['model']} on {report['test_images']} test images", ""]
    ood = report["non_dermoscopic"]
    lines += [(f"- not_dermoscopic: {report['clean_test']['not_dermoscopic']:.1%} of dermatoscopic test images flagged; "
               f"{ood['detected_rate']:.1%} of {ood['images']} non-dermatoscopic images flagged"), ""]
    lines += ["| non-dermatoscopic kind | images | flagged |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['images']} | {v['detected_rate']:.1%} |" for k, v in ood["by_kind"].items()]
    lines += ["", "| other-dermatoscope view of the test images | flagged not_dermoscopic |", "|---|---:|"]
    lines += [f"| {k} | {v:.1%} |" for k, v in report["dermatoscope_views"].items()]
    lines += ["", "| degradation of the test images | expected warning | caught | any warning |", "|---|---|---:|---:|"]
    lines += [f"| {k} | {v['expected']} | {v['expected_rate']:.1%} | {v['any_rate']:.1%} |" for k, v in report["degradations"].items()]
    lines += ["", "| warning on clean test images | rate |", "|---|---:|"]
    lines += [f"| {k} | {v:.1%} |" for k, v in report["clean_test"].items()]
    if "localisation" in report:
        loc = report["localisation"]
        lines += ["", (f"- heatmap localisation ({loc['images']} test images, top class): {loc['mass_inside_lesion_mean']:.1%} "
                       f"of the map's mass inside the lesion, which covers {loc['lesion_area_share_mean']:.1%} of the image on "
                       f"average; pointing game {loc['pointing_game']:.1%} (random: {loc['pointing_game_random_baseline']:.1%})")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from ml.inference import Classifier
    from ml.manifest import default_model_dir

    parser = argparse.ArgumentParser(prog="python -m ml screening-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="bundle folder (default: ml/models/<CURRENT>)")
    parser.add_argument("--metadata", required=True, help="HAM10000-style metadata CSV")
    parser.add_argument("--images", required=True, nargs="+", help="folders holding <image_id>.jpg")
    parser.add_argument("--masks", help="folder of <image_id>_segmentation.png lesion masks (localisation)")
    parser.add_argument("--nonderm-per-kind", type=int, default=100)
    parser.add_argument("--limit", type=int, help="use only the first N test images (quick runs)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave metrics.json alone")
    args = parser.parse_args(argv)
    model_dir = os.path.abspath(args.model or default_model_dir())
    cv2.setNumThreads(1)
    classifier = Classifier(model_dir)
    report = build_report(classifier, model_dir, metadata=args.metadata, images=args.images, masks_dir=args.masks,
                          nonderm_per_kind=args.nonderm_per_kind, limit=args.limit,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    report["command"] = ("python -m ml screening-report --model " + os.path.relpath(model_dir)
                         + " --metadata ... --images ... --masks ..." + f" --nonderm-per-kind {args.nonderm_per_kind}")
    if not args.no_write:
        metrics_path = os.path.join(model_dir, "metrics.json")
        with open(metrics_path) as fh:
            metrics = json.load(fh)
        metrics["screening_report"] = report
        with open(metrics_path, "w") as fh:
            json.dump(metrics, fh, indent=2)
    print(markdown(report))
    return 0
