"""The model card's "Reproduce" section: the exact commands that rebuild the bundle from the shared data."""

from __future__ import annotations

from collections.abc import Callable

from ml.manifest import trained_through_crop

DATA_ARGUMENTS = "--metadata ../shared/data/ham10000/HAM10000_metadata.csv --images ../shared/data/ham10000/images"


def render_reproduce(add: Callable[[str], None], manifest: dict) -> None:
    arch, prep, fit = manifest["architecture"], manifest["preprocessing"], manifest["training"]["fit"]
    split = manifest["training_data"]["split"]
    add("## Reproduce\n")
    if "members" in arch:
        add("Train each member with `python -m ml train` (see its own manifest), then "
            f"`python -m ml ensemble --members ... --flips {' '.join(arch['test_time_flips'])}`.\n")
    elif fit.get("mode") == "end-to-end":
        add(_end_to_end_command(manifest, fit, split))
    else:
        gate = manifest["checks"]["int8"].get("required_agreement", 0.99)
        trained = fit.get("repackaged_from", manifest["version"])
        add("```sh\n.venv/bin/python -m ml train --metadata ../shared/data/ham10000/HAM10000_metadata.csv \\\n"
            f"    --images ../shared/data/ham10000/images --out ml/models/{trained} \\\n"
            f"    --alpha {arch['alpha']} --size {prep['size']} --colour {prep['colour']} --cut {arch['frozen_through']} "
            f"--views {fit['views_per_image']} \\\n"
            f"    --head-epochs {fit['head_epochs']} --epochs {fit['finetune_epochs']} --lr {fit['finetune_lr']:g} "
            f"--patience {fit['patience']} --batch-size {fit['batch_size']} \\\n"
            f"    --feature-noise {fit.get('feature_noise', 0.0):g} --class-weights {fit.get('class_weighting', 'inverse')} "
            f"--seed {fit['seed']} --split-seed {split['seed']} --min-int8-agreement {gate:g}\n"
            + _packaging_commands(manifest, trained, gate) + "```\n")
        if trained != manifest["version"]:
            add(_repackaged_note(manifest, trained))
        add("`--colour auto --probe-backbones` reruns the preprocessing comparison above first. Training on a CPU "
            "is deterministic up to thread scheduling; expect figures within the bootstrap intervals, not bit-equal.\n")


def _packaging_commands(manifest: dict, trained: str, gate: float) -> str:
    """The commands after `ml train`: the repackage step when the bundle holds another version's
    weights, then the screening report and the card."""
    version = manifest["version"]
    return (
        (f".venv/bin/python -m ml repackage --model ml/models/{trained} --out ml/models/{version} "
         f"--version {version} \\\n    {DATA_ARGUMENTS} --min-int8-agreement {gate:g}{_target_flag(manifest)}"
         f"{' --field-of-view' if manifest['preprocessing'].get('field_of_view') else ''}\n"
         if trained != version else "")
        + f".venv/bin/python -m ml screening-report --model ml/models/{version} \\\n"
        f"    {DATA_ARGUMENTS} --masks ../shared/data/ham10000/masks\n"
        f".venv/bin/python -m ml card --model ml/models/{version}\n"
    )


def _target_flag(manifest: dict) -> str:
    """The malignancy threshold's target sensitivity, where the bundle's differs from the default 0.90."""
    target = manifest["variants"]["fp32"].get("target_sensitivity", 0.9)
    return f" --target-sensitivity {target:g}" if abs(target - 0.9) > 1e-9 else ""


def _repackaged_note(manifest: dict, trained: str) -> str:
    cropped = bool(manifest["training"]["fit"].get("field_of_view_added"))
    images = "of images without a dark frame " if cropped else ""
    same = (f"its image-only classifications {images}are the same to within float rounding; with the clinical "
            "context (this release's packaging adds its table) they move as described above" if "context" in manifest
            else f"its classifications {images}are the same to within float rounding")
    added = "this release's screening statistics and outputs" + (
        ", and the crop to the dermatoscope's field of view in its preprocessing" if cropped else "")
    return (f"`{manifest['version']}` holds the weights of `{trained}`, packaged again by `python -m ml repackage` "
            f"({added}); {same}.\n")


def _end_to_end_command(manifest: dict, fit: dict, split: dict) -> str:
    prep = manifest["preprocessing"]
    gate = manifest["checks"]["int8"].get("required_agreement", 0.98)
    width = f" --width {prep['width']}" if prep.get("width") else ""
    trained = fit.get("repackaged_from", manifest["version"])
    # The crop to the field of view: in the training command when the run had it, not when a
    # repackage added it (the repackage command then carries the flag).
    cropped = trained_through_crop(manifest)

    def extras(augmentation: str, field_of_view: bool) -> str:
        return "".join([
            f" --mixup {fit['mixup']:g}" if fit.get("mixup") else "",
            f" --select {fit['selection']}" if fit.get("selection", "balanced_accuracy") != "balanced_accuracy" else "",
            f" --unconfirmed-weight {fit['unconfirmed_weight']:g}" if fit.get("unconfirmed_weight", 1.0) != 1.0 else "",
            f" --augmentation {augmentation}" if augmentation != "full" else "",
            f" --distill-from ml/models/{fit['distill_from']} --distill-weight {fit['distill_weight']:g}"
            if fit.get("distill_from") else "",
            f" --mask-weight {fit['mask_weight']:g} --masks ../shared/data/ham10000/masks" if fit.get("mask_weight") else "",
            f" --malignant-weight {fit['malignant_weight']:g}" if fit.get("malignant_weight") else "",
            " --field-of-view" if field_of_view else "",
            _target_flag(manifest) if trained == manifest["version"] else "",
            f" \\\n    --init-from ml/models/{fit['init_from']} --split-csv ml/models/{fit['init_from']}/split.csv"
            if fit.get("init_from") else "",
        ])

    def train_command(seed: int, tail: str = "", *, augmentation: str = fit.get("augmentation", "full"),
                      field_of_view: bool = cropped) -> str:
        return (
            ".venv/bin/python -m ml train --mode end-to-end \\\n"
            f"    {DATA_ARGUMENTS} \\\n"
            f"    --out ml/models/{trained} --alpha {manifest['architecture']['alpha']} --size {prep['size']}{width} "
            f"--colour {prep['colour']} \\\n"
            f"    --epochs {fit['epochs']} --warmup-epochs {fit['warmup_epochs']} --patience {fit['patience']} "
            f"--batch-size {fit['batch_size']} --backbone-lr {fit['backbone_lr']:g} --head-lr {fit['head_lr']:g} \\\n"
            f"    --weight-decay {fit['weight_decay']:g} --dropout {fit['dropout']:g} --sampling {fit['sampling']} "
            f"--label-smoothing {fit['label_smoothing']:g} --balance {fit.get('balance', 1.0):g} "
            f"--ema-decay {fit['ema_decay']:g}{extras(augmentation, field_of_view)} \\\n"
            f"    --seed {seed} --split-seed {split['seed']} --min-int8-agreement {gate:g}{tail}\n"
        )

    # A soup: each other member trained first in its own work folder, then this run averages them in.
    # A soup across training views names the bundles it joined as they are (their own cards
    # rebuild them): their runs may have been trained without the crop this run's bundle declares,
    # and such a checkpoint would not join it.
    soup = fit.get("soup", {})
    others = [m for m in soup.get("members", []) if m["seed"] != fit["seed"]]
    bundles = list(dict.fromkeys(m["via"] for m in others if m.get("via"))) if soup.get("across") else []
    trained_here = [m for m in others if m.get("via") not in bundles]
    member_dirs = [f"~/.cache/skinportal/train/{trained}-seed{m['seed']}" for m in trained_here]
    commands = "".join(
        train_command(m["seed"], f" \\\n    --work-dir {folder} --train-only",
                      **{key: m[key] for key in ("augmentation", "field_of_view") if key in m})
        for m, folder in zip(trained_here, member_dirs))
    averaged = " ".join(member_dirs + [f"ml/models/{bundle}" for bundle in bundles])
    across = f" --soup-across {' '.join(soup['across'])}" if soup.get("across") else ""
    commands += train_command(fit["seed"], f" \\\n    --average-with {averaged}{across}" if others else "")
    return (
        "```sh\n" + commands
        + _packaging_commands(manifest, trained, gate) + "```\n\n"
        + (_repackaged_note(manifest, trained) + "\n" if trained != manifest["version"] else "")
        + "Re-running the same command after an interruption continues from the last finished epoch (checkpoints in "
        "`~/.cache/skinportal/train/<version>/end_to_end/`). Training on a CPU is deterministic up to thread "
        "scheduling; expect figures within the bootstrap intervals, not bit-equal.\n"
    )
