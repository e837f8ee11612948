"""Lesion segmentation: the lesion's mask and its ABCD-style descriptors (NumPy + OpenCV).

  classical.py    the classical segmenter: field of view, hair removal, Otsu, morphology, one
                  component (the baseline a trained segmenter must beat)
  trained.py      the trained segmenter: a U-Net bundle (ml/models/<SEGMENTER>) run by onnxruntime,
                  checked at load (fail closed); the mask post-processed with classical.py's helpers
  descriptors.py  area (pixels, mm² given a scale), asymmetry, border irregularity, colours,
                  largest diameter, from an image and its mask
  segmenter.py    the interface: get_segmenter() (the named bundle's trained segmenter, classical
                  only when none is named), segment(image) -> mask, analyse(image) ->
                  Segmentation (mask + descriptors, to_dict() for storage)
  cli.py          `python -m ml segment --images DIR --out DIR [--descriptors CSV]`
  report.py       `python -m ml segment-report`: Dice and IoU on the classifier's lesion-level split,
                  classical, trained or both

Nothing here imports TensorFlow, and this module itself imports nothing heavy, so the portal can
name the method without loading OpenCV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from ml.segmentation.segmenter import Segmentation

CLASSICAL_METHOD = "classical-otsu-v1"


def segment(image_rgb: np.ndarray) -> np.ndarray:
    """The lesion mask of an RGB uint8 image (uint8 0/255, the image's own size)."""
    from ml.segmentation.segmenter import segment as run

    return run(image_rgb)


def analyse(image_rgb: np.ndarray, *, pixels_per_mm: float | None = None) -> Segmentation:
    """Mask and descriptors of an RGB uint8 image (ml.segmentation.segmenter.Segmentation)."""
    from ml.segmentation.segmenter import analyse as run

    return run(image_rgb, pixels_per_mm=pixels_per_mm)
