"""`python -m ml train`: split -> probe -> feature cache -> fit -> export -> quantize -> calibrate -> test.

Every stage writes its result to the work folder and is skipped when it is already there, so
re-running the same command after an interruption resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict

import numpy as np

from ml.classes import CLASSES
from ml.data import (
    DEFAULT_SPLIT_SEED,
    Record,
    describe_part,
    load_metadata,
    read_split_csv,
    records_in,
    split_by_lesion,
    write_split_csv,
)
from ml.preprocessing import COLOUR_MODES, PreprocessConfig
from ml.training.augment import AUGMENTATIONS, FRAMED_AUGMENTATIONS

# Settings a soup's members may differ in when asked to (`--soup-across`, ml/training/soup.py):
# training-time only, so the members stay one network fed through one preprocessing.
SOUP_MAY_DIFFER = ("augmentation",)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metadata", required=True, help="HAM10000-style metadata CSV")
    parser.add_argument("--images", required=True, nargs="+", help="one or more folders holding <image_id>.jpg")
    parser.add_argument("--out", required=True, help="model folder to write (e.g. ml/models/<version>)")
    parser.add_argument("--work-dir", help="cache and checkpoints (default ~/.cache/skinportal/train/<out name>)")
    parser.add_argument("--version", help="model version (default: the --out folder name)")
    parser.add_argument("--alpha", type=float, default=1.0, choices=[0.35, 1.0], help="MobileNetV2 width")
    parser.add_argument("--weights", help="backbone weights .h5 (default: ../shared/data/weights); 'none' = random")
    parser.add_argument("--mode", default="cached", choices=["cached", "end-to-end"],
                        help="cached: upper blocks on cached lower-block features (fast); "
                             "end-to-end: every layer, fresh augmentation each epoch")
    parser.add_argument("--size", type=int, default=224, help="input height (and width, unless --width is given)")
    parser.add_argument("--width", type=int, help="input width for a non-square input, e.g. --size 150 --width 200")
    parser.add_argument("--colour", default="auto", choices=["auto", *COLOUR_MODES], help="'auto' = probe decides")
    parser.add_argument("--field-of-view", action="store_true",
                        help="crop every image to the dermatoscope's field of view before the resize (ml.field_of_view)")
    parser.add_argument("--probe-backbones", action="store_true", help="also probe the other backbone width")
    parser.add_argument("--cut", default="block_5_add", help="last frozen layer; its output is cached")
    parser.add_argument("--views", type=int, default=8, help="augmented views cached per training image")
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=25, help="fine-tuning epochs (early stopping may end sooner)")
    parser.add_argument("--lr", type=float, default=5e-5, help="fine-tuning peak learning rate (AdamW; 3e-4 collapsed the features)")
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--class-weights", default="inverse", choices=["inverse", "sqrt", "none"],
                        help="loss weight per class: 1/frequency, 1/sqrt(frequency) or equal")
    parser.add_argument("--feature-noise", type=float, default=0.0,
                        help="std of Gaussian noise added to the cached features while training")
    e2e = parser.add_argument_group("end-to-end mode")
    e2e.add_argument("--warmup-epochs", type=int, default=1)
    e2e.add_argument("--head-lr", type=float, default=1e-3, help="peak learning rate of the new head")
    e2e.add_argument("--backbone-lr", type=float, default=1e-4, help="peak learning rate of the backbone")
    e2e.add_argument("--weight-decay", type=float, default=1e-2)
    e2e.add_argument("--dropout", type=float, default=0.3)
    e2e.add_argument("--label-smoothing", type=float, default=0.0)
    e2e.add_argument("--sampling", default="sqrt", choices=["natural", "sqrt", "balanced"],
                     help="class mass drawn per epoch ~ n, sqrt(n) or 1; the loss weights complete it to balanced")
    e2e.add_argument("--balance", type=float, default=1.0,
                     help="how far loss weights take the drawn class mix toward balanced (1 all the way, 0 none)")
    e2e.add_argument("--ema-decay", type=float, default=0.999)
    e2e.add_argument("--mixup", type=float, default=0.0,
                     help="Beta(a, a) mixup of image pairs within a batch (targets and loss weights alike); 0 = off")
    e2e.add_argument("--unconfirmed-weight", type=float, default=1.0,
                     help="loss weight of an image not confirmed by histopathology (dx_type) relative to a "
                          "confirmed one of its class, each class's mean weight kept; 1 = all alike")
    e2e.add_argument("--augmentation", default="full", choices=sorted(AUGMENTATIONS),
                     help="training views: full (crops, warps, cutout, ...), light (flips, turns, mild colour) or "
                          "light_framed (light, half of them in a random dermatoscope frame; with --field-of-view), "
                          "light_framed_quarter (the same, a quarter of them framed), "
                          "light_looks (light, half of them in another white balance, a quarter harder JPEG)")
    e2e.add_argument("--select", default="balanced_accuracy", choices=["balanced_accuracy", "balanced_accuracy+auc"],
                     help="what picks the kept epoch (raw or averaged weights) on validation")
    e2e.add_argument("--keep-epoch", type=int, default=0, metavar="N",
                     help="keep epoch N of the --epochs schedule (its --keep-weights) instead of the best epoch on "
                          "validation: for a run with no validation images, e.g. a cross-fit's final network "
                          "(docs/model.md, v3k); needs --train-only until cross-fitted packaging lands")
    e2e.add_argument("--keep-weights", default="ema", choices=["ema", "raw"],
                     help="with --keep-epoch: the averaged (EMA) or the raw weights of that epoch")
    e2e.add_argument("--latency-reference", default=None,
                     help="fp32 ONNX whose batch-1 latency test-time augmentation must not exceed (default: the "
                          "served bundle's, ml/models/CURRENT); without one, no test-time views are shipped")
    e2e.add_argument("--init-from", metavar="BUNDLE",
                     help="start from a trained end-to-end bundle's weights (same split, preprocessing and width) "
                          "instead of the ImageNet backbone: a second, shorter run at a lower rate")
    e2e.add_argument("--init-other-size", action="store_true",
                     help="with --init-from: the bundle may have been trained at another input size (its weights "
                          "fit any size; the run adapts them to this one)")
    e2e.add_argument("--distill-from", metavar="BUNDLE",
                     help="a trained bundle on this split (the teacher): each target blends the label with its "
                          "answers, averaged over the image and its mirror image (ml/training/distill.py)")
    e2e.add_argument("--distill-weight", type=float, default=0.5,
                     help="the teacher's share of each target with --distill-from (default 0.5)")
    e2e.add_argument("--mask-weight", type=float, default=0.0,
                     help="weight of an auxiliary lesion-mask target learnt from --masks on the last feature map "
                          "(training only; the exported network is unchanged); needs --augmentation light; 0 = off")
    e2e.add_argument("--malignant-weight", type=float, default=0.0,
                     help="weight of a malignant-vs-benign binary cross-entropy added to the training loss; 0 = off")
    e2e.add_argument("--masks", metavar="DIR", help="the lesion masks (<image_id>_segmentation.png) for --mask-weight")
    e2e.add_argument("--stop-after", type=int, help="end this call after N epochs (re-run to continue)")
    e2e.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                     help="threads building augmented views (the result does not depend on it)")
    e2e.add_argument("--train-only", action="store_true",
                     help="train and keep the checkpoint, no packaging: needs no TensorFlow, so it also runs under "
                          "KERAS_BACKEND=jax (a lent GPU machine); package later with the same command without it")
    e2e.add_argument("--average-with", nargs="+", metavar="WORK_DIR", default=[],
                     help="package the uniform mean of this run's best-epoch weights and those of these finished runs "
                          "(their --work-dir or end_to_end/ folders): the same command with other seeds (a model soup); "
                          "a bundle this command packaged (a soup or one run) counts as its members")
    e2e.add_argument("--soup-across", nargs="+", choices=SOUP_MAY_DIFFER, default=[], metavar="SETTING",
                     help="with --average-with: members may also differ in these training settings "
                          f"({', '.join(SOUP_MAY_DIFFER)}), e.g. runs trained on other views averaged with the served "
                          "soup; each member's own settings go into the manifest and the card's commands")
    e2e.add_argument("--finish-now", action="store_true",
                     help="end a resumed run where it stands (as an early stop) and package its best epoch")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED)
    parser.add_argument("--split-csv", help="use this written split (a bundle's split.csv) instead of drawing one; "
                                            "with --train-only the test images need not be present")
    parser.add_argument("--max-per-class", type=int, help="cap images per class (quick runs and tests)")
    parser.add_argument("--calibration-images", type=int, default=256, help="int8 calibration images")
    parser.add_argument("--parity-images", type=int, default=128, help="images for the Keras/ONNX check")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for test intervals")
    parser.add_argument("--target-sensitivity", type=float, default=0.90)
    parser.add_argument("--min-int8-agreement", type=float, default=0.98,
                        help="leave int8 out of the bundle when it and fp32 agree on fewer validation argmaxes")
    parser.add_argument("--make-current", action="store_true", help="point ml/models/CURRENT at the new bundle")


def cap_per_class(records: list[Record], cap: int | None, seed: int) -> list[Record]:
    if not cap:
        return records
    rng = np.random.default_rng(seed)
    kept: list[Record] = []
    for dx in CLASSES:
        of_class = [r for r in records if r.dx == dx]
        order = rng.permutation(len(of_class))[:cap]
        kept.extend(of_class[i] for i in sorted(order))
    return kept


def refuse_foreign_split(bundle_dir: str, split_of: dict[str, str], flag: str = "--init-from") -> None:
    """A run that starts from (or averages in) a bundle's weights must use that bundle's split: its
    weights have seen the bundle's training images, which another split could put in validation or test."""
    bundle_split = read_split_csv(os.path.join(bundle_dir, "split.csv"))
    moved = [i for i, s in split_of.items() if bundle_split.get(i, s) != s]
    if moved:
        sys.exit(f"{flag} {bundle_dir}: {len(moved)} images sit in another part of the split than when it was "
                 f"trained (e.g. {moved[0]}); pass --split-csv {os.path.join(bundle_dir, 'split.csv')}")


def run(args: argparse.Namespace) -> dict:
    import keras  # training extra only

    from ml.training import backbone
    from ml.training.soup import is_bundle

    out = os.path.abspath(args.out)
    version = args.version or os.path.basename(out.rstrip("/"))
    work = os.path.abspath(args.work_dir or os.path.join(os.path.expanduser("~"), ".cache", "skinportal", "train", version))
    os.makedirs(out, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    log(f"model {version}: out={out} work={work}")
    with open(os.path.join(work, "arguments.json"), "w") as fh:
        json.dump(vars(args), fh, indent=2)

    weights_for = (lambda alpha: None) if args.weights == "none" else (
        (lambda alpha: args.weights) if args.weights else backbone.default_weights_path
    )
    if args.weights != "none" and weights_for(args.alpha) is None:
        sys.exit("backbone weights not found: pass --weights PATH (or --weights none for a random init)")

    # 1. Data and the lesion-level split (a bundle's written split.csv, or drawn afresh).
    if args.split_csv and args.train_only and args.max_per_class:
        sys.exit("--max-per-class would cap other images with --train-only (no test images) than when packaging")
    if args.split_csv:
        split_of = read_split_csv(args.split_csv)
        needed = ("train", "val") if args.train_only else ("train", "val", "test")
        records = load_metadata(args.metadata, args.images, only={i for i, s in split_of.items() if s in needed})
        if os.path.abspath(args.split_csv) != os.path.join(out, "split.csv"):
            shutil.copyfile(args.split_csv, os.path.join(out, "split.csv"))
    else:
        records = load_metadata(args.metadata, args.images)
        split_of = split_by_lesion(records, seed=args.split_seed)
        write_split_csv(os.path.join(out, "split.csv"), records, split_of)
    if getattr(args, "init_from", None):
        refuse_foreign_split(args.init_from, split_of)
    if getattr(args, "distill_from", None):
        refuse_foreign_split(args.distill_from, split_of, flag="--distill-from")
    for member in getattr(args, "average_with", None) or []:
        if is_bundle(member):
            refuse_foreign_split(member, split_of, flag="--average-with")
    records = cap_per_class(records, args.max_per_class, args.seed)
    train, val, test = (records_in(records, split_of, s) for s in ("train", "val", "test"))
    held_out = sum(1 for s in split_of.values() if s == "select")
    if held_out:
        log(f"select: {held_out} images of the second selection set, never loaded here (ml compare --split select)")
    for name, part in (("train", train), ("val", val), ("test", test)):
        log(f"{name}: {describe_part(part)}")

    for flag, given in (("--train-only", args.train_only), ("--average-with", args.average_with),
                        ("--soup-across", args.soup_across)):
        if given and args.mode != "end-to-end":
            sys.exit(f"{flag} is for --mode end-to-end")
    if args.soup_across and not args.average_with:
        sys.exit("--soup-across needs --average-with: it says which settings the soup's members may differ in")
    if args.mode == "end-to-end":
        return run_end_to_end(args, train=train, val=val, test=test, out=out, version=version, work=work,
                              weights=weights_for(args.alpha))

    from ml.training import features, fit, probe
    from ml.training.onnx_export import keras_to_onnx, training_session

    # 2. Colour preprocessing (and optionally backbone width) chosen by a linear probe on val.
    probe_rows: list[dict] = []
    probe_path = os.path.join(work, "probe.json")
    if os.path.exists(probe_path):  # an earlier run's comparison still describes this data and split
        with open(probe_path) as fh:
            probe_rows = json.load(fh)
    colour = args.colour
    if colour == "auto":
        candidates = [(args.alpha, c) for c in COLOUR_MODES]
        probe_rows = probe.run_probe(candidates=candidates, weights_for=weights_for, train=train, val=val,
                                     size=args.size, work_dir=work, seed=args.seed, log=log)
        best = max((r for r in probe_rows if r["alpha"] == args.alpha), key=lambda r: r["val_balanced_accuracy"])
        colour = best["colour"]
        log(f"colour preprocessing chosen on validation: {colour}")
    if args.probe_backbones:
        other = 0.35 if args.alpha == 1.0 else 1.0
        probe_rows = probe.run_probe(candidates=[(args.alpha, colour), (other, colour)], weights_for=weights_for,
                                     train=train, val=val, size=args.size, work_dir=work, seed=args.seed, log=log)
    config = PreprocessConfig(size=args.size, colour=colour, width=args.width, field_of_view=args.field_of_view)

    # 3. Cached outputs of the frozen lower blocks.
    keras.utils.set_random_seed(args.seed)
    base = backbone.build_backbone(args.alpha, args.size, weights_for(args.alpha))
    lower, upper = backbone.split_backbone(base, args.cut)
    lower_session = training_session(keras_to_onnx(lower))
    log(f"caching {args.cut} outputs: {args.views} views x {len(train)} training images")
    train_feats = features.cache_features(lower_session, train, config, path=os.path.join(work, "train_features.npy"),
                                          views=args.views, augmented=args.views > 0, seed=args.seed, log=log)
    val_feats = features.cache_features(lower_session, val, config, path=os.path.join(work, "val_features.npy"),
                                        views=1, augmented=False, seed=args.seed, log=log)
    del lower_session

    # 4. Fit the upper blocks and the head.
    cfg = fit.FitConfig(head_epochs=args.head_epochs, finetune_epochs=args.epochs, finetune_lr=args.lr,
                        patience=args.patience, batch_size=args.batch_size, feature_noise=args.feature_noise,
                        class_weighting=args.class_weights,
                        seed=args.seed)
    head = backbone.build_head_model(upper, dropout=cfg.dropout, n_classes=len(CLASSES), seed=args.seed,
                                     feature_noise=cfg.feature_noise)
    history = fit.fit(head, upper, train_features=train_feats, train_labels=np.array([r.label for r in train]),
                      val_features=val_feats, val_labels=np.array([r.label for r in val]), cfg=cfg,
                      checkpoint_dir=os.path.join(work, "checkpoints"), log=log)
    model = backbone.build_inference_model(lower, head)

    # 5-8. Export, parity, int8, calibration, test metrics and the manifest.
    from ml.training import export  # imported late: a resumed job picks up the current packaging code

    manifest = export.package(
        model=model,
        out=out,
        version=version,
        config=config,
        train=train,
        val=val,
        test=test,
        args=args,
        training={
            "backbone": {"name": "MobileNetV2", "alpha": args.alpha, "init": backbone.WEIGHT_DESCRIPTIONS[args.alpha]
                         if args.weights != "none" else "random", "frozen_through": args.cut},
            "fit": asdict(cfg) | {"views_per_image": args.views, "best_epoch": history["best_epoch"],
                                   "epochs_run": history["next_epoch"]},
            "history": history["history"],
            "probe": probe_rows,
        },
        log=log,
    )
    if args.make_current:
        export.make_current(out)
        log(f"ml/models/CURRENT now names {os.path.basename(out)}")
    return manifest


def run_end_to_end(args: argparse.Namespace, *, train: list[Record], val: list[Record], test: list[Record],
                   out: str, version: str, work: str, weights: str | None) -> dict | None:
    """Fine-tune every layer (ml.training.endtoend), then post-process and package (ml.training.finalize).

    Returns None when --stop-after ended the call before training finished."""
    import keras

    from ml.manifest import load_manifest
    from ml.training import backbone, distill, endtoend, soup

    if args.colour == "auto":
        sys.exit("--mode end-to-end needs an explicit --colour (the cached mode's probe chose clahe for v1 and v2)")
    config = PreprocessConfig(size=args.size, colour=args.colour, width=args.width, field_of_view=args.field_of_view)
    cfg = endtoend.EndToEndConfig(
        epochs=args.epochs, warmup_epochs=args.warmup_epochs, head_lr=args.head_lr, backbone_lr=args.backbone_lr,
        weight_decay=args.weight_decay, batch_size=args.batch_size, dropout=args.dropout,
        label_smoothing=args.label_smoothing, sampling=args.sampling, balance=args.balance, ema_decay=args.ema_decay,
        patience=args.patience, seed=args.seed, mixup=args.mixup, selection=args.select,
        unconfirmed_weight=args.unconfirmed_weight, augmentation=args.augmentation,
        init_from=load_manifest(args.init_from)["version"] if args.init_from else None,
        distill_from=load_manifest(args.distill_from)["version"] if args.distill_from else None,
        distill_weight=args.distill_weight if args.distill_from else 0.0, mask_weight=args.mask_weight,
        malignant_weight=args.malignant_weight, keep_epoch=args.keep_epoch, keep_weights=args.keep_weights,
    )
    if not val and not (cfg.keep_epoch and args.train_only):
        # Packaging fits the temperature, threshold and the rest on validation; an epoch is picked there too.
        sys.exit("this split has no validation images: train a fixed epoch (--keep-epoch N) with --train-only")
    if cfg.mask_weight > 0 and not args.masks:
        sys.exit("--mask-weight needs --masks DIR (the lesion masks)")
    if args.init_other_size and not args.init_from:
        sys.exit("--init-other-size needs --init-from BUNDLE")
    if args.augmentation in FRAMED_AUGMENTATIONS and not args.field_of_view:
        sys.exit(f"--augmentation {args.augmentation} needs --field-of-view: the frames are drawn for the crop to take away")
    if args.average_with:  # refused now rather than after the training
        soup.check_members(args.average_with, cfg, config.to_dict(), args.soup_across)
    keras.utils.set_random_seed(args.seed)
    base = backbone.build_backbone(args.alpha, config.height_width, weights)
    model = endtoend.build_model(base, dropout=cfg.dropout, seed=cfg.seed)
    if args.init_from:
        endtoend.load_initial_weights(model, args.init_from, config, other_size=args.init_other_size)
        log(f"starting from the weights of {cfg.init_from}")

    def teacher() -> np.ndarray:
        log(f"distilling from {cfg.distill_from} (weight {cfg.distill_weight:g}): its answers for "
            f"{len(train)} training images, each with its mirror image")
        return distill.teacher_answers(args.distill_from, train)

    log(f"end-to-end fine-tuning at {config.describe()} ({config.colour}): {cfg}")
    state = endtoend.train_end_to_end(model, base, train=train, val=val, config=config, cfg=cfg,
                                      checkpoint_dir=os.path.join(work, "end_to_end"), log=log,
                                      stop_after=args.stop_after, finish_now=args.finish_now, workers=args.workers,
                                      teacher_answers=teacher if args.distill_from else None,
                                      masks_dir=args.masks)
    if not state["finished"]:
        log(f"stopped after epoch {state['next_epoch']}; re-run the same command to continue")
        return None
    if args.train_only:
        log(f"trained; checkpoint in {os.path.join(work, 'end_to_end')} (state.json and best.npz are all that "
            "packaging needs): run the same command without --train-only to package it")
        return None

    if args.average_with:
        state = soup.soup_into(model, state=state, paths=args.average_with, cfg=cfg, preprocessing=config.to_dict(),
                               train_labels=np.array([r.label for r in train]), may_differ=args.soup_across, log=log)

    # Imported late: a job resumed for packaging picks up the current post-processing code.
    from ml.training import finalize

    manifest = finalize.finalize(model=model, out=out, version=version, config=config, train=train, val=val,
                                 test=test, args=args, history=state, log=log)
    if args.make_current:
        from ml.training import export

        export.make_current(out)
        log(f"ml/models/CURRENT now names {os.path.basename(out)}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml train", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    run(args)
    return 0
