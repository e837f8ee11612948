"""Reads. Every query is scoped to the organisations the user belongs to.

The `<entity>_get` helpers are the ONE way pages and the API fetch a single object (all through
`_get_or_404`): an id from another organisation raises Http404, exactly like an id that does
not exist, so an outsider learns nothing. List selectors never return another organisation's rows.

One module per sub-domain; everything public is re-exported here, so callers write
`selectors.<name>`:

  accounts   organisations, memberships and roles, API tokens, the audit trail, staff counts
  records    patients, lesions with their latest result, follow-up
  images     images, a lesion's timeline, classifications, model-upgrade and import checks
  reviews    clinician reviews, the review queue, agreement with the reviews
  batches    batches, their progress and the batch page's rows
"""

from diagnosis.selectors._base import User  # noqa: F401
from diagnosis.selectors.accounts import (  # noqa: F401
    api_token_list,
    audit_event_list,
    classification_status_counts,
    membership_get,
    membership_list,
    organisation_get,
    organisation_list_for_user,
    organisation_list_writable_by_user,
    user_can_write,
    user_can_write_anywhere,
    user_is_admin,
)
from diagnosis.selectors.batches import (  # noqa: F401
    BATCH_FILTERS,
    BATCH_SORTS,
    BatchImageRow,
    batch_get,
    batch_image_rows,
    batch_image_statuses,
    batch_images,
    batch_list,
    batch_progress,
    batch_settled,
)
from diagnosis.selectors.images import (  # noqa: F401
    TimelinePoint,
    classification_get,
    classification_list,
    classification_list_recent,
    image_classification_settled,
    image_clinical_record,
    image_get,
    image_ids_missing_classification,
    image_latest_classification,
    image_list,
    import_already_present,
    lesion_timeline,
)
from diagnosis.selectors.records import (  # noqa: F401
    DUE,
    FOLLOW_UP_DUE_DAYS,
    FOLLOW_UP_STATES,
    OVERDUE,
    follow_up_list,
    follow_up_state,
    follow_up_suggestion,
    lesion_get,
    lesion_list,
    lesion_list_flagged,
    lesion_list_needing_image,
    patient_get,
    patient_list,
    with_latest_result,
    with_latest_warnings,
)
from diagnosis.selectors.reviews import (  # noqa: F401
    agreement_model_versions,
    agreement_report,
    review_get,
    review_list,
    review_queue,
    with_review_state,
)
