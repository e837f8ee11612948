"""How the model does on an organisation's own patients: the model's top class against clinicians'
reviews, and its malignancy flag against histopathology-confirmed diagnoses.

Plain Python, no Django and no NumPy: the maths takes pairs of labels and returns counts,
proportions and intervals, so it is tested against scikit-learn and hand-worked cases alone.
`selectors.agreement_report` finds the pairs (each reviewed image's latest review with the
model's latest succeeded classification of that image) and calls `agreement_report` here.

* Proportions (overall agreement, per-class agreement, sensitivity, specificity) come with a
  Wilson score 95% interval, which stays inside [0, 1] and is honest at 0 of n and n of n.
* Cohen's kappa (unweighted) comes with the large-sample 95% interval: kappa +- 1.96 standard
  errors, the standard error by Fleiss, Cohen and Everitt (1969) (Fleiss, Levin and Paik,
  *Statistical Methods for Rates and Proportions*, 3rd ed., eq. 18.15), clipped to [-1, 1].
  Kappa is not defined without pairs, or when chance agreement is 100% (the clinicians and the
  model both used one and the same class): it is then None with the reason, never a division
  by zero.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
# Below this many pairs the page and the API warn that the intervals are wide.
SMALL_SAMPLE = 50

NOTICE = (
    "Decision support, not a diagnosis: SkinPortal is research and education software, not a certified medical "
    "device. Agreement with clinicians' reviews is not accuracy: only histopathology is a reference standard, and "
    "these figures describe this organisation's past reviewed images, not the next patient."
)
PAIRING = (
    "Each reviewed image counts once: its latest clinician review against the model's latest succeeded "
    "classification of that image (of the chosen model version, when one is chosen). Reviews saying 'other' "
    "are left out (no class to compare, no known malignancy), and so are reviewed images without a result."
)
MALIGNANT_GROUP_NOTE = (
    "Malignant: mel, bcc, akiec; benign: bkl, df, nv, vasc. Sensitivity and specificity are given only against "
    "histopathology-confirmed diagnoses."
)

KAPPA_NO_PAIRS = "no pairs to compare"
KAPPA_ONE_CLASS = (
    "the clinicians and the model used one and the same class for every image, so agreement by chance is 100%"
)


def wilson_interval(count: int, total: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of count/total (None when total is 0)."""
    if total <= 0:
        return None
    if not 0 <= count <= total:
        raise ValueError(f"count {count} is not between 0 and the total {total}")
    p = count / total
    z2 = z * z
    denominator = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denominator
    # Exactly 0 and 1 at the ends (rounding would otherwise leave 1e-17 outside).
    low = 0.0 if count == 0 else max(0.0, centre - half)
    high = 1.0 if count == total else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Proportion:
    """`count` of `total`, with its Wilson 95% interval; value and interval None when total is 0."""

    count: int
    total: int
    value: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, count: int, total: int) -> Proportion:
        interval = wilson_interval(count, total)
        if interval is None:
            return cls(count=count, total=total, value=None, low=None, high=None)
        return cls(count=count, total=total, value=count / total, low=interval[0], high=interval[1])

    @property
    def small(self) -> bool:
        """Few enough that the interval is wide (the page says so)."""
        return 0 < self.total < SMALL_SAMPLE


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa with its large-sample 95% interval; value None (and `undefined_reason`
    saying why) where it is not defined."""

    value: float | None
    standard_error: float | None
    low: float | None
    high: float | None
    undefined_reason: str = ""

    @property
    def defined(self) -> bool:
        return self.value is not None


def confusion_matrix(pairs: Iterable[tuple[str, str]], classes: Sequence[str]) -> list[list[int]]:
    """Counts of (reference, model) pairs: rows the reference's class, columns the model's, both in
    the order of `classes`. A pair naming a class outside `classes` raises ValueError (the caller
    leaves those out and counts them)."""
    index = {code: i for i, code in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for reference, predicted in pairs:
        if reference not in index or predicted not in index:
            raise ValueError(f"pair ({reference!r}, {predicted!r}) names a class outside {list(classes)}")
        matrix[index[reference]][index[predicted]] += 1
    return matrix


def cohen_kappa(matrix: Sequence[Sequence[int]]) -> Kappa:
    """Unweighted Cohen's kappa of a square confusion matrix, with its large-sample 95% interval."""
    k = len(matrix)
    n = sum(sum(row) for row in matrix)
    if n == 0:
        return Kappa(value=None, standard_error=None, low=None, high=None, undefined_reason=KAPPA_NO_PAIRS)
    p = [[cell / n for cell in row] for row in matrix]
    rows = [sum(p[i]) for i in range(k)]  # reference's marginals, p_i.
    cols = [sum(p[i][j] for i in range(k)) for j in range(k)]  # model's marginals, p_.j
    observed = sum(p[i][i] for i in range(k))
    chance = sum(rows[i] * cols[i] for i in range(k))
    if chance >= 1 - 1e-12:
        return Kappa(value=None, standard_error=None, low=None, high=None, undefined_reason=KAPPA_ONE_CLASS)
    kappa = (observed - chance) / (1 - chance)
    # Fleiss, Cohen & Everitt (1969): the variance of kappa-hat when kappa is not assumed 0.
    a = sum(p[i][i] * (1 - (rows[i] + cols[i]) * (1 - kappa)) ** 2 for i in range(k))
    b = (1 - kappa) ** 2 * sum(p[i][j] * (cols[i] + rows[j]) ** 2 for i in range(k) for j in range(k) if i != j)
    c = (kappa - chance * (1 - kappa)) ** 2
    standard_error = math.sqrt(max(0.0, a + b - c) / n) / (1 - chance)
    return Kappa(
        value=kappa,
        standard_error=standard_error,
        low=max(-1.0, kappa - Z95 * standard_error),
        high=min(1.0, kappa + Z95 * standard_error),
    )


@dataclass(frozen=True)
class ClassAgreement:
    """One class: of the images the reference put in it, how many the model put there too (the
    model's recall of that class), and how often the model chose it overall."""

    code: str
    agreement: Proportion
    model_count: int


@dataclass(frozen=True)
class AgreementSummary:
    classes: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]  # rows: the reference's class; columns: the model's
    overall: Proportion  # the model's top class is the reference's class
    kappa: Kappa
    per_class: tuple[ClassAgreement, ...]

    @property
    def pairs(self) -> int:
        return self.overall.total

    @property
    def small(self) -> bool:
        return self.overall.small

    @property
    def rows(self) -> list[tuple[str, tuple[int, ...]]]:
        """(reference class, its row of counts), for a table."""
        return list(zip(self.classes, self.matrix, strict=True))


def agreement_summary(pairs: Iterable[tuple[str, str]], classes: Sequence[str]) -> AgreementSummary:
    """Confusion matrix, overall and per-class agreement and kappa of (reference, model) pairs."""
    matrix = confusion_matrix(pairs, classes)
    n = sum(sum(row) for row in matrix)
    agreed = sum(matrix[i][i] for i in range(len(classes)))
    per_class = tuple(
        ClassAgreement(
            code=code,
            agreement=Proportion.of(matrix[i][i], sum(matrix[i])),
            model_count=sum(row[i] for row in matrix),
        )
        for i, code in enumerate(classes)
    )
    return AgreementSummary(
        classes=tuple(classes),
        matrix=tuple(tuple(row) for row in matrix),
        overall=Proportion.of(agreed, n),
        kappa=cohen_kappa(matrix),
        per_class=per_class,
    )


@dataclass(frozen=True)
class FlagPerformance:
    """The malignancy flag against a reference diagnosis: sensitivity (flagged, of the malignant)
    and specificity (not flagged, of the benign)."""

    sensitivity: Proportion
    specificity: Proportion

    @property
    def true_positives(self) -> int:
        return self.sensitivity.count

    @property
    def false_negatives(self) -> int:
        return self.sensitivity.total - self.sensitivity.count

    @property
    def true_negatives(self) -> int:
        return self.specificity.count

    @property
    def false_positives(self) -> int:
        return self.specificity.total - self.specificity.count


def flag_performance(pairs: Iterable[tuple[str, bool]], malignant: Collection[str]) -> FlagPerformance:
    """(reference diagnosis, flagged) pairs -> sensitivity and specificity of the flag, where a
    diagnosis in `malignant` is malignant and any other benign."""
    tp = fn = tn = fp = 0
    for diagnosis, flagged in pairs:
        if diagnosis in malignant:
            tp, fn = (tp + 1, fn) if flagged else (tp, fn + 1)
        else:
            tn, fp = (tn, fp + 1) if flagged else (tn + 1, fp)
    return FlagPerformance(sensitivity=Proportion.of(tp, tp + fn), specificity=Proportion.of(tn, tn + fp))


# --- The report: an organisation's pairs in, every figure out --------------------------------


@dataclass(frozen=True)
class Pair:
    """A reviewed image: its latest review, and the model's latest succeeded result (None: none)."""

    diagnosis: str
    histopathology_confirmed: bool
    top_class: str | None
    flagged: bool | None
    model_version: str | None


@dataclass(frozen=True)
class VersionCount:
    model_version: str
    pairs: int  # reviewed images with a succeeded result from this version
    confirmed_pairs: int  # of them, with a histopathology-confirmed latest review


@dataclass(frozen=True)
class AgreementReport:
    model_version: str | None  # the version asked for; None: each image's latest result, any version
    versions: tuple[VersionCount, ...]
    reviewed_images: int  # images with at least one review
    without_result: int  # of them, without a succeeded result (of the version asked for)
    other_diagnosis: int  # paired, but the latest review says "other": not in the matrix
    other_diagnosis_confirmed: int
    all_reviews: AgreementSummary
    confirmed: AgreementSummary  # histopathology-confirmed latest reviews only
    malignancy_flag: FlagPerformance  # against the confirmed diagnoses

    @property
    def empty(self) -> bool:
        return self.all_reviews.pairs == 0


def agreement_report(
    pairs: Iterable[Pair],
    *,
    classes: Sequence[str],
    malignant: Collection[str],
    model_version: str | None = None,
    versions: Sequence[VersionCount] = (),
) -> AgreementReport:
    """Every figure of the agreement page and API from the organisation's reviewed images.
    Reviews whose diagnosis is not one of `classes` ("other") are counted and left out: they have
    no cell in the matrix and no known malignancy."""
    known = set(classes)
    pairs = list(pairs)
    paired = [pair for pair in pairs if pair.top_class is not None]
    in_classes = [pair for pair in paired if pair.diagnosis in known and pair.top_class in known]
    confirmed = [pair for pair in in_classes if pair.histopathology_confirmed]
    others = [pair for pair in paired if pair.diagnosis not in known]
    return AgreementReport(
        model_version=model_version,
        versions=tuple(versions),
        reviewed_images=len(pairs),
        without_result=len(pairs) - len(paired),
        other_diagnosis=len(others),
        other_diagnosis_confirmed=sum(1 for pair in others if pair.histopathology_confirmed),
        all_reviews=agreement_summary(((p.diagnosis, p.top_class) for p in in_classes), classes),  # type: ignore[misc]
        confirmed=agreement_summary(((p.diagnosis, p.top_class) for p in confirmed), classes),  # type: ignore[misc]
        malignancy_flag=flag_performance(((p.diagnosis, bool(p.flagged)) for p in confirmed), malignant),
    )


# --- CSV: one row per figure ------------------------------------------------------------------

CSV_COLUMNS = (
    "section", "measure", "model_version", "clinician_class", "model_class", "count", "total", "value",
    "ci95_low", "ci95_high", "note",
)  # fmt: skip
SECTIONS = (("all_reviews", "all reviews"), ("confirmed", "histopathology-confirmed reviews"))


def csv_rows(report: AgreementReport, *, notice: str) -> Iterable[tuple]:
    """The report as rows under CSV_COLUMNS (the caller writes them through exports.csv_lines)."""
    version = report.model_version or "all"
    yield ("", "notice", version, "", "", "", "", "", "", "", notice)
    yield ("", "reviewed_images", version, "", "", report.reviewed_images, "", "", "", "", "")
    yield ("", "reviewed_images_without_result", version, "", "", report.without_result, "", "", "", "", "")
    yield ("all_reviews", "other_diagnosis_left_out", version, "other", "", report.other_diagnosis, "", "", "", "", "")
    yield ("confirmed", "other_diagnosis_left_out", version, "other", "", report.other_diagnosis_confirmed, "", "",
           "", "", "")  # fmt: skip
    for counted in report.versions:
        yield ("", "pairs_by_model_version", counted.model_version, "", "", counted.pairs, "", "", "", "", "")
        yield ("", "confirmed_pairs_by_model_version", counted.model_version, "", "", counted.confirmed_pairs, "", "",
               "", "", "")  # fmt: skip
    for key, _title in SECTIONS:
        summary: AgreementSummary = getattr(report, key)
        yield (key, "overall_agreement", version, "", "", *_proportion_cells(summary.overall), _small(summary.overall))
        kappa = summary.kappa
        yield (key, "cohen_kappa", version, "", "", "", summary.pairs, kappa.value, kappa.low, kappa.high,
               "" if kappa.defined else f"not defined: {kappa.undefined_reason}")  # fmt: skip
        for row in summary.per_class:
            yield (key, "class_agreement", version, row.code, row.code, *_proportion_cells(row.agreement),
                   _small(row.agreement))  # fmt: skip
        for reference, counts in summary.rows:
            for predicted, count in zip(summary.classes, counts, strict=True):
                yield (key, "confusion", version, reference, predicted, count, "", "", "", "", "")
    flag = report.malignancy_flag
    for measure, proportion in (("flag_sensitivity", flag.sensitivity), ("flag_specificity", flag.specificity)):
        yield ("confirmed", measure, version, "", "", *_proportion_cells(proportion), _small(proportion))


def _proportion_cells(proportion: Proportion) -> tuple:
    return proportion.count, proportion.total, proportion.value, proportion.low, proportion.high


def _small(proportion: Proportion) -> str:
    return f"n = {proportion.total}: the interval is wide" if proportion.small else ""
