"""Explicit input and output serializers of the REST API (no ModelSerializer magic).

One module per sub-domain; everything public is re-exported here, so views write
`serializers.<Name>`:

  common     the not-a-diagnosis notice, id fields, absolute links
  accounts   tokens, the caller and their memberships
  records    patients, lesions (body map, follow-up, closing)
  results    images and their classifications (readings, warnings, heatmap queries)
  reviews    reviews, the review queue, agreement with the reviews
  batches    batches and their images
  model      the served model described
"""

from diagnosis.api.serializers.accounts import (  # noqa: F401
    ApiTokenOutput,
    MembershipOutput,
    MeOutput,
    TokenInput,
    TokenOutput,
)
from diagnosis.api.serializers.batches import (  # noqa: F401
    BatchCreateInput,
    BatchDetailOutput,
    BatchImageOutput,
    BatchOutput,
    BatchProgressOutput,
    BatchRejectedOutput,
)
from diagnosis.api.serializers.common import (  # noqa: F401
    MAX_ID,
    NOTICE,
    IdField,
    _absolute,
)
from diagnosis.api.serializers.model import (  # noqa: F401
    HeldOutFiguresOutput,
    ModelClassOutput,
    ServedModelOutput,
)
from diagnosis.api.serializers.records import (  # noqa: F401
    MAP_RULE,
    MAP_VIEW_HELP,
    MAP_X_HELP,
    MAP_Y_HELP,
    FollowUpFilter,
    LesionCloseInput,
    LesionCreateInput,
    LesionFilter,
    LesionOutput,
    LesionUpdateInput,
    PatientCreateInput,
    PatientFilter,
    PatientOutput,
    PatientUpdateInput,
)
from diagnosis.api.serializers.results import (  # noqa: F401
    ClassificationFilter,
    ClassificationOutput,
    HeatmapQuery,
    ImageCreateInput,
    ImageFilter,
    ImageOutput,
    PerformanceOutput,
    ReadingOutput,
    UncertaintyOutput,
    WaitQuery,
    WarningOutput,
)
from diagnosis.api.serializers.reviews import (  # noqa: F401
    AgreementOutput,
    AgreementQuery,
    AgreementSectionOutput,
    ClassAgreementOutput,
    ConfusionMatrixOutput,
    FlagPerformanceOutput,
    KappaOutput,
    ModelVersionCountOutput,
    ProportionOutput,
    ReviewCreateInput,
    ReviewFilter,
    ReviewOutput,
    ReviewQueueOutput,
)
