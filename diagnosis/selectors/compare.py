"""Reads for comparing two visits of a lesion (the page and the API alike; imported from here,
not re-exported by the package). The lesion comes
already scoped to the user's organisations (scoping.url_object); an image id that is not one of
this lesion's images is a CompareError (400), whoever's image it is, so nothing about other
lesions or organisations shows."""

from __future__ import annotations

from dataclasses import dataclass

from diagnosis.compare import CompareError, Comparison, ViewBox, Visit, compare_visits, view_box
from diagnosis.models import Classification, Lesion, LesionImage
from diagnosis.selectors.images import lesion_timeline


@dataclass(frozen=True)
class ComparedImage:
    image: LesionImage
    classification: Classification | None  # the latest finished one (may be failed)
    view_box: ViewBox

    @property
    def succeeded(self) -> Classification | None:
        return self.classification if self.classification is not None and self.classification.succeeded else None

    @property
    def segmentation(self) -> dict | None:
        return self.succeeded.segmentation if self.succeeded is not None else None

    @property
    def outline_points(self) -> str:
        """The stored outline as SVG polygon points (image pixels); empty without one."""
        seg = self.segmentation
        if not seg or seg.get("fallback"):
            return ""
        return " ".join(f"{x:g},{y:g}" for x, y in seg.get("outline") or [])

    @property
    def has_heatmap(self) -> bool:
        return self.succeeded is not None and bool(self.succeeded.activation_map)


@dataclass(frozen=True)
class LesionComparison:
    lesion: Lesion
    before: ComparedImage
    after: ComparedImage
    comparison: Comparison
    images: list[LesionImage]  # every image of the lesion, in capture order (the pickers)


def _visit(image: LesionImage, classification: Classification | None) -> Visit:
    succeeded = classification if classification is not None and classification.succeeded else None
    return Visit(
        image_id=image.pk,
        captured_at=image.captured_at,
        malignancy_score=succeeded.malignancy_score if succeeded else None,
        model_version=succeeded.model_version if succeeded else "",
        segmentation=succeeded.segmentation if succeeded else None,
        pixels_per_mm=image.pixels_per_mm,
    )


def lesion_comparison(*, lesion: Lesion, a: int | None = None, b: int | None = None) -> LesionComparison:
    """Images `a` and `b` of the lesion compared (default: the first and the latest), the earlier
    one first. Raises CompareError when the lesion has fewer than two images, when a or b is not
    an image of this lesion, or when they are the same image."""
    timeline = lesion_timeline(lesion=lesion)
    if len(timeline) < 2:
        raise CompareError("This lesion has fewer than two images: upload another visit to compare.")
    by_id = {point.image.pk: point for point in timeline}
    chosen = []
    for name, image_id, default in (("a", a, timeline[0]), ("b", b, timeline[-1])):
        if image_id is None:
            chosen.append(default)
        elif image_id in by_id:
            chosen.append(by_id[image_id])
        else:
            raise CompareError(f"'{name}' ({image_id}) is not an image of this lesion: choose one of its images.")
    first, second = chosen
    comparison = compare_visits(_visit(first.image, first.classification), _visit(second.image, second.classification))
    points = {first.image.pk: first, second.image.pk: second}

    def compared(image_id: int) -> ComparedImage:
        point = points[image_id]
        shown = point.classification if point.classification is not None and point.classification.succeeded else None
        return ComparedImage(
            image=point.image,
            classification=point.classification,
            view_box=view_box(shown.segmentation if shown else None, point.image.width, point.image.height),
        )

    return LesionComparison(
        lesion=lesion,
        before=compared(comparison.before.image_id),
        after=compared(comparison.after.image_id),
        comparison=comparison,
        images=[point.image for point in timeline],
    )
