"""Figures as text: tables (markdown, or plain aligned columns for a terminal) and percentiles."""

from __future__ import annotations


def table(headers: list[str], rows: list[list[str]], markdown: bool, align: str = "") -> str:
    """`align` is one letter a column, l or r (default: the first column left, the others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    if markdown:
        rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
        lines = ["| " + " | ".join(headers) + " |", rule]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0 to 100), interpolated between the nearest two values; NaN of nothing."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
