from django.apps import AppConfig


class DiagnosisConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "diagnosis"
    verbose_name = "Diagnosis"

    def ready(self) -> None:
        from diagnosis import signals  # noqa: F401  (connects the audit trail's sign-in receivers)
        from diagnosis.inference import use_one_opencv_thread

        use_one_opencv_thread()
