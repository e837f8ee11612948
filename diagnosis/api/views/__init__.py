"""Thin API views: parse with an input serializer, call a selector or a service, answer with an
output serializer. Every view that names an object in its URL is a ScopedApiView: the object is
fetched through its scoped selector before the view runs (another organisation's id is a 404).

One module per sub-domain; the views are re-exported here for diagnosis/api/urls.py:

  base       ScopedApiView, PaginatedListMixin and the small request helpers
  accounts   tokens and the caller
  records    patients, lesions (closing), follow-ups
  results    images (file, heatmap, classify) and classifications
  reviews    reviews and the review queue
  batches    batches
  model      the served model described
"""

from diagnosis.api.views.accounts import (  # noqa: F401
    CROSS_SITE_TOKEN_REQUEST,
    ApiTokenDetailApi,
    ApiTokenListApi,
    ApiTokenRotateApi,
    AuthTokenApi,
    MeApi,
    TokenLimitReached,
)
from diagnosis.api.views.base import (  # noqa: F401
    PaginatedListMixin,
    ScopedApiView,
)
from diagnosis.api.views.batches import (  # noqa: F401
    BatchDetailApi,
    BatchListApi,
    batch_data,
)
from diagnosis.api.views.model import (  # noqa: F401
    ModelUnavailable,
    ServedModelApi,
)
from diagnosis.api.views.records import (  # noqa: F401
    FollowUpListApi,
    LesionCloseApi,
    LesionDetailApi,
    LesionListApi,
    LesionReopenApi,
    PatientDetailApi,
    PatientListApi,
)
from diagnosis.api.views.results import (  # noqa: F401
    ClassificationDetailApi,
    ClassificationListApi,
    DuplicateImage,
    ImageClassifyApi,
    ImageDetailApi,
    ImageFileApi,
    ImageHeatmapApi,
    ImageListApi,
)
from diagnosis.api.views.reviews import (  # noqa: F401
    ReviewDetailApi,
    ReviewListApi,
    ReviewQueueApi,
)
