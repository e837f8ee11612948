"""Command line: python -m ml {train,evaluate,bench} ..."""

from __future__ import annotations

import sys

USAGE = """usage: python -m ml COMMAND [options]

commands:
  train     train, calibrate, export and package a model (needs the 'train' extra: TensorFlow)
  evaluate  score a model on labelled images: python -m ml evaluate --images DIR --labels CSV
  bench     compare Keras, onnxruntime fp32 and int8 speed on this machine
  ensemble  package the logit average of trained bundles (optionally over flips; needs 'train')
  compare   candidate bundles side by side on the validation split, with a paired lesion bootstrap
  card      write ml/MODEL_CARD.md from a model bundle's manifest and metrics
  int8-check  measure int8 vs fp32 agreement on this CPU (its int8 kernels differ by CPU class)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        from ml.training.pipeline import main as run
    elif command == "evaluate":
        from ml.evaluate import main as run
    elif command == "bench":
        from ml.bench import main as run
    elif command == "ensemble":
        from ml.training.ensemble import main as run
    elif command == "compare":
        from ml.compare import main as run
    elif command == "card":
        from ml.card import main as run
    elif command == "int8-check":
        from ml.int8_check import main as run
    else:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
