"""The model card's section on knowing when not to answer, and on the heatmaps (ml/card/ calls it).

Every figure is read from the manifest's "screening" section (limits fitted at packaging) and
metrics.json's "screening_report" (measured by `python -m ml screening-report` on the test split).
"""

from __future__ import annotations

from collections.abc import Callable


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def render_screening(add: Callable[[str], None], manifest: dict, report: dict | None) -> None:
    section = manifest["screening"]
    ood, quality, confidence = section["ood"], section["quality"], section["confidence"]
    add("## Knowing when not to answer\n")
    add("Every image is screened with its classification, and a result with a warning is never shown as a "
        "reassurance. The limits are fitted when the bundle is packaged (`ml/screening/fit.py`) and stored in it "
        f"(`{section['file']}`, sha256 `{section['sha256'][:16]}…`, checked at load); none was tuned on the test split.\n")
    add("| warning | rule | fitted on |\n|---|---|---|")
    add(f"| not_dermoscopic | {ood.get('method', 'feature distance')}, above {ood['threshold']:.2f} (at most "
        f"{_pct(ood.get('max_false_alarm_rate'))} of dermatoscopic validation images; "
        f"{_pct(ood.get('validation_false_alarm_rate'))} as they are, {_pct(ood.get('validation_views_false_alarm_rate'))} "
        f"of other-dermatoscope views of them) | {ood.get('fitted_on', '')}; threshold on {ood.get('threshold_chosen_on', '')} |")
    p = quality.get("percentile", 0.5)
    add(f"| blurred | edge steepness below {quality['min_sharpness']:.3f} (the training images' {p:g}th percentile) | "
        f"{quality.get('fitted_on', '')} |")
    add(f"| too_dark | mean luma below {quality['min_brightness']:.1f} | {quality.get('fitted_on', '')} |")
    add(f"| too_bright | mean luma above {quality['max_brightness']:.1f}, or more than {_pct(quality['max_saturated'])} of "
        f"pixels saturated | {quality.get('fitted_on', '')} |")
    add(f"| low_contrast | luma standard deviation below {quality['min_contrast']:.1f} | {quality.get('fitted_on', '')} |")
    add(f"| low_confidence | top-two margin below {confidence['min_margin']:.3f} (where the top class was right "
        f"{_pct(confidence.get('accuracy_below_margin'))} of the time), or normalised entropy above "
        f"{confidence['max_entropy']:.3f} | {confidence.get('fitted_on', '')} |")
    add("\nUploads smaller than 100 pixels on a side are refused before classification.\n")
    if not report:
        add("_No screening report yet: run `python -m ml screening-report` to measure the checks._\n")
        return
    _measured(add, report)


def _measured(add: Callable[[str], None], report: dict) -> None:
    clean, nonderm = report["clean_test"], report["non_dermoscopic"]
    add(f"### Measured on the {report['test_images']} test images\n")
    add(f"- **not_dermoscopic false alarms: {_pct(clean['not_dermoscopic'])}** of dermatoscopic test images (target at "
        f"most 5%). **Detection: {_pct(nonderm['detected_rate'])} of {nonderm['images']} non-dermatoscopic images** "
        f"(target at least 95%), generated without network by `{nonderm['corpus']}`.")
    low = report["low_confidence"]
    add(f"- low_confidence fires on {_pct(low['rate'])} of test images; the top class was right on "
        f"{_pct(low['accuracy_when_flagged'])} of them and on {_pct(low['accuracy_otherwise'])} of the others.")
    add(f"- Any warning on a clean test image: {_pct(clean['any'])} (" + ", ".join(
        f"{code} {_pct(rate)}" for code, rate in clean.items() if code != "any") + ").\n")
    add("| non-dermatoscopic kind | images | flagged |\n|---|---:|---:|")
    for kind, row in nonderm["by_kind"].items():
        add(f"| {kind} | {row['images']} | {_pct(row['detected_rate'])} |")
    add("\nOther dermatoscopes look different without being out of distribution. There is no second dermatoscopic "
        "data set here, so these stand-ins alter the test images (the feature statistics were fitted with random "
        "views of the same kinds on the training images, so these rates show the fit, not an independent test):\n")
    add("| view of the test images | flagged not_dermoscopic |\n|---|---:|")
    for name, rate in report["dermatoscope_views"].items():
        add(f"| {name.replace('_', ' ')} | {_pct(rate)} |")
    add("\nDegraded copies of the test images (applied at full size, as a poor capture would be):\n")
    add("| degradation, level | expected warning | caught | any warning |\n|---|---|---:|---:|")
    for name, row in report["degradations"].items():
        add(f"| {name} | {row['expected']} | {_pct(row['expected_rate'])} | {_pct(row['any_rate'])} |")
    add("\nLevels: blur sigma as a fraction of the shorter side; darkening and over-exposure as a gain on every "
        "pixel; low contrast as the factor that squeezes pixels toward their mean.\n")
    loc = report.get("localisation")
    if loc:
        add("## Heatmaps\n")
        add("The class activation map is exact for this architecture (global average pooling then a dense layer: "
            "the map averaged over positions plus the bias is the logit, checked at export) and comes out of the "
            "same ONNX run as the probabilities. Measured against the HAM10000 lesion masks on "
            f"{loc['images']} test images, for the top class: **{_pct(loc['mass_inside_lesion_mean'])} of the map's "
            f"mass lies inside the lesion**, which covers {_pct(loc['lesion_area_share_mean'])} of the image on "
            f"average (median ratio {loc['mass_inside_over_area_median']:.2f}); the map's peak falls inside the lesion "
            f"on **{_pct(loc['pointing_game'])}** of images (pointing game; a random point would score "
            f"{_pct(loc['pointing_game_random_baseline'])}). The map is coarse (one cell per 32 input pixels) and shows "
            "where the evidence lies, not why.\n")
    add(f"Reproduce: `{report.get('command', 'python -m ml screening-report')}`.\n")
