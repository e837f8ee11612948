"""The model card's section on the lesion segmenter."""

from __future__ import annotations

import os

from ml.manifest import load_segmentation_manifest


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
