"""At packaging: the clinical-context table (ml.context) counted on the training split, its
weight chosen on validation behind the post-training guard (ml.training.finalize.choose: a
balanced-accuracy gain of at least 0.01, winning in 90% of paired lesion resamples, AUC kept;
or, when no weight clears that, a malignant-AUC gain of at least MIN_AUC_GAIN winning in 90% of
the resamples with balanced accuracy not lower: the malignancy flag is that ranking), and a
malignancy threshold per variant re-fitted on validation for answers that use it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ml.context import FIELDS, fit_context_prior
from ml.data import Record
from ml.metrics import bootstrap_resamples, is_malignant, malignancy_scores, threshold_for_sensitivity

WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_AUC_GAIN = 0.005


def fit_context(*, train: Sequence[Record], val: Sequence[Record], val_probs: dict[str, np.ndarray],
                target_sensitivity: float, seed: int,
                log: Callable[[str], None] = print) -> tuple[dict | None, list[dict]]:
    """(the manifest's `context` section: the table and each variant's malignancy threshold for
    answers that use it, or None when the guard keeps the image alone; the comparison rows).
    `val_probs`: each variant's calibrated validation probabilities. The validation figures with
    context are measured later, once, on the answers as served (ml.training.export)."""
    from ml.training.finalize import BOOTSTRAP_RESAMPLES, choose

    val_y = np.array([r.label for r in val])
    val_contexts = [r.context for r in val]
    train_contexts = [r.context for r in train]
    if not any(c.known() for c in train_contexts):
        log("clinical context: the metadata has no age, sex or site: the image alone")
        return None, []
    table = fit_context_prior(train_contexts, np.array([r.label for r in train]), weight=1.0)
    weighted = {w: replace(table, weight=w) for w in WEIGHTS}
    candidates = {f"{w:g}": np.log(np.clip(weighted[w].apply(val_probs["fp32"], val_contexts), 1e-12, 1.0))
                  for w in WEIGHTS}
    resamples = list(bootstrap_resamples(len(val_y), groups=[r.lesion_id for r in val],
                                         n_resamples=BOOTSTRAP_RESAMPLES, seed=seed))
    chosen, rows = choose(val_y, candidates, "0", resamples, min_auc_gain=MIN_AUC_GAIN)
    for row in rows:
        log(f"clinical context weight {row}")
    if chosen == "0":
        log("clinical context: no weight clears the guard on validation: the image alone")
        return None, rows
    prior = weighted[float(chosen)]
    used = np.array([bool(prior.used(c)) for c in val_contexts])
    if not is_malignant(val_y[used]).any():  # nothing to fit a threshold on (tiny or odd data)
        log("clinical context: no malignant validation image has a known field: the image alone")
        return None, rows
    thresholds = {variant: threshold_for_sensitivity(malignancy_scores(prior.apply(probs, val_contexts)[used]),
                                                     is_malignant(val_y[used]), target_sensitivity)
                  for variant, probs in val_probs.items()}
    known = {field: int(sum(field in c.known() for c in train_contexts)) for field in FIELDS}
    log(f"clinical context adopted: weight {prior.weight:g}, malignancy threshold with context {thresholds}")
    return prior.to_dict() | {
        "malignancy_threshold": thresholds,
        "chosen_by": next(r["chosen_by"] for r in rows if r["candidate"] == chosen),
        "fitted_on": {"split": "train", "images": len(train), "images_with_field_known": known},
        "selection": rows,
    }, rows
