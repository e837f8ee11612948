"""Packaging a trained Keras model into a bundle: ONNX fp32 + int8, calibration, checks, manifest.

Steps, each failing loudly rather than shipping a doubtful model:
  1. Keras model saved (model.keras), converted with tf2onnx (model.onnx) with three outputs:
     "logits", "features" (pooled) and "cam" (class activation map; ml/training/explainable.py),
     checked: the map averaged over positions plus the dense bias gives the logits.
  2. int8: onnxruntime static QDQ quantization (per-channel) calibrated on real training images.
  3. Per variant, on the validation split through the real inference path: temperature
     scaling and the malignancy threshold for the target sensitivity; the clinical-context
     table (ml/training/context_fit.py); the operating point of the suggested class
     (ml/training/operating_point.py).
  4. Parity Keras vs onnxruntime fp32 (max |dp| <= 1e-4, identical argmax). int8 is shipped
     only when it agrees with fp32 on >= 98% of validation argmaxes; otherwise the bundle is
     fp32 only.
  5. Screening limits (ml/screening/fit.py): feature statistics and quality limits from the
     training split, the not_dermoscopic threshold and low_confidence limits from validation.
  6. Test-split metrics with lesion-level bootstrap intervals; manifest.json + metrics.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence

import keras
import numpy as np
import onnx

from ml.classes import CLASSES, MALIGNANT_CLASSES
from ml.context import ContextPrior
from ml.cpu import int8_kernel_class
from ml.data import DEFAULT_FRACTIONS, Record
from ml.manifest import FORMAT_VERSION, MANIFEST_NAME, OUTPUTS, sha256_file, write_manifest
from ml.metrics import (
    bootstrap_intervals,
    fit_temperature,
    is_malignant,
    malignancy_scores,
    sensitivity_specificity,
    softmax,
    summary,
    threshold_for_sensitivity,
)
from ml.preprocessing import PreprocessConfig, preprocess, read_image
from ml.scores import class_bias_vector
from ml.screening.fit import fit_screening
from ml.training.context_fit import fit_context
from ml.training.explainable import explainable_ensemble
from ml.training.onnx_export import keras_to_onnx, onnx_logits, onnx_outputs
from ml.training.operating_point import fit_operating_point
from ml.training.quantize import quantize_int8

PARITY_TOLERANCE = 1e-4
CAM_TOLERANCE = 1e-3  # |mean over positions of the map + bias - logits|, float32 rounding
INT8_MIN_AGREEMENT = 0.98
HAM10000_CITATION = (
    'Tschandl P., Rosendahl C., Kittler H. "The HAM10000 dataset, a large collection of multi-source '
    'dermatoscopic images of common pigmented skin lesions." Sci. Data 5, 180161 (2018). doi:10.1038/sdata.2018.161'
)
INTENDED_USE = (
    "Decision support for research and education: a second look at a dermatoscopic image of a "
    "pigmented skin lesion. Not a certified medical device; not a diagnosis."
)


class PackagingError(RuntimeError):
    """A packaging check failed: the bundle is not written as servable."""


def preprocessed(records: Sequence[Record], config: PreprocessConfig) -> np.ndarray:
    return np.stack([preprocess(read_image(r.path), config) for r in records]).astype(np.float32)


def name_outputs(model: onnx.ModelProto, n_classes: int) -> onnx.ModelProto:
    """Name the three outputs logits / features / cam by their shapes (tf2onnx keeps Keras's
    tensor names, which differ between layouts) and put them in that order."""

    def role(output) -> str:
        dims = output.type.tensor_type.shape.dim
        if len(dims) == 4:
            return "cam"
        return "logits" if dims[-1].dim_value == n_classes else "features"

    roles = {role(o): o.name for o in model.graph.output}
    if sorted(roles) != sorted(OUTPUTS):
        raise PackagingError(f"exported graph has outputs {[o.name for o in model.graph.output]}, expected {OUTPUTS}")
    renamed = {old: new for new, old in roles.items()}
    for node in model.graph.node:
        node.output[:] = [renamed.get(o, o) for o in node.output]
        node.input[:] = [renamed.get(i, i) for i in node.input]
    outputs = {o.name: o for o in model.graph.output}
    ordered = [outputs[roles[r]] for r in OUTPUTS]
    for output, new_name in zip(ordered, OUTPUTS):
        output.name = new_name
    del model.graph.output[:]
    model.graph.output.extend(ordered)
    return model


def check_cam_identity(bias: np.ndarray, onnx_path: str, images: np.ndarray) -> tuple[float, list[int]]:
    """(largest |mean_hw(cam) + bias - logits| on `images`, the map's grid [h, w]): the map must
    be exactly what the logits are an average of, or the heatmap would explain another model."""
    logits, _, cam = onnx_outputs(onnx_path, images)
    deviation = float(np.abs(cam.mean(axis=(1, 2)) + bias - logits).max())
    if deviation > CAM_TOLERANCE:
        raise PackagingError(f"class activation map does not average to the logits (max deviation {deviation:.2e})")
    return deviation, [int(cam.shape[1]), int(cam.shape[2])]


def calibrate(logits: np.ndarray, labels: np.ndarray, target_sensitivity: float) -> dict:
    temperature = fit_temperature(logits, labels)
    probs = softmax(logits, temperature)
    scores = malignancy_scores(probs)
    threshold = threshold_for_sensitivity(scores, is_malignant(labels), target_sensitivity)
    sens, spec = sensitivity_specificity(is_malignant(labels), scores >= threshold)
    return {
        "temperature": round(temperature, 6),
        "malignancy_threshold": threshold,
        "target_sensitivity": target_sensitivity,
        "validation_sensitivity": sens,
        "validation_specificity": spec,
        "validation_nll_before": float(-np.mean(np.log(softmax(logits)[np.arange(len(labels)), labels] + 1e-12))),
        "validation_nll_after": float(-np.mean(np.log(probs[np.arange(len(labels)), labels] + 1e-12))),
    }


def headline(metrics: dict) -> dict:
    keys = ("n_images", "balanced_accuracy", "accuracy", "macro_f1", "malignant_sensitivity",
            "malignant_specificity", "malignant_auc", "ece")
    out = {k: (round(metrics[k], 4) if isinstance(metrics[k], float) else metrics[k]) for k in keys}
    out["recall"] = {c: (None if v["recall"] is None else round(v["recall"], 4)) for c, v in metrics["per_class"].items()}
    return out


def split_facts(parts: dict[str, Sequence[Record]]) -> dict:
    return {
        name: {
            "images": len(records),
            "lesions": len({r.lesion_id for r in records}),
            "classes": {c: Counter(r.dx for r in records)[c] for c in CLASSES},
        }
        for name, records in parts.items()
    }


def package(
    *,
    model: keras.Model,
    out: str,
    version: str,
    config: PreprocessConfig,
    train: Sequence[Record],
    val: Sequence[Record],
    test: Sequence[Record],
    args,
    training: dict,
    log: Callable[[str], None] = print,
    explained: tuple[keras.Model, np.ndarray, list[tuple[str, int]]] | None = None,
) -> dict:
    """`explained`: the three-output graph and its bias (ml/training/explainable.py) when `model`
    is an ensemble or has test-time views; built from `model` itself otherwise."""
    target = float(getattr(args, "target_sensitivity", 0.90))
    # 1. Keras and ONNX fp32.
    keras_path = os.path.join(out, "model.keras")
    model.save(keras_path)
    fp32_path = os.path.join(out, "model.onnx")
    explained_graph, cam_bias, feature_blocks = explained or explainable_ensemble([model], tuple(model.input.shape[1:]))
    proto = name_outputs(onnx.load_from_string(keras_to_onnx(explained_graph, input_name="input")), len(CLASSES))
    onnx.save(proto, fp32_path)
    log(f"exported {fp32_path} ({os.path.getsize(fp32_path) / 1e6:.1f} MB), outputs {OUTPUTS}")

    # 2. int8 from real, un-augmented training images.
    rng = np.random.default_rng(args.seed)
    calib_records = [train[i] for i in sorted(rng.permutation(len(train))[: args.calibration_images])]
    int8_path = os.path.join(out, "model.int8.onnx")
    val_x = preprocessed(val, config)
    val_y = np.array([r.label for r in val])
    fp32_val_logits = onnx_logits(fp32_path, val_x)
    cam_deviation, cam_grid = check_cam_identity(cam_bias, fp32_path, val_x[:64])
    log(f"class activation map averages to the logits within {cam_deviation:.1e}")
    min_agreement = float(getattr(args, "min_int8_agreement", INT8_MIN_AGREEMENT))
    quant = quantize_int8(fp32_path, int8_path, preprocessed(calib_records, config), val_x, fp32_val_logits,
                          min_agreement=min_agreement, log=log)
    quant["required_agreement"] = min_agreement
    quant["agreement_by_cpu"] = {int8_kernel_class(): round(quant["agreement"], 4)}
    quant["shipped"] = quant["agreement"] >= min_agreement
    if not quant["shipped"]:
        # Fail closed: a copy that flips the top class too often is not offered at all; fp32
        # stays the only variant (loading int8 from this bundle is refused).
        if os.path.exists(int8_path):
            os.remove(int8_path)
        log(f"int8 agrees with fp32 on {quant['agreement']:.4f} of validation argmaxes (< {min_agreement}): "
            "not shipped, fp32 is the only variant")
    served = {"fp32": fp32_path} | ({"int8": int8_path} if quant["shipped"] else {})

    # 3. Calibration per variant on validation.
    variants: dict[str, dict] = {}
    val_logits = {name: (fp32_val_logits if name == "fp32" else onnx_logits(path, val_x)) for name, path in served.items()}
    for name, path in served.items():
        cal = calibrate(val_logits[name], val_y, target)
        variants[name] = {"file": os.path.basename(path), "sha256": sha256_file(path), "bytes": os.path.getsize(path),
                          **cal}
        log(f"{name}: T={cal['temperature']:.3f} threshold={cal['malignancy_threshold']:.4f}")
    val_probs = {n: softmax(val_logits[n], variants[n]["temperature"]) for n in served}

    # 3b. Clinical context (age, sex, body site): counted on the training split, weighed on validation.
    context, context_rows = fit_context(train=train, val=val, val_probs=val_probs, target_sensitivity=target,
                                        seed=args.seed, log=log)

    # 3c. The operating point of the suggested class (ml/training/operating_point.py) on the
    # validation answers as served; then the validation figures, once, judging the suggested class.
    decision = suggested_class_operating_point(val=val, val_probs=val_probs, context=context, log=log)
    validation_with_context = validation_headlines(val=val, val_probs=val_probs, variants=variants, context=context,
                                                   class_bias=class_bias_vector(decision))
    for name in served:
        log(f"{name} validation: {variants[name]['validation']}")
    if context is not None:
        context["validation"] = validation_with_context
        log(f"fp32 validation with clinical context: {validation_with_context['fp32']}")

    # 4. Parity Keras vs onnxruntime on real images, with the shipped temperature.
    n_parity = min(args.parity_images, len(val))
    keras_logits = model.predict(val_x[:n_parity], batch_size=32, verbose=0)
    temperature = variants["fp32"]["temperature"]
    keras_probs = softmax(keras_logits, temperature)
    onnx_probs = softmax(fp32_val_logits[:n_parity], temperature)
    max_diff = float(np.abs(keras_probs - onnx_probs).max())
    same_argmax = bool((keras_probs.argmax(1) == onnx_probs.argmax(1)).all())
    parity = {"images": n_parity, "max_abs_probability_difference": max_diff, "identical_argmax": same_argmax,
              "tolerance": PARITY_TOLERANCE, "cam_mean_plus_bias_vs_logits": cam_deviation,
              "cam_tolerance": CAM_TOLERANCE}
    log(f"parity Keras vs onnxruntime on {n_parity} validation images: max |dp| = {max_diff:.2e}, identical argmax: {same_argmax}")
    if n_parity < 64 and len(val) >= 64:
        raise PackagingError("parity needs at least 64 images")
    if max_diff > PARITY_TOLERANCE or not same_argmax:
        raise PackagingError(f"Keras and onnxruntime disagree: {parity}")
    del val_x

    # 5. Screening limits: training split and validation only.
    screening = fit_screening(
        onnx_path=fp32_path, output_names=list(OUTPUTS), config=config, temperature=temperature,
        train_images=(read_image(r.path) for r in train), train_labels=np.array([r.label for r in train]),
        val_images=(read_image(r.path) for r in val), val_labels=val_y, out_dir=out, feature_blocks=feature_blocks)
    log(f"screening: not_dermoscopic beyond feature distance {screening['ood']['threshold']:.2f} "
        f"(validation false alarms {screening['ood']['validation_false_alarm_rate']:.3f}); "
        f"low_confidence below margin {screening['confidence']['min_margin']:.3f}")

    # 6. Held-out test split through the real inference path, per variant.
    from ml.inference import Classifier  # after the files exist; checks sha256 like production

    test_y = np.array([r.label for r in test])
    test_x = preprocessed(test, config)
    test_metrics: dict[str, dict] = {}
    manifest = _manifest(out, version, config, variants, parity, quant, training, train, val, test, args, screening,
                         cam_grid)
    if context is not None:
        manifest["context"] = context
    manifest["decision"] = decision
    manifest["checks"]["clinical_context"] = {"guard": "ml.training.finalize.choose", "candidates": context_rows,
                                              "adopted": context is not None}
    test_contexts = [r.context for r in test]
    test_with_context: dict[str, dict] = {}
    write_manifest(out, manifest)
    for name in served:
        classifier = Classifier(out, variant=name)
        probs = np.concatenate([classifier.probabilities(test_x[i : i + 64]) for i in range(0, len(test_x), 64)])
        full = summary(probs, test_y, classifier.threshold, classifier.class_bias)
        full["intervals_95"] = bootstrap_intervals(probs, test_y, classifier.threshold,
                                                   groups=[r.lesion_id for r in test], n_resamples=args.bootstrap,
                                                   seed=args.seed, class_bias=classifier.class_bias)
        test_metrics[name] = full
        log(f"test {name}: {headline(full)}")
        if classifier.context_prior is not None:
            probs = classifier.probabilities_with_context(probs, test_contexts)  # the same run, moved
            thresholds = classifier.thresholds_for(test_contexts)
            full = summary(probs, test_y, thresholds, classifier.class_bias)
            full["intervals_95"] = bootstrap_intervals(probs, test_y, thresholds, groups=[r.lesion_id for r in test],
                                                       n_resamples=args.bootstrap, seed=args.seed,
                                                       class_bias=classifier.class_bias)
            test_with_context[name] = full
            log(f"test {name} with clinical context: {headline(full)}")
    manifest["metrics"] = {
        "test": {name: headline(m) | {"intervals_95": m["intervals_95"]} for name, m in test_metrics.items()},
        "validation": {name: v["validation"] for name, v in variants.items()},
    } | ({"test_with_context": {name: headline(m) | {"intervals_95": m["intervals_95"]}
                                for name, m in test_with_context.items()},
          "validation_with_context": context["validation"]} if context is not None else {})
    write_manifest(out, manifest)
    with open(os.path.join(out, "metrics.json"), "w") as fh:
        json.dump({"test": test_metrics, "test_with_context": test_with_context, "training": training}, fh, indent=2)
    log(f"bundle written: {os.path.join(out, MANIFEST_NAME)}")
    return manifest


def suggested_class_operating_point(*, val: Sequence[Record], val_probs: dict[str, np.ndarray], context: dict | None,
                                    log: Callable[[str], None] = print) -> dict:
    """The manifest's `decision` section, chosen on fp32's validation answers as served."""
    probs = val_probs["fp32"]
    if context is not None:
        probs = ContextPrior.from_dict(context).apply(probs, [r.context for r in val])
    return fit_operating_point(
        labels=np.array([r.label for r in val]), probs=probs, log=log,
        chosen_on="validation, fp32" + (", with the clinical context" if context is not None else ""))


def validation_headlines(*, val: Sequence[Record], val_probs: dict[str, np.ndarray], variants: dict,
                         context: dict | None, class_bias: np.ndarray) -> dict | None:
    """Each variant's validation headline, judging the suggested class: the image alone into
    `variants[name]["validation"]`; with the clinical context (each answer with the threshold it
    is served with) returned per variant, or None when the bundle has no context table."""
    val_y = np.array([r.label for r in val])
    for name, probs in val_probs.items():
        variants[name]["validation"] = headline(summary(probs, val_y, variants[name]["malignancy_threshold"], class_bias))
    if context is None:
        return None
    prior, contexts = ContextPrior.from_dict(context), [r.context for r in val]
    return {name: headline(summary(
        prior.apply(probs, contexts), val_y,
        prior.thresholds(contexts, with_context=context["malignancy_threshold"][name],
                         image_only=variants[name]["malignancy_threshold"]),
        class_bias)) for name, probs in val_probs.items()}


def make_current(bundle_dir: str) -> None:
    """Name ``bundle_dir`` in ml/models/CURRENT (it must sit in ml/models/)."""
    from ml.manifest import MODELS_DIR

    if os.path.dirname(os.path.abspath(bundle_dir)) != os.path.abspath(MODELS_DIR):
        raise PackagingError(f"{bundle_dir} is not inside {MODELS_DIR}; set SKINPORTAL_MODEL_DIR instead")
    with open(os.path.join(MODELS_DIR, "CURRENT"), "w") as fh:
        fh.write(os.path.basename(os.path.abspath(bundle_dir)) + "\n")


def _manifest(out, version, config, variants, parity, quant, training, train, val, test, args, screening,
              cam_grid) -> dict:
    return {
        "format": FORMAT_VERSION,
        "name": "skinportal-mobilenetv2-ham10000",
        "version": version,
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "intended_use": INTENDED_USE,
        "classes": list(CLASSES),
        "malignant_classes": sorted(MALIGNANT_CLASSES),
        "malignancy_score": "P(mel) + P(bcc) + P(akiec) after temperature scaling; flagged when >= malignancy_threshold",
        "input": {"name": "input", "shape": [None, *config.height_width, 3], "layout": "NHWC", "dtype": "float32",
                  "colour_order": config.colour_order},
        "outputs": {
            "logits": {"name": "logits", "kind": "logits", "apply": "softmax(logits / temperature)"},
            "features": {"name": "features", "kind": "pooled last-layer features", "use": "not_dermoscopic screening"},
            "cam": {"name": "cam", "kind": "class activation map (N, h, w, classes)", "grid": cam_grid,
                    "apply": "max(cam, 0) / max, enlarged to the image (ml.explain)"},
        },
        "screening": screening,
        "preprocessing": config.to_dict() | {
            "function": "ml.preprocessing.preprocess",
            "steps": "decode (OpenCV) -> RGB -> "
                     + ("crop to the bright field of view, dark remainder filled with the rim's median colour "
                        "(ml.field_of_view) -> " if config.field_of_view else "")
                     + "resize whole image to size x width (a non-square "
                     "target first turns an image whose long side runs the other way by 90 degrees; INTER_AREA when "
                     "shrinking, INTER_LINEAR when enlarging) -> colour step -> x * scale + offset",
        },
        "architecture": training["backbone"],
        "variants": variants,
        "files": {"keras": {"file": "model.keras", "sha256": sha256_file(os.path.join(out, "model.keras"))}},
        "checks": {"parity_keras_vs_onnxruntime": parity, "int8": quant},
        "training_data": {
            "name": "HAM10000 (ISIC 2018 Task 3 training set), 200x150 copies",
            "citation": HAM10000_CITATION,
            "licence": "CC BY-NC-SA 4.0",
            "split": {"file": "split.csv", "unit": "lesion_id, byte-identical images merged", "seed": args.split_seed,
                      "fractions": list(DEFAULT_FRACTIONS), "stratified_by": "dx"},
            "splits": split_facts({"train": train, "val": val, "test": test}),
        },
        "training": {"fit": training["fit"], "preprocessing_probe": training["probe"]}
        | ({"post_training": training["post_training"]} if "post_training" in training else {}),
        "licence": {
            "model": "CC BY-NC-SA 4.0: trained on HAM10000; research and non-commercial use, share alike",
            "backbone_init": "ImageNet MobileNetV2 (Keras applications / TensorFlow Lite model, Apache-2.0)",
        },
        "metrics": {},
    }
