"""Django admin for staff: every model, read-mostly where the data comes from the model."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db import models
from knox.models import AuthToken

from diagnosis.models import (
    AuditEvent,
    Batch,
    Classification,
    ClinicianReview,
    Lesion,
    LesionImage,
    Membership,
    Organisation,
    Patient,
)
from diagnosis.limits import LONG_TEXT_MAX_CHARS
from skinportal.accounts import validate_username


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organisation", "role", "created_at"]
    list_filter = ["role", "organisation"]
    search_fields = ["user__username", "organisation__name"]
    autocomplete_fields = ["user", "organisation"]


class BoundedTextAdmin(admin.ModelAdmin):
    """The admin's forms bound free text as the portal's forms and the API do (TextFields have
    no database limit, so the form is where the limit lives)."""

    formfield_overrides = {models.TextField: {"max_length": LONG_TEXT_MAX_CHARS}}


@admin.register(Patient)
class PatientAdmin(BoundedTextAdmin):
    list_display = ["name", "external_id", "organisation", "date_of_birth", "sex", "created_at"]
    list_filter = ["organisation", "sex"]
    search_fields = ["name", "external_id"]
    readonly_fields = ["created_by", "created_at", "updated_at"]


@admin.register(Lesion)
class LesionAdmin(BoundedTextAdmin):
    list_display = ["label", "patient", "body_site", "laterality", "follow_up_on", "closed_on", "created_at"]
    list_filter = ["body_site", "laterality", "outcome", "patient__organisation"]
    search_fields = ["label", "patient__name", "patient__external_id"]
    readonly_fields = ["created_by", "created_at", "updated_at"]


@admin.register(LesionImage)
class LesionImageAdmin(admin.ModelAdmin):
    list_display = ["id", "lesion", "captured_at", "width", "height", "source_format", "uploaded_by", "uploaded_at"]
    list_filter = ["lesion__patient__organisation", "source_format"]
    readonly_fields = ["file", "sha256", "width", "height", "size_bytes", "source_format", "uploaded_by", "uploaded_at"]


@admin.register(Classification)
class ClassificationAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "image",
        "model_version",
        "status",
        "top_class",
        "malignancy_score",
        "malignant",
        "created_at",
    ]
    list_filter = ["status", "malignant", "model_version"]
    readonly_fields = [f.name for f in Classification._meta.fields]


@admin.register(ClinicianReview)
class ClinicianReviewAdmin(BoundedTextAdmin):
    list_display = ["id", "image", "diagnosis", "histopathology_confirmed", "author", "created_at"]
    list_filter = ["diagnosis", "histopathology_confirmed"]
    readonly_fields = ["author", "created_at"]


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "kind", "organisation", "received", "created_by", "created_at"]
    list_filter = ["kind", "organisation"]
    readonly_fields = ["organisation", "kind", "name", "lesion", "received", "rejected", "created_by", "created_at"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only (the model refuses updates and deletes too)."""

    list_display = [
        "at",
        "actor_username",
        "organisation_id",
        "action",
        "object_type",
        "object_id",
        "surface",
        "outcome",
    ]
    list_filter = ["action", "surface", "outcome", "object_type"]
    search_fields = ["actor_username", "request_id"]
    date_hierarchy = "at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# --- Logins and their API tokens -----------------------------------------------------------


class PortalUserCreationForm(AdminUserCreationForm):
    def clean_username(self) -> str:
        username = super().clean_username()
        validate_username(username)  # the portal's one username rule (skinportal.accounts)
        return username


class PortalUserChangeForm(UserChangeForm):
    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if username != self.instance.get_username():  # a rename; a login from before the rule keeps its name
            validate_username(username)
        return username


admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class PortalUserAdmin(UserAdmin):
    add_form = PortalUserCreationForm
    form = PortalUserChangeForm


admin.site.unregister(AuthToken)


@admin.register(AuthToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Staff see API tokens and revoke them; keys come from the user's own page or the API, always
    with an expiry (knox's own admin would add tokens that never expire). Only digests are stored."""

    list_display = ["token_key", "user", "created", "expiry"]
    search_fields = ["token_key", "user__username"]
    fields = ["token_key", "user", "created", "expiry"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
