"""Distillation targets (`ml train --distill-from BUNDLE`): a trained bundle's calibrated answers
for each training image, averaged over the image and its mirror image, computed once with the
serving path (onnxruntime) before the first epoch that needs them.

Why the mirror image: the teacher with that second view is better than with one (docs/model.md),
but two views cost twice the latency at inference; a student trained toward the two-view answers
can learn some of what the view adds at one view's cost. The teacher must have been trained on
this run's split (checked by the caller, as for `--init-from`): its answers on validation images
it trained on would leak their labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.data import Record


def teacher_answers(bundle_dir: str, records: Sequence[Record], *, batch: int = 64) -> np.ndarray:
    """(len(records), classes) float32: the bundle's image-only probabilities, mean of the image
    and its mirror image."""
    from ml.compare import prepared_batches
    from ml.inference import Classifier
    from ml.training.finalize import flip_batch

    classifier = Classifier(bundle_dir, variant="fp32")
    answers = [(classifier.probabilities(x) + classifier.probabilities(flip_batch(x, "h"))) / 2.0
               for x in prepared_batches(classifier, [r.path for r in records], batch)]
    return np.concatenate(answers).astype(np.float32)
