"""The portal's one door into the ml package.

Everything diagnosis/ needs from ml/ passes through this package, so the boundary stays visible:
the class vocabulary, the image checks used at upload, and the classifier. Only ml.inference,
ml.preprocessing, ml.manifest, ml.classes and ml.errors are imported: never ml.training, which
pulls in TensorFlow. At import only the light ml.classes and ml.errors load (the models import
the class names from here); OpenCV, NumPy and onnxruntime load on first use, so importing the
models, the admin or the URLs loads none of them.

The model served comes from the settings SKINPORTAL_MODEL_DIR, SKINPORTAL_MODEL_VARIANT and
SKINPORTAL_ORT_THREADS (skinportal/settings.py), passed in explicitly: ml/ reads no Django.

One module per part, all re-exported here (callers write `inference.<name>`):

  uploads        the checks an upload passes before it is stored; the stored file decoded again
  classifier     the onnxruntime classifier: many images in one run, the worker's warm-up
  explanation    heatmaps drawn from a stored activation map
  segmentation   the lesion's outline and measurements, computed with each classification
  model_info     the readiness check, the measured performance, the version a result gets,
                 the served model described (its page and GET /api/v1/model/)
  opencv         OpenCV imported on first use, one thread per process
"""

from diagnosis.budget import BudgetExceeded, UploadBudget
from diagnosis.inference.classifier import (
    ImageSource,
    PortalPrediction,
    classify_many,
    clinical_context,
    configured_model_dir,
    get_classifier,
    loaded_model_version,
    warm_up,
)
from diagnosis.inference.explanation import (
    HEATMAP_MAX_SIDE,
    heatmap_overlay,
    heatmap_png,
    stored_field_of_view,
)
from diagnosis.inference.model_info import (
    HeldOutFigures,
    ModelPerformance,
    ModelStatus,
    ServedModel,
    context_table_values,
    current_model_version,
    model_check,
    model_performance,
    served_model,
)
from diagnosis.inference.opencv import (
    use_one_opencv_thread,
)
from diagnosis.inference.segmentation import (
    OUTLINE_MAX_POINTS,
    SEGMENTATION_MAX_SIDE,
    segment_image,
)
from diagnosis.inference.uploads import (
    ACCEPTED_UPLOAD_FORMATS,
    JPEG_MAX_SCANS,
    SanitisedImage,
    decode_stored_image,
    png_inflated_size,
    sanitise_upload,
)
from ml.classes import CLASS_NAMES, CLASSES, MALIGNANT_CLASSES, display_name
from ml.errors import ImageTooLargeError, InvalidImageError, MLError, ModelIntegrityError
from ml.screening import (
    IMAGE_WARNINGS,
    MIN_IMAGE_SIDE,
    WARNING_CODES,
    WARNING_TEXT,
    check_minimum_size,
    warning_label,
    warning_text,
)

__all__ = [
    "ACCEPTED_UPLOAD_FORMATS",
    "CLASSES",
    "CLASS_NAMES",
    "HEATMAP_MAX_SIDE",
    "IMAGE_WARNINGS",
    "JPEG_MAX_SCANS",
    "MALIGNANT_CLASSES",
    "MIN_IMAGE_SIDE",
    "OUTLINE_MAX_POINTS",
    "SEGMENTATION_MAX_SIDE",
    "WARNING_CODES",
    "WARNING_TEXT",
    "BudgetExceeded",
    "HeldOutFigures",
    "ImageSource",
    "ImageTooLargeError",
    "InvalidImageError",
    "MLError",
    "ModelIntegrityError",
    "ModelPerformance",
    "ModelStatus",
    "PortalPrediction",
    "SanitisedImage",
    "ServedModel",
    "UploadBudget",
    "check_minimum_size",
    "classify_many",
    "context_table_values",
    "clinical_context",
    "configured_model_dir",
    "current_model_version",
    "decode_stored_image",
    "display_name",
    "get_classifier",
    "heatmap_overlay",
    "heatmap_png",
    "loaded_model_version",
    "model_check",
    "model_performance",
    "png_inflated_size",
    "sanitise_upload",
    "segment_image",
    "served_model",
    "use_one_opencv_thread",
    "warm_up",
    "warning_label",
    "warning_text",
]
