"""Command line: python -m ml COMMAND ..."""

from __future__ import annotations

import importlib
import sys

USAGE = """usage: python -m ml COMMAND [options]

commands:
  predict   classify a folder of images into a CSV, with the screening warnings (no TensorFlow)
  explain   write a class activation heatmap (PNG overlay and .npy map) for each image of a folder
  train     train, calibrate, export and package a model (needs the 'train' extra: TensorFlow)
  repackage package a bundle's model.keras again with this release's packaging (needs 'train')
  evaluate  score a model on labelled images: python -m ml evaluate --images DIR --labels CSV
  screening-report  measure the screening checks and heatmaps of a bundle (needs ../shared data)
  bench     compare Keras, onnxruntime fp32 and int8 speed on this machine
  ensemble  package the logit average of trained bundles (optionally over flips; needs 'train')
  compare   candidate bundles side by side on the validation split, with a paired lesion bootstrap
  carve-selection  write a split.csv with a second selection set carved out of its training lesions
  fold-validation  write a split.csv that keeps one fold of validation and trains on the others (cross-fitting)
  card      write ml/MODEL_CARD.md from a model bundle's manifest and metrics
  int8-check  measure int8 vs fp32 agreement on this CPU (its int8 kernels differ by CPU class)
  nonderm   write a labelled corpus of non-dermatoscopic images: python -m ml nonderm --out DIR
  segment   write a lesion mask (<image_id>.png, 0/255) per image, optionally a CSV of descriptors (no TensorFlow)
  segment-report  Dice and IoU of the segmenter(s) on the classifier's lesion-level split (needs ../shared data)
  train-segmenter  train the U-Net lesion segmenter and package its bundle (needs 'train': TensorFlow)
"""

# command -> module whose main(argv) runs it (or "module:function"); imported only when asked for, so the
# TensorFlow-free commands never load TensorFlow.
COMMANDS: dict[str, str] = {
    "predict": "ml.cli",
    "explain": "ml.cli",
    "train": "ml.training.pipeline",
    "repackage": "ml.training.repackage",
    "evaluate": "ml.evaluate",
    "screening-report": "ml.screening.report",
    "bench": "ml.bench",
    "ensemble": "ml.training.ensemble",
    "compare": "ml.compare",
    "carve-selection": "ml.carve",
    "fold-validation": "ml.carve:fold_main",
    "card": "ml.card",
    "int8-check": "ml.int8_check",
    "nonderm": "ml.nonderm",
    "segment": "ml.segmentation.cli",
    "segment-report": "ml.segmentation.report",
    "train-segmenter": "ml.training.segmentation",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module_name, _, function = COMMANDS[command].partition(":")
    module = importlib.import_module(module_name)
    if module.__name__ == "ml.cli":
        return module.main([command, *rest])
    return getattr(module, function or "main")(rest)


if __name__ == "__main__":
    sys.exit(main())
