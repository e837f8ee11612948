#!/usr/bin/env bash
# Train end-to-end candidates on a lent GPU machine, package them here.
#
# The GPU machine has JAX but no TensorFlow, and takes at most 64 MiB of files, so:
#   scripts/train_on_gpu.sh prepare     here: .devdata/ (git-ignored) gets the training and
#                                       validation images of the served split, the metadata, the
#                                       ImageNet backbone and the Keras wheels JAX needs
#   scripts/train_on_gpu.sh run NAME:ARGS...   there: `python -m ml train --train-only` under
#                                       KERAS_BACKEND=jax, all candidates at once, each one's
#                                       state.json + best.npz packed into $OUT/NAME.tar
# The bundles' large files in ml/models (~70 MB) would push the copied working tree past the
# machine's 64 MiB: `hide-models` takes them out of the index (and excludes them) for the call,
# `unhide-models` puts them back; the files never leave the disk. Commit nothing in between.
# then here, per candidate: untar into ~/.cache/skinportal/train/NAME/end_to_end/ and run the
# same `python -m ml train` options without --train-only (and without --workers): TensorFlow
# loads the JAX-trained weights and packages the bundle (docs/model.md, "Training on a GPU").
set -euo pipefail
# SPLIT=<a split.csv> for another split (e.g. one with a second selection set from `ml carve-selection`:
# its 'select' images are not copied, as training never reads them)
SPLIT=${SPLIT:-ml/models/mnv2-ham10000-v3c.2/split.csv}
WEIGHTS=mobilenet_v2_1.0_224_no_top_dequantized.weights.h5
COMMON=(--mode end-to-end --metadata .devdata/HAM10000_metadata.csv --images .devdata/images
        --weights ".devdata/weights/$WEIGHTS" --split-csv "$SPLIT" --colour clahe --train-only)

case "${1:-}" in
prepare)
  shared=${SHARED:-../shared/data}
  mkdir -p .devdata/images .devdata/weights .devdata/wheels
  tr -d '\r' < "$SPLIT" | awk -F, 'NR > 1 && ($3 == "train" || $3 == "val") {print $1 ".jpg"}' \
    | (cd "$shared/ham10000/images" && xargs cp -t "$OLDPWD/.devdata/images/")
  cp "$shared/ham10000/HAM10000_metadata.csv" .devdata/
  cp "$shared/weights/$WEIGHTS" .devdata/weights/
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .devdata/wheels \
    "keras==$(.venv/bin/python -c 'from importlib.metadata import version; print(version("keras"))')" namex optree
  du -sh .devdata
  ;;
run)
  shift
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devdata/wheels/*.whl
  export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
  limit=${LIMIT:-420}  # seconds per candidate; an unfinished one is packaged with --finish-now
  workers=$(( $(nproc) / $# + 1 ))  # threads building views, per candidate
  for spec in "$@"; do
    name=${spec%%:*}; read -r -a args <<< "${spec#*:}"
    timeout "$limit" python3 -m ml train "${COMMON[@]}" --out "/tmp/out/$name" --work-dir "/tmp/work/$name" \
      --version "$name" --workers "$workers" "${args[@]}" > "/tmp/$name.log" 2>&1 &
  done
  wait || true
  for spec in "$@"; do
    name=${spec%%:*}
    grep -v -i "warning" "/tmp/$name.log" | tail -25 || true
    cp "/tmp/$name.log" "/tmp/work/$name/end_to_end/train.log" 2>/dev/null || true
    tar -C "/tmp/work/$name/end_to_end" -cf "$OUT/$name.tar" state.json best.npz train.log 2>/dev/null || true
  done
  ;;
hide-models|unhide-models)
  exclude=$(git rev-parse --git-path info/exclude)
  mapfile -t large < <(git ls-files -- 'ml/models/*/model.keras' 'ml/models/*/model.onnx' 'ml/models/*/screening.npz';
                       grep -o '^/ml/models/.*' "$exclude" 2>/dev/null | cut -c2-)
  if [[ $1 == hide-models ]]; then
    git rm -q --cached -- "${large[@]}" && printf '/%s\n' "${large[@]}" >> "$exclude"
  else
    sed -i '\|^/ml/models/|d' "$exclude" && git reset -q -- "${large[@]}"
  fi
  git status --short -- ml/models
  ;;
*)
  echo "usage: $0 prepare | hide-models | run NAME:'ml train options'... | unhide-models" >&2; exit 2
  ;;
esac
