"""`python -m ml card`: render ml/MODEL_CARD.md from a bundle's manifest.json and metrics.json.

The card's figures are never typed by hand: they are read from the files the training run
wrote, and a test checks that the committed card matches its bundle.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from ml.classes import CLASSES, display_name
from ml.manifest import default_model_dir, load_manifest, load_segmentation_manifest, named_segmenter_dir
from ml.screening.card import render_screening

CARD_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "MODEL_CARD.md")

KNOWN_LIMITS = """\
- **Not a medical device.** Research and education only; every result needs a clinician's judgement.
- **One data source.** HAM10000 comes from two sites (Vienna, Queensland), mostly fair skin, dermatoscopic
  images only. Other dermatoscopes, clinical (non-dermatoscopic) photographs, darker skin types, mucosal,
  acral and nail lesions are under-represented or absent; expect lower figures there.
- **Seven classes only.** Any lesion outside them (e.g. squamous cell carcinoma other than in situ,
  Merkel cell carcinoma, non-lesional skin) is still forced into one of the seven.
- **Small classes.** df and vasc have a few dozen test images: their per-class figures have wide intervals.
- **Resolution.** Trained on HAM10000's 200x150 copies (at their own size, or enlarged to a square input); sharper
  images from other sources are reduced to the same size, but fine detail the training images never had cannot help.
- **Calibration** was fitted on the HAM10000 validation split with class-balanced training; probabilities are
  not prevalence-adjusted for a given clinic, and the malignancy threshold was chosen for {target:.0%} sensitivity on
  that split: check it on local data before relying on it.
"""


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_interval(metrics: dict, key: str) -> str:
    interval = metrics.get("intervals_95", {}).get(key)
    text = _fmt(metrics.get(key))
    return f"{text} ({_fmt(interval[0])}–{_fmt(interval[1])})" if interval else text


_NAMED = object()  # render_card's default: the segmentation bundle ml/models/SEGMENTER names


def render_segmentation(add, segmenter_dir: str | None) -> None:
    """The lesion segmenter's section: the served method and its Dice / IoU beside the classical
    baseline's, from the segmentation bundle's manifest (none named: the classical one only)."""
    add("## Lesion segmentation\n")
    if segmenter_dir is None:
        add("No segmentation bundle is named (`ml/models/SEGMENTER`): the outline comes from the classical "
            "segmenter (`classical-otsu-v1`); its figures are in docs/model.md, \"Segmentation\".\n")
        return
    seg = load_segmentation_manifest(segmenter_dir)
    prep, out, fit = seg["preprocessing"], seg["output"], seg["training"]
    add(f"The outline stored with each classification comes from `{seg['version']}` "
        f"(`ml/models/{os.path.basename(os.path.abspath(segmenter_dir))}`, checked at load like this model): "
        f"{seg['architecture']}. Input {prep['size']}x{prep.get('width') or prep['size']} (height x width), colour "
        f"step `{prep['colour']}`, threshold {out['threshold']:g}, then the central component with its holes "
        f"filled. Trained on {seg['training_data']['name']} ({seg['training_data']['licence']}); split: "
        f"{fit['split']}; epoch {fit['best_epoch']} of {fit['epochs_run']} chosen by validation Dice.\n")
    metrics = seg.get("metrics", {})
    rows = [(name, split, metrics[name][split]) for name in ("trained", "classical") for split in ("val", "test")
            if split in metrics.get(name, {})]
    if rows:
        add("| segmenter | split | images | Dice mean | Dice median | IoU mean | IoU median | Dice >= 0.8 |")
        add("|---|---|---:|---:|---:|---:|---:|---:|")
        for name, split, r in rows:
            label = seg["version"] if name == "trained" else "classical-otsu-v1 (baseline)"
            add(f"| {label} | {split} | {r['images']} | {r['dice_mean']:.3f} | {r['dice_median']:.3f} | "
                f"{r['iou_mean']:.3f} | {r['iou_median']:.3f} | {r['dice_at_least_0.8']:.1%} |")
        add("\nMeasured at each image's own size against the HAM10000 lesion masks (`python -m ml segment-report`). "
            "The masks and descriptors are decision support: a clinician checks the outline.\n")


def render_card(model_dir: str, segmenter_dir=_NAMED) -> str:
    manifest = load_manifest(model_dir)
    with open(os.path.join(model_dir, "metrics.json")) as fh:
        details = json.load(fh)
    test = details["test"]
    arch = manifest["architecture"]
    prep = manifest["preprocessing"]
    data = manifest["training_data"]
    fit = manifest["training"]["fit"]
    lines: list[str] = []
    add = lines.append

    add(f"# Model card: SkinPortal lesion classifier `{manifest['version']}`\n")
    add("> **Decision support for research and education. Not a certified medical device; not a diagnosis.**\n")
    add("_Generated by `python -m ml card` from `ml/models/" + os.path.basename(os.path.abspath(model_dir))
        + "/manifest.json` and `metrics.json`; do not edit by hand._\n")

    add("## Intended use\n")
    add(manifest["intended_use"] + " It gives the probability of each of the seven HAM10000 diagnoses and a "
        "malignancy score, P(mel) + P(bcc) + P(akiec), flagged against a threshold chosen for high sensitivity. "
        "Users: clinicians and researchers who can judge the image themselves. Out of scope: screening without a "
        "clinician, non-dermatoscopic photographs, lesions outside the seven classes.\n")

    add("## Model\n")
    add("| | |\n|---|---|")
    if "members" in arch:
        add(f"| architecture | logit average of {len(arch['members'])} fine-tuned MobileNetV2 models "
            f"({', '.join(f'`{m}`' for m in arch['members'])}; alpha {', '.join(str(a) for a in arch['alpha'])}) over "
            f"test-time flips {', '.join(arch['test_time_flips'])}; each initialised from ImageNet ({arch['init']}), "
            f"layers up to `{arch['frozen_through']}` frozen |")
    elif fit.get("mode") == "end-to-end":
        views = manifest["training"].get("post_training", {}).get("test_time_views", ["none"])
        add(f"| architecture | {arch['name']} alpha {arch['alpha']}, initialised from {arch['init']}; every layer "
            f"fine-tuned end to end with BatchNorm frozen; global average pooling, dropout {fit['dropout']}, dense "
            f"softmax over 7 classes" + (f"; logits averaged over test-time views {', '.join(views)}" if len(views) > 1
                                         else "") + " |")
    else:
        add(f"| architecture | {arch['name']} alpha {arch['alpha']}, initialised from {arch['init']}; layers up to "
            f"`{arch['frozen_through']}` frozen, the rest fine-tuned with BatchNorm frozen; global average pooling, "
            f"dropout {fit['dropout']}, dense softmax over 7 classes |")
    height, width = manifest["input"]["shape"][1:3]
    add(f"| input | `{manifest['input']['name']}`, float32 NHWC {height}x{width}x3 (height x width), {prep['colour_order']} |")
    add(f"| preprocessing | `{prep['function']}`: {prep['steps']}; colour step `{prep['colour']}`; "
        f"scale {prep['scale']:.8f}, offset {prep['offset']} (pixels to [-1, 1]) |")
    outputs = manifest["outputs"]
    add(f"| outputs | `{outputs['logits']['name']}`: logits, probabilities = {outputs['logits']['apply']}; "
        f"`{outputs['features']['name']}`: pooled features (not_dermoscopic screening); `{outputs['cam']['name']}`: "
        f"class activation map on a {'x'.join(str(d) for d in outputs['cam'].get('grid') or ['h', 'w'])} grid |")
    for name, v in manifest["variants"].items():
        add(f"| {name} | `{v['file']}`, {v['bytes'] / 1e6:.1f} MB, sha256 `{v['sha256'][:16]}…`; temperature "
            f"{v['temperature']:.3f}; malignancy threshold {v['malignancy_threshold']:.4f} |")
    add("")

    add("## Training data and licence\n")
    add(f"{data['name']}. Licence: **{data['licence']}** (research and non-commercial use); the trained weights "
        f"are shared under the same licence. Cite: {data['citation']}\n")
    add(f"Backbone initialisation: {manifest['licence']['backbone_init']}.\n")
    split = data["split"]
    add(f"Split by {split['unit']}, stratified by {split['stratified_by']}, fractions "
        f"{'/'.join(str(int(f * 100)) for f in split['fractions'])}, seed {split['seed']}; the ids are in "
        f"`{split['file']}` beside the model. No lesion appears in two splits (tested).\n")
    add("| split | images | lesions | " + " | ".join(CLASSES) + " |")
    add("|---|---|---|" + "---|" * len(CLASSES))
    for name, facts in data["splits"].items():
        add(f"| {name} | {facts['images']} | {facts['lesions']} | "
            + " | ".join(str(facts["classes"][c]) for c in CLASSES) + " |")
    add("")

    probe = manifest["training"].get("preprocessing_probe") or []
    if probe:
        add("## Preprocessing comparison (validation split)\n")
        add("Linear probe: frozen ImageNet backbone, pooled features of un-augmented images, class-balanced "
            "logistic regression fitted on the training split, scored on the validation split. It ranks inputs "
            "cheaply; the winner (highest balanced accuracy) is used for training.\n")
        add("| backbone alpha | colour step | val balanced accuracy | val malignant AUC |")
        add("|---|---|---|---|")
        for row in probe:
            alphas = arch["alpha"] if isinstance(arch["alpha"], list) else [arch["alpha"]]
            chosen = " **(used)**" if row["colour"] == prep["colour"] and row["alpha"] in alphas else ""
            add(f"| {row['alpha']} | `{row['colour']}`{chosen} | {row['val_balanced_accuracy']:.4f} | "
                f"{row['val_malignant_auc']:.4f} |")
        add("")

    if fit.get("mode") == "end-to-end":
        _end_to_end_training(add, manifest, fit, details.get("training", {}).get("history") or [])
    else:
        add("## Training\n")
        add(f"{fit['views_per_image']} augmented views cached per training image (random resized crop with aspect "
            "jitter, flips, rotation, colour jitter, occasional resolution loss); each epoch draws one view per image. "
            f"Head {fit['head_epochs']} epochs at {fit['head_lr']:g}, then up to {fit['finetune_epochs']} fine-tuning "
            f"epochs, AdamW {fit['finetune_lr']:g} with cosine decay, weight decay {fit['weight_decay']:g}, batch "
            f"{fit['batch_size']}, {fit.get('class_weighting', 'inverse')} class weights, Gaussian noise of std "
            f"{fit.get('feature_noise', 0.0):g} on the cached features while training, early stopping on validation "
            "balanced accuracy "
            f"(patience {fit['patience']}); seed {fit['seed']}. Ran {fit['epochs_run']} epochs; best epoch "
            f"{fit['best_epoch']}.\n")

    add("## Results on the held-out test split\n")
    add("Lesion-level held-out split (never used for training, model selection, calibration or the threshold). "
        "95% intervals: bootstrap over lesions.\n")
    served = [name for name in ("fp32", "int8") if name in test]
    # Columns: each variant on the image alone, then (when the bundle has a context table) fp32
    # with each test image's age, sex and body site from the metadata.
    columns = [(name, test[name]) for name in served]
    with_context = details.get("test_with_context") or {}
    if "fp32" in with_context:
        columns.append(("fp32 with clinical context", with_context["fp32"]))
    add("| metric | " + " | ".join(name for name, _ in columns) + " |\n|---|" + "---|" * len(columns))
    for key in ("balanced_accuracy", "accuracy", "macro_f1", "malignant_sensitivity", "malignant_specificity",
                "malignant_auc"):
        add(f"| {key.replace('_', ' ')} | " + " | ".join(_with_interval(m, key) for _, m in columns) + " |")
    add("| ECE (15 bins) | " + " | ".join(_fmt(m["ece"]) for _, m in columns) + " |")
    add("| images | " + " | ".join(str(m["n_images"]) for _, m in columns) + " |\n")
    if "context" in manifest:
        _clinical_context(add, manifest["context"], test["fp32"], with_context.get("fp32"))

    add("### Per class (fp32)\n")
    add("| class | precision | recall | F1 | support |\n|---|---|---|---|---|")
    for c in CLASSES:
        r = test["fp32"]["per_class"][c]
        add(f"| {display_name(c)} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])} | {r['support']} |")
    add("")
    add("### Confusion matrix (fp32; rows true, columns predicted)\n")
    add("| | " + " | ".join(CLASSES) + " |")
    add("|---|" + "---|" * len(CLASSES))
    for c, row in zip(CLASSES, test["fp32"]["confusion_matrix"]):
        add(f"| **{c}** | " + " | ".join(str(v) for v in row) + " |")
    add("")

    add("## Calibration and operating point\n")
    add("Temperature scaling fitted on the validation split (negative log-likelihood), per variant; the "
        "malignancy threshold is the highest one that keeps validation sensitivity at or above the target.\n")
    add("| variant | temperature | val NLL before → after | threshold | target sens. | val sens. / spec. |")
    add("|---|---|---|---|---|---|")
    for name, v in manifest["variants"].items():
        add(f"| {name} | {v['temperature']:.3f} | {v['validation_nll_before']:.3f} → {v['validation_nll_after']:.3f} | "
            f"{v['malignancy_threshold']:.4f} | {v['target_sensitivity']:.2f} | "
            f"{_fmt(v['validation_sensitivity'])} / {_fmt(v['validation_specificity'])} |")
    add("")
    if manifest.get("decision"):
        _suggested_class(add, manifest["decision"])

    checks = manifest["checks"]
    parity = checks["parity_keras_vs_onnxruntime"]
    quant = checks["int8"]
    add("## Export checks\n")
    add(f"- Keras vs onnxruntime fp32 on {parity['images']} real validation images: max |Δp| = "
        f"{parity['max_abs_probability_difference']:.2e} (tolerance {parity['tolerance']:g}), identical argmax: "
        f"{parity['identical_argmax']}.")
    kept_float = quant.get("kept_in_float", "none")
    add(f"- int8 ({quant['format']}, {quant['weights']} weights, {quant['activations']} activations, "
        f"{quant['method']} calibration on {quant['calibration_images']} training images"
        + (f", kept in float: {kept_float}" if kept_float != "none" else "") + "): argmax agreement with "
        f"fp32 on {quant['checked_on_validation_images']} validation images = {quant['agreement']:.4f}"
        + (f" (packaging gate {quant['required_agreement']:.2f}"
           f"{', met' if quant['agreement'] >= quant['required_agreement'] else ', **not met**'})."
           if "required_agreement" in quant else "."))
    if quant.get("shipped") is False:
        add("- **int8 is not shipped with this model**: below its gate it would change the top class too often, "
            "so fp32 is the only variant and a request for int8 is refused at load.")
    by_cpu = quant.get("agreement_by_cpu", {})
    if by_cpu:
        add("- The agreement depends on the CPU's int8 kernels (onnxruntime uses VNNI instructions where "
            "present, else AVX2, whose 16-bit multiply-add saturates); measured per CPU class with "
            "`python -m ml int8-check`: " + ", ".join(f"{cpu} {value:.4f}" for cpu, value in sorted(by_cpu.items()))
            + ". Serve fp32 (the default) where it is below the gate.")
    add("")

    render_screening(add, manifest, details.get("screening_report"))
    render_segmentation(add, named_segmenter_dir() if segmenter_dir is _NAMED else segmenter_dir)

    add("## Known limits\n")
    add(KNOWN_LIMITS.format(target=manifest["variants"]["fp32"].get("target_sensitivity", 0.9)))
    if "context" in manifest:
        add("- The clinical-context table encodes HAM10000's population (two sites, in Austria and Australia, "
            "mostly fair skin): for another population its ratios are a prior that may not hold, and a wrongly "
            "entered age, sex or body site moves the answer wrongly. Every result names the fields it weighed; "
            "`python -m ml evaluate --image-only` and a patient without those fields give the image's own answer.\n")
    add("## Reproduce\n")
    if "members" in arch:
        add("Train each member with `python -m ml train` (see its own manifest), then "
            f"`python -m ml ensemble --members ... --flips {' '.join(arch['test_time_flips'])}`.\n")
    elif fit.get("mode") == "end-to-end":
        add(_end_to_end_command(manifest, fit, split))
    else:
        gate = checks["int8"].get("required_agreement", 0.99)
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
    return "\n".join(lines)


def _context_route(context: dict) -> str:
    """How packaging's guard chose the context weight (bundles before v3m.8 had one route)."""
    if context.get("chosen_by") == "malignant_auc":
        return ("no weight gained 0.01 balanced accuracy, so the highest malignant AUC among weights raising it "
                "by at least 0.005 in 90% of paired lesion resamples without lowering balanced accuracy")
    return "the largest balanced-accuracy gain of at least 0.01 winning in 90% of paired lesion resamples " \
           "without losing malignant AUC"


def _clinical_context(add, context: dict, alone: dict, weighed: dict | None) -> None:
    known = context["fitted_on"]["images_with_field_known"]
    add("### With the clinical context\n")
    add("When the patient's age and sex or the lesion's body site are known, each adds per class "
        "log p(class | value) - log p(class), counted on the training split "
        f"({', '.join(f'{field} known for {n:,} images' for field, n in known.items())}; age in bands "
        f"{', '.join(context['age_bands'])}; smoothed with {context['smoothing']:g} pseudo-images toward the prior), "
        f"times **{context['weight']:g}** (chosen on validation: {_context_route(context)}), to the calibrated "
        "log-probabilities; such answers are flagged at their own malignancy threshold "
        f"({context['malignancy_threshold']['fp32']:.4f}, fitted on validation for the same sensitivity). Unknown "
        "fields add nothing: an image without context gets the image-only answer. Screening and the heatmap judge "
        "the image alone. The test column above uses each test image's own metadata.\n")
    with_auc = all("auc_bootstrap_win_fraction" in row for row in context["selection"])
    add("| weight | val balanced accuracy | gain | won in resamples | val malignant AUC |"
        + (" AUC gain | AUC won in resamples |\n|---|---|---|---|---|---|---|" if with_auc else "\n|---|---|---|---|---|"))
    for row in context["selection"]:
        chosen = " **(used)**" if float(row["candidate"]) == context["weight"] else ""
        add(f"| {row['candidate']}{chosen} | {row['val_balanced_accuracy']:.4f} | {row['gain']:+.4f} | "
            f"{row['bootstrap_win_fraction']:.1%} | {row['val_malignant_auc']:.4f} |"
            + (f" {row['auc_gain']:+.4f} | {row['auc_bootstrap_win_fraction']:.1%} |" if with_auc else ""))
    if weighed:
        add("\n| class | recall, image alone | recall, with context |\n|---|---|---|")
        for c in CLASSES:
            add(f"| {display_name(c)} | {_fmt(alone['per_class'][c]['recall'])} | "
                f"{_fmt(weighed['per_class'][c]['recall'])} |")
    add("")


# What each `ml train --augmentation` draws (ml.training.augment.AUGMENTATIONS), in the card's words.
VIEWS = {
    "full": "random resized crop, flips, 90-degree turns, rotation with shear and scale, colour jitter, occasional "
            "resolution loss, cutout",
    "light": "light views only: flips, 90-degree turns and mild colour jitter, without crops, warps or cutout",
}


def _end_to_end_training(add, manifest: dict, fit: dict, history: list[dict]) -> None:
    start = (f"Started from the weights of `{fit['init_from']}` (an earlier end-to-end run on the same split, "
             "continued at a lower rate with the weight average; its own card gives its recipe), not from ImageNet. "
             if fit.get("init_from") else "")
    add(f"{start}End to end: every layer trained (BatchNorm statistics frozen), {fit['warmup_epochs']} warm-up epoch(s) "
        f"then cosine decay over {fit['epochs']} epochs; AdamW with peak learning rates {fit['backbone_lr']:g} "
        f"(backbone) and {fit['head_lr']:g} (head), weight decay {fit['weight_decay']:g}, batch {fit['batch_size']}; "
        f"a fresh random view of every image each epoch ({VIEWS[fit.get('augmentation', 'full')]}); classes drawn with {fit['sampling']} "
        f"sampling and loss weights taking it {fit.get('balance', 1.0):.0%} of the way to balanced; label smoothing "
        f"{fit['label_smoothing']:g}; "
        + (f"images whose diagnosis was not confirmed by histopathology weighted {fit['unconfirmed_weight']:g} "
           f"against confirmed ones of their class (class means kept); " if fit.get("unconfirmed_weight", 1.0) != 1.0 else "")
        + (f"mixup of image pairs (Beta({fit['mixup']:g}, {fit['mixup']:g})); " if fit.get("mixup") else "")
        + (f"an auxiliary lesion-mask target (the HAM10000 segmentation masks, each cell of the last feature map "
           f"learning its lesion share; weight {fit['mask_weight']:g}; training only, not in the exported network); "
           if fit.get("mask_weight") else "")
        + (f"a malignant-vs-benign binary cross-entropy added to the loss (weight {fit['malignant_weight']:g}); "
           if fit.get("malignant_weight") else "")
        + f"weight "
        f"average (EMA, decay {fit['ema_decay']:g}) scored beside the raw weights every epoch; the epoch kept and "
        f"early stopping by validation {fit.get('selection', 'balanced_accuracy').replace('+auc', ' + malignant AUC').replace('_', ' ')} "
        f"(patience {fit['patience']}); seed {fit['seed']}. Ran {fit['epochs_run']} "
        f"epochs; kept epoch {fit['best_epoch']} ({fit['best_weights']} weights).\n")
    if fit.get("soup"):
        _soup(add, fit)
    if history:
        wall = sum(row["seconds"] for row in history)
        cores = fit.get("cpu_cores")
        add(f"Training took {wall / 3600:.2f} h of wall-clock time"
            + (f" on {cores} CPU cores ({wall * cores / 3600:.2f} CPU-hours)" if cores else "")
            + f", {np.median([row['train_images_per_second'] for row in history]):.1f} training images/s (median).\n")
        add("| epoch | loss | val bal. acc. (raw / EMA) | val malignant AUC (raw / EMA) | images/s |")
        add("|---|---|---|---|---|")
        for row in history:
            raw, ema = row["val_raw"], row["val_ema"]
            add(f"| {row['epoch']} | {row['loss']:.4f} | {raw['balanced_accuracy']:.4f} / {ema['balanced_accuracy']:.4f} "
                f"| {_fmt(raw['malignant_auc'], 4)} / {_fmt(ema['malignant_auc'], 4)} | {row['train_images_per_second']:.1f} |")
        add("")
    post = manifest["training"].get("post_training")
    if post:
        guard = post["guard"]
        add("### After training, on validation only\n")
        add(f"A candidate replaces the plain pipeline only if it gains at least {guard['min_gain']:g} balanced accuracy "
            f"and wins in at least {guard['min_bootstrap_win_fraction']:.0%} of {guard['resamples']} paired bootstrap "
            f"resamples of the validation {guard['unit']}s: with 14 df and 25 vasc validation images one image moves "
            "balanced accuracy by about 0.01, so smaller differences are noise.\n")
        add("| candidate | val balanced accuracy | gain | bootstrap wins | batch-1 latency vs reference |")
        add("|---|---|---|---|---|")
        for row in post["tta_candidates"]:
            ratio = row.get("batch1_latency_vs_reference")
            add(f"| test-time views `{row['candidate']}` | {row['val_balanced_accuracy']:.4f} | {row['gain']:+.4f} | "
                f"{row['bootstrap_win_fraction']:.0%} | {_fmt(ratio, 2) + 'x' if ratio else 'not timed'} |")
        shown = {"tau=+0.0", f"tau={post['prior_adjustment_tau'] + 0.0:+.1f}"}
        best = max(post["prior_candidates"], key=lambda r: r["val_balanced_accuracy"])
        shown.add(best["candidate"])
        for row in post["prior_candidates"]:
            if row["candidate"] in shown:
                add(f"| prior adjustment `{row['candidate']}` | {row['val_balanced_accuracy']:.4f} | {row['gain']:+.4f} | "
                    f"{row['bootstrap_win_fraction']:.0%} | same |")
        add(f"\nShipped: test-time views {', '.join(post['test_time_views'])}; prior adjustment tau "
            f"{post['prior_adjustment_tau']:+.1f} (logits - tau * log(training class frequency), folded into the "
            "classifier's bias). Temperature and malignancy threshold were fitted after that, on the final pipeline.\n")


def _soup(add, fit: dict) -> None:
    members = fit["soup"]["members"]
    add(f"**The packaged weights are a soup**: the mean of the best-epoch weights of {len(members)} runs of this "
        "recipe that differ only in their seed (a uniform model soup). They share their start and train briefly at a low rate, so they stay in one "
        "basin of the loss and their mean is one network, at one network's latency. The epoch table below is the "
        f"run with seed {fit['seed']}, as are the training time and CPU-hours below (each member took about as long); every "
        "other figure is the soup's.\n")
    add("| member seed | kept epoch | val bal. acc. | val malignant AUC |\n|---|---|---|---|")
    for m in members:
        add(f"| {m['seed']} | {m['best_epoch']} ({m['best_weights']}) | {m['val_balanced_accuracy']:.4f} "
            f"| {_fmt(m['val_malignant_auc'], 4)} |")
    add("")


DATA_ARGUMENTS = "--metadata ../shared/data/ham10000/HAM10000_metadata.csv --images ../shared/data/ham10000/images"


def _suggested_class(add, decision: dict) -> None:
    favoured = decision["favoured_class"]
    bias = decision["class_bias"][favoured]
    add("### The suggested class\n")
    add(f"The probabilities stay calibrated; the class the portal suggests is the argmax of log p(class) plus a "
        f"bias of **{bias:g}** on {display_name(favoured)}: it is suggested whenever its probability is at least "
        f"{decision['favoured_when_at_least']:.2f} times the most probable class's, because a missed melanoma costs "
        "more than a second look at a naevus. The bias is the largest on a 0.1 grid whose validation balanced "
        f"accuracy, and every smaller one's, stays within {decision['tolerance']:g} of the plain argmax "
        f"(chosen on {decision['chosen_on']}); the class metrics above judge the suggested class, the malignancy "
        "score, AUC and ECE the probabilities, which the bias does not move.\n")
    add(f"| bias | val balanced accuracy | change | val {favoured} recall | val nv recall |\n|---|---|---|---|---|")
    for row in decision["selection"]:
        chosen = " **(used)**" if row["bias"] == bias else ""
        add(f"| {row['bias']:g}{chosen} | {row['val_balanced_accuracy']:.4f} | {row['change']:+.4f} | "
            f"{_fmt(row[f'val_{favoured}_recall'])} | {_fmt(row['val_nv_recall'])} |")
    add("")


def _packaging_commands(manifest: dict, trained: str, gate: float) -> str:
    """The commands after `ml train`: the repackage step when the bundle holds another version's
    weights, then the screening report and the card."""
    version = manifest["version"]
    return (
        (f".venv/bin/python -m ml repackage --model ml/models/{trained} --out ml/models/{version} "
         f"--version {version} \\\n    {DATA_ARGUMENTS} --min-int8-agreement {gate:g}{_target_flag(manifest)}\n"
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
    same = ("its image-only classifications are the same to within float rounding; with the clinical context "
            "(this release's packaging adds its table) they move as described above" if "context" in manifest
            else "its classifications are the same to within float rounding")
    return (f"`{manifest['version']}` holds the weights of `{trained}`, packaged again by `python -m ml repackage` "
            f"(this release's screening statistics and outputs); {same}.\n")


def _end_to_end_command(manifest: dict, fit: dict, split: dict) -> str:
    prep = manifest["preprocessing"]
    gate = manifest["checks"]["int8"].get("required_agreement", 0.98)
    width = f" --width {prep['width']}" if prep.get("width") else ""
    trained = fit.get("repackaged_from", manifest["version"])
    extras = "".join([
        f" --mixup {fit['mixup']:g}" if fit.get("mixup") else "",
        f" --select {fit['selection']}" if fit.get("selection", "balanced_accuracy") != "balanced_accuracy" else "",
        f" --unconfirmed-weight {fit['unconfirmed_weight']:g}" if fit.get("unconfirmed_weight", 1.0) != 1.0 else "",
        f" --augmentation {fit['augmentation']}" if fit.get("augmentation", "full") != "full" else "",
        f" --distill-from ml/models/{fit['distill_from']} --distill-weight {fit['distill_weight']:g}"
        if fit.get("distill_from") else "",
        f" --mask-weight {fit['mask_weight']:g} --masks ../shared/data/ham10000/masks" if fit.get("mask_weight") else "",
        f" --malignant-weight {fit['malignant_weight']:g}" if fit.get("malignant_weight") else "",
        _target_flag(manifest) if trained == manifest["version"] else "",
        f" \\\n    --init-from ml/models/{fit['init_from']} --split-csv ml/models/{fit['init_from']}/split.csv"
        if fit.get("init_from") else "",
    ])

    def train_command(seed: int, tail: str = "") -> str:
        return (
            ".venv/bin/python -m ml train --mode end-to-end \\\n"
            f"    {DATA_ARGUMENTS} \\\n"
            f"    --out ml/models/{trained} --alpha {manifest['architecture']['alpha']} --size {prep['size']}{width} "
            f"--colour {prep['colour']} \\\n"
            f"    --epochs {fit['epochs']} --warmup-epochs {fit['warmup_epochs']} --patience {fit['patience']} "
            f"--batch-size {fit['batch_size']} --backbone-lr {fit['backbone_lr']:g} --head-lr {fit['head_lr']:g} \\\n"
            f"    --weight-decay {fit['weight_decay']:g} --dropout {fit['dropout']:g} --sampling {fit['sampling']} "
            f"--label-smoothing {fit['label_smoothing']:g} --balance {fit.get('balance', 1.0):g} "
            f"--ema-decay {fit['ema_decay']:g}{extras} \\\n"
            f"    --seed {seed} --split-seed {split['seed']} --min-int8-agreement {gate:g}{tail}\n"
        )

    # A soup: each other member trained first in its own work folder, then this run averages them in.
    others = [m["seed"] for m in fit.get("soup", {}).get("members", []) if m["seed"] != fit["seed"]]
    member_dirs = {seed: f"~/.cache/skinportal/train/{trained}-seed{seed}" for seed in others}
    commands = "".join(train_command(seed, f" \\\n    --work-dir {member_dirs[seed]} --train-only") for seed in others)
    commands += train_command(fit["seed"], f" \\\n    --average-with {' '.join(member_dirs.values())}" if others else "")
    return (
        "```sh\n" + commands
        + _packaging_commands(manifest, trained, gate) + "```\n\n"
        + (_repackaged_note(manifest, trained) + "\n" if trained != manifest["version"] else "")
        + "Re-running the same command after an interruption continues from the last finished epoch (checkpoints in "
        "`~/.cache/skinportal/train/<version>/end_to_end/`). Training on a CPU is deterministic up to thread "
        "scheduling; expect figures within the bootstrap intervals, not bit-equal.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml card", description=__doc__)
    parser.add_argument("--model", help="bundle folder (default: ml/models/<CURRENT>)")
    parser.add_argument("--out", default=CARD_PATH, help="where to write the card (default ml/MODEL_CARD.md)")
    args = parser.parse_args(argv)
    text = render_card(args.model or default_model_dir())
    with open(args.out, "w") as fh:
        fh.write(text)
    print(f"wrote {args.out}")
    return 0
