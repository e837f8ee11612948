"""How much free text a person may send, in one place: the forms, the API's serializers and the
batch CSV (archives.CSV_MAX_CELL_CHARS) check these figures, so a page and the API refuse the
same input with the same limit.

The short fields (external id 64, name 200, lesion label 200, username 150) take their limits
from the model's max_length; the long ones below are TextFields, which the database does not
bound. NUL is refused in every one: Django's and DRF's CharFields carry
ProhibitNullCharactersValidator (PostgreSQL cannot store NUL in text).
"""

from __future__ import annotations

# Patient and lesion notes, a review's comment: about four typed pages.
LONG_TEXT_MAX_CHARS = 10_000
# A search box (patients' name or external id).
SEARCH_MAX_CHARS = 200
# A password typed to confirm a step: far beyond any real one, short of hashing megabytes.
PASSWORD_MAX_CHARS = 4_096
