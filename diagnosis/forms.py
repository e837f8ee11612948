"""HTML form input. Forms only validate shapes; the services decide and write."""

from __future__ import annotations

from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from diagnosis.limits import LONG_TEXT_MAX_CHARS, PASSWORD_MAX_CHARS, SEARCH_MAX_CHARS
from diagnosis.models import (
    DIAGNOSIS_CHOICES,
    PIXELS_PER_MM_MAX,
    PIXELS_PER_MM_MIN,
    AuditOutcome,
    BodySite,
    Laterality,
    LesionOutcome,
    MapView,
    Organisation,
    Role,
    Sex,
)
from diagnosis.services.accounts import API_TOKEN_KEY_ID
from skinportal.accounts import login_authenticate


class DateInput(forms.DateInput):
    """A browser date picker. Its value must be written YYYY-MM-DD whatever the locale's format
    (an <input type="date"> shows nothing for "12/03/2026": the capture date looked empty)."""

    input_type = "date"

    def __init__(self, attrs=None, format: str | None = None) -> None:
        super().__init__(attrs, format=format or "%Y-%m-%d")


class PatientForm(forms.Form):
    organisation = forms.ModelChoiceField(queryset=Organisation.objects.none(), empty_label=None)
    external_id = forms.CharField(max_length=64, label="External id", help_text="Your clinic's record number.")
    name = forms.CharField(max_length=200)
    date_of_birth = forms.DateField(required=False, widget=DateInput)
    sex = forms.ChoiceField(choices=Sex.choices, initial=Sex.UNKNOWN, required=False)
    notes = forms.CharField(required=False, max_length=LONG_TEXT_MAX_CHARS, widget=forms.Textarea(attrs={"rows": 3}))

    def clean_sex(self) -> str:
        return self.cleaned_data.get("sex") or Sex.UNKNOWN

    def __init__(self, *args, organisations: QuerySet[Organisation] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if organisations is None:  # editing: a patient never moves to another organisation
            del self.fields["organisation"]
        else:
            self.fields["organisation"].queryset = organisations
            if organisations.count() == 1:
                self.fields["organisation"].widget = forms.HiddenInput()
                self.fields["organisation"].initial = organisations.first()


class LesionForm(forms.Form):
    label = forms.CharField(max_length=200, help_text="e.g. 'left shoulder, 2 cm below the acromion'")
    body_site = forms.ChoiceField(choices=BodySite.choices, initial=BodySite.UNKNOWN, label="Body site")
    laterality = forms.ChoiceField(choices=Laterality.choices, initial=Laterality.UNKNOWN, label="Side", required=False)
    notes = forms.CharField(required=False, max_length=LONG_TEXT_MAX_CHARS, widget=forms.Textarea(attrs={"rows": 3}))
    # The body map place: static/js/body_map.js fills these from a click on the drawing; without
    # script they are typed. Whether they make a whole place is the service's call.
    map_view = forms.ChoiceField(choices=[("", "Not placed"), *MapView.choices], required=False, label="Drawing")
    map_x = forms.FloatField(
        required=False, min_value=0, max_value=1, label="Across", widget=forms.NumberInput(attrs={"step": "any"})
    )
    map_y = forms.FloatField(
        required=False, min_value=0, max_value=1, label="Down", widget=forms.NumberInput(attrs={"step": "any"})
    )
    MAP_FIELDS = ("map_view", "map_x", "map_y")

    def clean_laterality(self) -> str:
        return self.cleaned_data.get("laterality") or Laterality.UNKNOWN

    def main_fields(self) -> list[forms.BoundField]:
        return [field for field in self.visible_fields() if field.name not in self.MAP_FIELDS]

    def map_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.MAP_FIELDS]


class FollowUpForm(forms.Form):
    follow_up_on = forms.DateField(
        required=False, widget=DateInput, label="Follow-up date", help_text="Leave empty when none is planned."
    )


class LesionCloseForm(forms.Form):
    outcome = forms.ChoiceField(choices=[("", "Choose…"), *LesionOutcome.choices])
    closed_on = forms.DateField(widget=DateInput, label="Closed on", initial=timezone.localdate)
    outcome_note = forms.CharField(
        required=False, max_length=LONG_TEXT_MAX_CHARS, label="Note", widget=forms.Textarea(attrs={"rows": 3}),
        help_text="e.g. the histopathology report's conclusion.",
    )


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """A file field that returns every selected file; content checks are the service's job."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/jpeg,image/png,.dcm,application/dicom"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, (list, tuple)):
            return [single(item, initial) for item in data]
        return [single(data, initial)]


class UploadForm(forms.Form):
    images = MultipleImageField(label="Images (JPEG, PNG or DICOM; several allowed)")
    captured_at = forms.DateField(widget=DateInput, label="Capture date", initial=timezone.localdate)
    pixels_per_mm = forms.FloatField(
        required=False, min_value=PIXELS_PER_MM_MIN, max_value=PIXELS_PER_MM_MAX, label="Scale (pixels per mm)",
        help_text="Optional: the images' scale (from the dermatoscope or a ruler), so the lesion's area is also "
                  "given in mm². Without it the area is in pixels and changes with the zoom.",
    )


class ReviewForm(forms.Form):
    diagnosis = forms.ChoiceField(choices=[("", "Choose…"), *DIAGNOSIS_CHOICES], label="Your diagnosis")
    histopathology_confirmed = forms.BooleanField(required=False, label="Confirmed by histopathology")
    comment = forms.CharField(required=False, max_length=LONG_TEXT_MAX_CHARS, widget=forms.Textarea(attrs={"rows": 3}))


class PatientSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=SEARCH_MAX_CHARS, label="Search")


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="An existing login.")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.CLINICIAN)


class BatchForm(forms.Form):
    """Several images or one ZIP; the service checks every file and reports each bad one."""

    organisation = forms.ModelChoiceField(queryset=Organisation.objects.none(), empty_label=None, required=False)
    lesion = forms.IntegerField(widget=forms.HiddenInput, required=False)
    images = MultipleImageField(label="Images (JPEG or PNG; select many)", required=False)
    archive = forms.FileField(
        label="…or a ZIP archive",
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,application/zip"}),
        help_text="Optionally with one CSV (columns: file, patient, lesion, body_site, captured_at) saying which "
        "patient (external id) and lesion (label; created if new) each file shows.",
    )
    captured_at = forms.DateField(
        widget=DateInput,
        label="Capture date",
        initial=timezone.localdate,
        required=False,
        help_text="For files whose CSV row gives no date.",
    )

    def __init__(self, *args, organisations: QuerySet[Organisation], has_lesion: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["organisation"].queryset = organisations
        if has_lesion or organisations.count() == 1:
            self.fields["organisation"].widget = forms.HiddenInput()
            self.fields["organisation"].initial = organisations.first()

    def clean_images(self):
        images = self.cleaned_data.get("images")
        return [] if images in (None, [None]) else [f for f in images if f]


class ReauthForm(forms.Form):
    """Re-authentication before an irreversible or data-releasing step (delete, export, a new API key)."""

    password = forms.CharField(
        label="Your password",
        strip=False,
        max_length=PASSWORD_MAX_CHARS,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password", "autofocus": True}),
    )

    def __init__(self, *args, request=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        user = self.request.user
        # Not check_password(): wrong passwords count towards the django-axes lockout (serialised).
        if login_authenticate(self.request, username=user.get_username(), password=password) is None:
            raise forms.ValidationError("That is not your password.")
        return password


class ApiTokenKeyForm(forms.Form):
    """Names one of the user's API tokens by the first 15 characters of its key."""

    key = forms.RegexField(regex=rf"^{API_TOKEN_KEY_ID.pattern}$", widget=forms.HiddenInput)


class ApiTokenRotateForm(ApiTokenKeyForm, ReauthForm):
    """Rotation hands out a new key: the password first, as for a new token."""


class AuditFilterForm(forms.Form):
    action = forms.CharField(required=False, max_length=20)
    object_type = forms.CharField(required=False, max_length=20, label="Object")
    outcome = forms.ChoiceField(required=False, choices=[("", "any")] + list(AuditOutcome.choices))
    actor = forms.CharField(required=False, max_length=150, label="User")
    date_from = forms.DateField(required=False, widget=DateInput, label="From")
    date_to = forms.DateField(required=False, widget=DateInput, label="To")


ALL_MODEL_VERSIONS = ""


class AgreementFilterForm(forms.Form):
    """The agreement page's model version: all (each image's latest result), or one of those with
    a result on a reviewed image (`versions`: selectors.agreement_model_versions)."""

    model_version = forms.ChoiceField(required=False, label="Model version")

    def __init__(self, *args, versions=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model_version"].choices = [(ALL_MODEL_VERSIONS, "All versions: each image's latest result")] + [
            (v.model_version, f"{v.model_version} ({v.pairs} reviewed images)") for v in versions
        ]
