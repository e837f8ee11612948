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
    from ml.inference import Classifier

    classifier = Classifier(bundle_dir, variant="fp32")
    answers = []
    for start in range(0, len(records), batch):
        prepared = []
        for record in records[start : start + batch]:
            with open(record.path, "rb") as fh:
                prepared.append(classifier.prepare(fh.read()))
        x = np.stack(prepared)
        mirrored = np.ascontiguousarray(x[:, :, ::-1, :])  # NHWC: the width axis
        answers.append((classifier.probabilities(x) + classifier.probabilities(mirrored)) / 2.0)
    return np.concatenate(answers).astype(np.float32)
