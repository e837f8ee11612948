from django.apps import AppConfig


class DiagnosisConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "diagnosis"
    verbose_name = "Diagnosis"

    def ready(self) -> None:
        # Nothing here loads OpenCV, NumPy or onnxruntime: diagnosis/inference/ imports them on
        # first use (and sets OpenCV to one thread then), so loading the app stays light.
        from diagnosis import signals  # noqa: F401  (connects the audit trail's sign-in receivers)
        from diagnosis import credentials  # noqa: F401  (API tokens end with the password that issued them)
        from skinportal.health import readiness_check_register

        readiness_check_register("model", model_readiness)


def model_readiness():
    """/readyz's model check: the configured bundle is present and intact (no session is made)."""
    from diagnosis.inference import model_check
    from skinportal.health import Check

    status = model_check()
    return Check(status.ok, status.detail if status.ok else f"model not ready: {status.detail}")
