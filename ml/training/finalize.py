"""After end-to-end training, on validation only: test-time augmentation and class-prior
(logit) adjustment, each adopted only when a paired lesion-level bootstrap says its gain is
real; then packaging (ml.training.export: ONNX, int8, temperature and threshold re-fitted on
the final pipeline, test metrics, manifest).

Noise guard: validation holds 14 df and 25 vasc images, so one image moves balanced accuracy
by about 0.01. A candidate replaces the plain model only if it beats it in at least
`MIN_WIN_FRACTION` of paired bootstrap resamples of the validation lesions, and by at least
`MIN_GAIN` on the full validation split, and only if it does not lower the malignant ROC AUC
by more than `MAX_AUC_LOSS` (a prior shift moves probability between classes unevenly, so it can
buy balanced accuracy by reordering the malignancy score: v3-b and v3c lost 0.02-0.03 that way).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np

from ml.data import Record
from ml.metrics import balanced_accuracy, bootstrap_resamples, is_malignant, malignancy_scores, roc_auc, softmax
from ml.preprocessing import PreprocessConfig
from ml.training.endtoend import PRIOR_TAUS, prior_bias
from ml.training.explainable import explainable_ensemble

MIN_GAIN = 0.01
MAX_AUC_LOSS = 0.005
MIN_WIN_FRACTION = 0.90
BOOTSTRAP_RESAMPLES = 500
# Test-time views: flips only. A 90-degree turn would change the shape of a non-square input.
TTA_CANDIDATES: dict[str, tuple[str, ...]] = {"none": ("none",), "h": ("none", "h"), "hv4": ("none", "h", "v", "hv")}
LATENCY_REPEATS = 60


def flip_batch(x: np.ndarray, view: str) -> np.ndarray:
    from ml.training.ensemble import FLIP_VIEWS

    out = x
    for axis in FLIP_VIEWS[view]:
        out = np.flip(out, axis=axis)
    return np.ascontiguousarray(out)


def paired_win_fraction(labels: np.ndarray, base_preds: np.ndarray, preds: np.ndarray,
                        resamples: list[np.ndarray]) -> float:
    """Fraction of resamples in which `preds` has the higher balanced accuracy."""
    wins = [balanced_accuracy(labels[i], preds[i]) > balanced_accuracy(labels[i], base_preds[i]) for i in resamples]
    return float(np.mean(wins))


def paired_auc_win_fraction(labels: np.ndarray, base_scores: np.ndarray, scores: np.ndarray,
                            resamples: list[np.ndarray]) -> float:
    """Fraction of resamples in which `scores` rank malignant above benign better (higher AUC)."""
    malignant = is_malignant(labels)
    wins = [(roc_auc(malignant[i], scores[i]) or 0.0) > (roc_auc(malignant[i], base_scores[i]) or 0.0)
            for i in resamples]
    return float(np.mean(wins))


def choose(labels: np.ndarray, candidates: dict[str, np.ndarray], baseline: str,
           resamples: list[np.ndarray], *, min_auc_gain: float | None = None) -> tuple[str, list[dict]]:
    """The candidate (name -> logits) to use: the baseline unless another clearly beats it on
    balanced accuracy without costing malignant AUC. With `min_auc_gain`, a second route when
    none does: the candidate that raises malignant AUC by at least that much, in at least
    MIN_WIN_FRACTION of the resamples, without lowering balanced accuracy (the highest AUC wins)."""
    malignant = is_malignant(labels)
    base_preds, base_malignancy = candidates[baseline].argmax(1), malignancy_scores(softmax(candidates[baseline]))
    base_score, base_auc = balanced_accuracy(labels, base_preds), roc_auc(malignant, base_malignancy) or 0.0
    rows, best, best_score = [], baseline, base_score
    by_auc, best_auc = baseline, base_auc
    for name, logits in candidates.items():
        preds, malignancy = logits.argmax(1), malignancy_scores(softmax(logits))
        score, candidate_auc = balanced_accuracy(labels, preds), roc_auc(malignant, malignancy) or 0.0
        wins = 1.0 if name == baseline else paired_win_fraction(labels, base_preds, preds, resamples)
        row = {"candidate": name, "val_balanced_accuracy": round(score, 4), "gain": round(score - base_score, 4),
               "bootstrap_win_fraction": round(wins, 3), "val_malignant_auc": round(candidate_auc, 4)}
        if name != baseline and score - base_score >= MIN_GAIN and wins >= MIN_WIN_FRACTION and score > best_score \
                and candidate_auc >= base_auc - MAX_AUC_LOSS:
            best, best_score = name, score
        if min_auc_gain is not None:
            auc_wins = 1.0 if name == baseline else paired_auc_win_fraction(labels, base_malignancy, malignancy,
                                                                             resamples)
            row |= {"auc_gain": round(candidate_auc - base_auc, 4), "auc_bootstrap_win_fraction": round(auc_wins, 3)}
            if name != baseline and candidate_auc - base_auc >= min_auc_gain and auc_wins >= MIN_WIN_FRACTION \
                    and score >= base_score and candidate_auc > best_auc:
                by_auc, best_auc = name, candidate_auc
        rows.append(row)
    chosen = best if best != baseline else by_auc
    if min_auc_gain is not None:  # which route the choice took, for the card
        route = "balanced_accuracy" if best != baseline else "malignant_auc" if by_auc != baseline else None
        for row in rows:
            row["chosen_by"] = route if row["candidate"] == chosen else None
    return chosen, rows


def with_views(model: keras.Model, config: PreprocessConfig, views: tuple[str, ...]) -> keras.Model:
    """One graph: the mean of the model's logits over the flipped views (itself when one view)."""
    if views == ("none",):
        return model
    from ml.training.ensemble import build_ensemble

    return build_ensemble([model], config.height_width, list(views))


def onnx_batch1_ms(path: str, shape: tuple[int, ...], threads: int = 1) -> list[float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).uniform(-1, 1, (1, *shape)).astype(np.float32)
    for _ in range(5):
        session.run(None, {name: x})
    times = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - started) * 1e3)
    return times


def latency_reference(configured: str | None) -> str | None:
    """The fp32 ONNX file test-time views are timed against: the configured one, else the served
    bundle's (ml/models/CURRENT); None when there is none."""
    if configured:
        return configured
    from ml.errors import ModelIntegrityError
    from ml.manifest import shipped_model_dir

    try:
        path = os.path.join(shipped_model_dir(), "model.onnx")
    except ModelIntegrityError:
        return None
    return path if os.path.isfile(path) else None


def latency_ratio(candidate: keras.Model, reference_onnx: str | None, config: PreprocessConfig) -> float | None:
    """Median batch-1 latency of the candidate over the reference bundle's fp32, timed in
    alternating rounds so that background load hits both alike; None without a reference."""
    if not reference_onnx or not os.path.isfile(reference_onnx):
        return None
    import onnx
    import onnxruntime as ort

    from ml.training.onnx_export import keras_to_onnx

    ref_shape = tuple(int(d) for d in ort.InferenceSession(reference_onnx).get_inputs()[0].shape[1:])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "candidate.onnx")
        onnx.save(onnx.load_from_string(keras_to_onnx(candidate)), path)
        ours, theirs = [], []
        for _ in range(3):
            ours += onnx_batch1_ms(path, (*config.height_width, 3))
            theirs += onnx_batch1_ms(reference_onnx, ref_shape)
    return float(np.median(ours) / np.median(theirs))


def finalize(*, model: keras.Model, out: str, version: str, config: PreprocessConfig, train: Sequence[Record],
             val: Sequence[Record], test: Sequence[Record], args, history: dict,
             log: Callable[[str], None] = print) -> dict:
    from ml.training import backbone, export

    val_x = export.preprocessed(val, config)
    val_y = np.array([r.label for r in val])
    train_y = np.array([r.label for r in train])
    # Materialised once: every candidate is judged on the same resamples.
    resamples = list(bootstrap_resamples(len(val), groups=[r.lesion_id for r in val],
                                         n_resamples=BOOTSTRAP_RESAMPLES, seed=args.seed))
    view_logits = {view: model.predict(flip_batch(val_x, view), batch_size=64, verbose=0)
                   for view in ("none", "h", "v", "hv")}
    del val_x

    # 1. Test-time augmentation: kept only if clearly better and no slower than the reference at batch 1.
    tta_logits = {name: np.mean([view_logits[v] for v in views], axis=0) for name, views in TTA_CANDIDATES.items()}
    tta_choice, tta_rows = choose(val_y, tta_logits, "none", resamples)
    reference = latency_reference(getattr(args, "latency_reference", None))
    while tta_choice != "none":
        ratio = latency_ratio(with_views(model, config, TTA_CANDIDATES[tta_choice]), reference, config)
        next(r for r in tta_rows if r["candidate"] == tta_choice)["batch1_latency_vs_reference"] = ratio
        if ratio is not None and ratio <= 1.0:
            break
        # Fail closed: views that cannot be shown to keep within the speed bound are not shipped.
        log(f"test-time augmentation {tta_choice}: "
            + (f"{ratio:.2f}x the reference's batch-1 latency" if ratio is not None else "no latency reference to check it against")
            + ": not shipped")
        tta_logits.pop(tta_choice)
        tta_choice, _ = choose(val_y, tta_logits, "none", resamples)
    for row in tta_rows:
        log(f"tta {row}")
    logits = tta_logits[tta_choice]

    # 2. Class-prior adjustment of the chosen pipeline's logits.
    prior_logits = {f"tau={tau + 0.0:+.1f}": logits + prior_bias(train_y, tau) for tau in PRIOR_TAUS}
    prior_choice, prior_rows = choose(val_y, prior_logits, "tau=+0.0", resamples)
    tau = float(prior_choice.split("=")[1])
    for row in prior_rows:
        log(f"prior adjustment {row}")
    log(f"chosen on validation: test-time views {TTA_CANDIDATES[tta_choice]}, prior adjustment tau {tau:+.1f}")

    # 3. Bake the choice into one graph: the logit shift goes into the dense bias (the mean over
    # views of W f + b + d is the mean of W f + b, plus d).
    dense = model.get_layer("logits")
    dense.bias.assign(dense.bias.numpy() + prior_bias(train_y, tau))
    final = with_views(model, config, TTA_CANDIDATES[tta_choice])
    explained = explainable_ensemble([model], (*config.height_width, 3), TTA_CANDIDATES[tta_choice])

    cfg = history["config"]
    training = {
        "backbone": {"name": "MobileNetV2", "alpha": args.alpha,
                     "init": (f"the trained weights of {cfg['init_from']}" if cfg.get("init_from")
                              else backbone.WEIGHT_DESCRIPTIONS[args.alpha] if args.weights != "none" else "random"),
                     "frozen_through": None},
        "fit": cfg | {"mode": "end-to-end", "cpu_cores": os.cpu_count(), "best_epoch": history["best"]["epoch"],
                      "best_weights": history["best"]["weights"], "epochs_run": history["next_epoch"],
                      "ended_by_operator_after": history.get("ended_by_operator_after")}
               | ({"soup": history["soup"]} if "soup" in history else {}),
        "history": history["history"],
        "probe": [],
        "post_training": {
            "test_time_views": list(TTA_CANDIDATES[tta_choice]),
            "tta_candidates": tta_rows,
            "prior_adjustment_tau": tau,
            "prior_candidates": prior_rows,
            "guard": {"min_gain": MIN_GAIN, "min_bootstrap_win_fraction": MIN_WIN_FRACTION,
                      "max_malignant_auc_loss": MAX_AUC_LOSS,
                      "resamples": BOOTSTRAP_RESAMPLES, "unit": "lesion"},
        },
    }
    return export.package(model=final, out=out, version=version, config=config, train=train, val=val, test=test,
                          args=args, training=training, log=log, explained=explained)
