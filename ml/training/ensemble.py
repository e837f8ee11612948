"""`python -m ml ensemble`: package the logit average of trained bundles, optionally over flips.

Members are bundles written by `python -m ml train` with the same preprocessing and split.
The ensemble is one Keras graph (image -> mean of member logits over the chosen flips),
so it goes through exactly the same packaging as a single model: tf2onnx, parity, int8,
calibration on validation, test metrics, manifest. Dermatoscopic images have no canonical
orientation, which is why flips are a sound test-time view.
"""

from __future__ import annotations

import argparse
import json
import os

import keras

from ml.data import load_metadata, read_split_csv, records_in
from ml.manifest import load_manifest
from ml.preprocessing import PreprocessConfig
from ml.training.explainable import explainable_ensemble
from ml.training.pipeline import cap_per_class, log

FLIP_VIEWS: dict[str, tuple[int, ...]] = {"none": (), "h": (2,), "v": (1,), "hv": (1, 2)}


@keras.saving.register_keras_serializable(package="skinportal")
class Flip(keras.layers.Layer):
    """Reverse an NHWC batch along the given spatial axes."""

    def __init__(self, axes: tuple[int, ...] = (2,), **kwargs) -> None:
        super().__init__(**kwargs)
        self.axes = tuple(axes)

    def call(self, x):
        for axis in self.axes:
            x = keras.ops.flip(x, axis=axis)
        return x

    def get_config(self) -> dict:
        return super().get_config() | {"axes": list(self.axes)}


def build_ensemble(members: list[keras.Model], size: int | tuple[int, int], flips: list[str]) -> keras.Model:
    height, width = (size, size) if isinstance(size, int) else size
    image = keras.Input(shape=(height, width, 3), name="input")
    outputs = []
    for i, member in enumerate(members):
        # Each loaded member is named like the others: wrap it under a unique name.
        wrapped = keras.Model(member.input, member.output, name=f"member_{i}")
        for view in flips:
            x = Flip(FLIP_VIEWS[view], name=f"flip_{view}_{i}")(image) if FLIP_VIEWS[view] else image
            outputs.append(wrapped(x))
    logits = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="mean_logits")(outputs)
    return keras.Model(image, logits, name="skinportal_ensemble")


def main(argv: list[str] | None = None) -> int:
    from ml.training import export

    parser = argparse.ArgumentParser(prog="python -m ml ensemble", description=__doc__)
    parser.add_argument("--members", nargs="+", required=True, help="bundle folders written by `ml train`")
    parser.add_argument("--flips", nargs="+", default=["none"], choices=list(FLIP_VIEWS),
                        help="test-time views averaged: none h v hv (default: none)")
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--images", required=True, nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--version")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--max-per-class", type=int, help="cap images per class (quick runs and tests)")
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--parity-images", type=int, default=128)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--target-sensitivity", type=float, default=0.90)
    parser.add_argument("--min-int8-agreement", type=float, default=0.98)
    parser.add_argument("--make-current", action="store_true")
    args = parser.parse_args(argv)

    manifests = [load_manifest(m) for m in args.members]
    preprocessing = {json.dumps({k: m["preprocessing"][k] for k in ("size", "width", "colour", "scale", "offset") if k in m["preprocessing"]}) for m in manifests}
    if len(preprocessing) != 1:
        parser.error(f"members differ in preprocessing: {sorted(preprocessing)}")
    splits = [read_split_csv(os.path.join(m, "split.csv")) for m in args.members]
    if any(s != splits[0] for s in splits[1:]):
        parser.error("members were trained on different splits")
    config = PreprocessConfig.from_dict(manifests[0]["preprocessing"])
    args.split_seed = manifests[0]["training_data"]["split"]["seed"]  # the members' split, recorded as such
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    version = args.version or os.path.basename(out)
    records = cap_per_class(load_metadata(args.metadata, args.images), args.max_per_class, args.seed)
    train, val, test = (records_in(records, splits[0], s) for s in ("train", "val", "test"))
    with open(os.path.join(args.members[0], "split.csv")) as src, open(os.path.join(out, "split.csv"), "w") as dst:
        dst.write(src.read())

    members = [keras.saving.load_model(os.path.join(m, "model.keras")) for m in args.members]
    model = build_ensemble(members, config.height_width, args.flips)
    log(f"ensemble of {len(members)} member(s) x {len(args.flips)} view(s): {', '.join(args.flips)}")
    first = manifests[0]
    manifest = export.package(
        model=model, out=out, version=version, config=config, train=train, val=val, test=test, args=args,
        training={
            "backbone": {
                "name": "MobileNetV2 ensemble",
                "alpha": [m["architecture"]["alpha"] for m in manifests],
                "init": "; ".join(m["architecture"]["init"] for m in manifests),
                "frozen_through": first["architecture"]["frozen_through"],
                "members": [m["version"] for m in manifests],
                "test_time_flips": args.flips,
            },
            "fit": first["training"]["fit"],
            "history": [],
            "probe": first["training"]["preprocessing_probe"],
            "members": {m["version"]: {"fit": m["training"]["fit"], "validation": m["metrics"]["validation"]}
                        for m in manifests},
        },
        log=log,
        explained=explainable_ensemble(members, (*config.height_width, 3), args.flips),
    )
    if args.make_current:
        export.make_current(out)
    return 0 if manifest else 1
