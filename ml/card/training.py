"""The model card's account of an end-to-end training run: the recipe, a soup's members, the epoch
table and the post-training choices made on validation."""

from __future__ import annotations

import numpy as np

from ml.card.text import fmt

VIEWS = {
    "full": "random resized crop, flips, 90-degree turns, rotation with shear and scale, colour jitter, occasional "
            "resolution loss, cutout",
    "light": "light views only: flips, 90-degree turns and mild colour jitter, without crops, warps or cutout",
    "light_framed": "light views, half of them in a random dermatoscope frame (a circle cutting the image, or the "
                    "image padded inside one) for the crop to the field of view to take away",
    "light_framed_quarter": "light views, a quarter of them in a random dermatoscope frame",
    "light_looks": "light views, half of them in another white balance (each channel's gain log-uniform in "
                   "0.8-1.25) and a quarter through harder JPEG (quality 20-70), as other dermatoscopes and cameras "
                   "show a lesion",
}


def render_end_to_end_training(add, manifest: dict, fit: dict, history: list[dict]) -> None:
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
                f"| {fmt(raw['malignant_auc'], 4)} / {fmt(ema['malignant_auc'], 4)} | {row['train_images_per_second']:.1f} |")
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
                f"{row['bootstrap_win_fraction']:.0%} | {fmt(ratio, 2) + 'x' if ratio else 'not timed'} |")
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
    members, across = fit["soup"]["members"], fit["soup"].get("across")
    differ = (f"that differ in their seed and their {' and '.join(across)} (a uniform model soup across training "
              "views, as in Wortsman et al., 2022)" if across else "that differ only in their seed (a uniform model soup)")
    add(f"**The packaged weights are a soup**: the mean of the best-epoch weights of {len(members)} runs of this "
        f"recipe {differ}. They share their start and train briefly at a low rate, so they stay in one "
        "basin of the loss and their mean is one network, at one network's latency. The epoch table below is the "
        f"run with seed {fit['seed']}, as are the training time and CPU-hours below (each member took about as long); every "
        "other figure is the soup's.\n")
    add("| member seed | kept epoch | val bal. acc. | val malignant AUC |" + (" training views |" if across else "")
        + "\n|---|---|---|---|" + ("---|" if across else ""))
    for m in members:
        crop = " + crop" if m.get("field_of_view") else ""
        add(f"| {m['seed']} | {m['best_epoch']} ({m['best_weights']}) | {fmt(m['val_balanced_accuracy'], 4)} "
            f"| {fmt(m['val_malignant_auc'], 4)} |" + (f" {m.get('augmentation', fit['augmentation'])}{crop} |" if across else ""))
    add("")
