"""The model card's sections on how an answer is decided beyond the network: the clinical-context
table (age, sex, body site) and the melanoma operating point of the suggested class."""

from __future__ import annotations

from ml.card.text import fmt
from ml.classes import CLASSES, display_name


def context_route(context: dict) -> str:
    """How packaging's guard chose the context weight (bundles before v3m.8 had one route)."""
    if context.get("chosen_by") == "malignant_auc":
        return ("no weight gained 0.01 balanced accuracy, so the highest malignant AUC among weights raising it "
                "by at least 0.005 in 90% of paired lesion resamples without lowering balanced accuracy")
    return "the largest balanced-accuracy gain of at least 0.01 winning in 90% of paired lesion resamples " \
           "without losing malignant AUC"


def render_clinical_context(add, context: dict, alone: dict, weighed: dict | None) -> None:
    known = context["fitted_on"]["images_with_field_known"]
    add("### With the clinical context\n")
    add("When the patient's age and sex or the lesion's body site are known, each adds per class "
        "log p(class | value) - log p(class), counted on the training split "
        f"({', '.join(f'{field} known for {n:,} images' for field, n in known.items())}; age in bands "
        f"{', '.join(context['age_bands'])}; smoothed with {context['smoothing']:g} pseudo-images toward the prior), "
        f"times **{context['weight']:g}** (chosen on validation: {context_route(context)}), to the calibrated "
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
            add(f"| {display_name(c)} | {fmt(alone['per_class'][c]['recall'])} | "
                f"{fmt(weighed['per_class'][c]['recall'])} |")
    add("")


def render_suggested_class(add, decision: dict) -> None:
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
            f"{fmt(row[f'val_{favoured}_recall'])} | {fmt(row['val_nv_recall'])} |")
    add("")
