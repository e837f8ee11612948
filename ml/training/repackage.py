"""`python -m ml repackage`: package a trained bundle's own Keras model again with this release's
packaging, e.g. to give a format-1 bundle the class activation map output and the screening
statistics that inference now requires.

The weights are not touched: the bundle's model.keras goes through ml.training.export.package
with the bundle's own split (split.csv), seed and training record, so temperature, threshold
and the test figures are computed afresh on the same images, and the new files and manifest are
written to --out (a new version: the served graph and the warnings it gives are new).
`--field-of-view` turns the crop to a dermatoscope's field of view on (ml.field_of_view): the same
weights, a new preprocessing step, so everything fitted on validation is fitted again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil

import keras

from ml.data import load_metadata, read_split_csv, records_in
from ml.manifest import MANIFEST_NAME
from ml.preprocessing import PreprocessConfig
from ml.training.pipeline import log


def training_record(model_dir: str, manifest: dict) -> dict:
    """What `package` records of the training, read back from the old bundle."""
    history: list = []
    metrics_path = os.path.join(model_dir, "metrics.json")
    if os.path.isfile(metrics_path):
        with open(metrics_path) as fh:
            history = json.load(fh).get("training", {}).get("history", [])
    training = manifest.get("training", {})
    record = {
        "backbone": manifest.get("architecture", {}),
        "fit": training.get("fit", {}),
        "history": history,
        "probe": training.get("preprocessing_probe", []),
    }
    if "post_training" in training:
        record["post_training"] = training["post_training"]
    return record


def main(argv: list[str] | None = None) -> int:
    from ml.training import export
    from ml.training.ensemble import Flip  # noqa: F401 - registers the layer for loading ensembles

    parser = argparse.ArgumentParser(prog="python -m ml repackage", description=__doc__)
    parser.add_argument("--model", required=True, help="the bundle to repackage (its model.keras and split.csv)")
    parser.add_argument("--out", required=True, help="folder of the new bundle")
    parser.add_argument("--version", required=True, help="version of the new bundle")
    parser.add_argument("--metadata", required=True, help="HAM10000-style metadata CSV")
    parser.add_argument("--images", required=True, nargs="+", help="one or more folders holding <image_id>.jpg")
    parser.add_argument("--min-int8-agreement", type=float, default=export.INT8_MIN_AGREEMENT)
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--parity-images", type=int, default=128)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--target-sensitivity", type=float,
                        help="fit the malignancy threshold for this validation sensitivity (default: the old bundle's)")
    parser.add_argument("--field-of-view", action="store_true",
                        help="crop every image to the dermatoscope's field of view before the resize "
                             "(ml.field_of_view; the new bundle's preprocessing declares it)")
    parser.add_argument("--make-current", action="store_true")
    args = parser.parse_args(argv)

    source = os.path.abspath(args.model)
    out = os.path.abspath(args.out)
    if out == source:
        parser.error("--out must be a new folder: the old bundle stays as it was")
    with open(os.path.join(source, MANIFEST_NAME)) as fh:
        old = json.load(fh)
    trained_config = PreprocessConfig.from_dict(old["preprocessing"])
    config = dataclasses.replace(trained_config, field_of_view=True) if args.field_of_view else trained_config
    fp32 = old["variants"]["fp32"]
    args.seed = int(old.get("training", {}).get("fit", {}).get("seed", 20261125))
    args.split_seed = int(old["training_data"]["split"]["seed"])
    if args.target_sensitivity is None:
        args.target_sensitivity = float(fp32.get("target_sensitivity", 0.9))

    split_of = read_split_csv(os.path.join(source, "split.csv"))
    records = [r for r in load_metadata(args.metadata, args.images) if r.image_id in split_of]
    train, val, test = (records_in(records, split_of, s) for s in ("train", "val", "test"))
    log(f"repackaging {old['version']} as {args.version}: train {len(train)}, val {len(val)}, test {len(test)} images")

    os.makedirs(out, exist_ok=True)
    shutil.copyfile(os.path.join(source, "split.csv"), os.path.join(out, "split.csv"))
    model = keras.models.load_model(os.path.join(source, "model.keras"), compile=False)
    training = training_record(source, old)
    # The version whose training made these weights (a repackage of a repackage names the first).
    training["fit"] = training["fit"] | {"repackaged_from": training["fit"].get("repackaged_from", old["version"])}
    if config.field_of_view and not trained_config.field_of_view:
        training["fit"]["field_of_view_added"] = True  # the weights were trained without the crop
    export.package(model=model, out=out, version=args.version, config=config, train=train, val=val, test=test,
                   args=args, training=training, log=log)
    if args.make_current:
        export.make_current(out)
        log(f"ml/models/CURRENT now names {os.path.basename(out)}")
    return 0
