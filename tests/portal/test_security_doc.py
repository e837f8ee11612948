"""SECURITY.md's counted figures are the tests' own counts: this fails when they drift apart."""

from __future__ import annotations

import re

from diagnosis.audit import AUDITED_ADMIN_MODELS, AUDITED_ORGANISATION_ROUTES, AUDITED_ROUTES
from tests.portal import (
    hostile_corpus,
    test_api_fuzz,
    test_archive_fuzz,
    test_csrf,
    test_input_bounds,
    test_isolation,
    test_malformed_input,
)
from tests.portal.helpers import REPO_ROOT


def _figures() -> dict[str, int]:
    return {
        "object routes (pages and API) tried by an outsider": test_isolation.GRID_ROUTES,
        "methods tried on each (GET, POST, PUT, PATCH, DELETE)": len(test_isolation.GRID_METHODS),
        "outsider requests, each answered 404 with 0 rows changed": test_isolation.GRID_REQUESTS,
        "hostile files in the upload corpus": hostile_corpus.HOSTILE_CASE_COUNT,
        "hostile files refused": len(hostile_corpus.REFUSED_FILES),
        "upload requests with them (page and API)": 2 * hostile_corpus.HOSTILE_CASE_COUNT,
        "hostile ZIP archives, each refused whole (page and API)": hostile_corpus.HOSTILE_ARCHIVE_COUNT,
        "patient-data routes with exactly one audit event each": len(AUDITED_ROUTES),
        "admin pages of patient models audited": len(AUDITED_ADMIN_MODELS),
        "organisation routes audited (members, audit log)": len(AUDITED_ORGANISATION_ROUTES),
        "POST forms checked for CSRF": len(test_csrf.FORMS),
        "API operations fuzzed": len(test_api_fuzz.OPERATIONS),
        "fuzz examples at most per operation": test_api_fuzz.MAX_EXAMPLES,
        "API operations sent malformed bodies (JSON, form, multipart)": len(test_malformed_input.MALFORMED_OPERATIONS),
        "pages sent malformed form bodies": len(test_malformed_input.PAGES),
        "malformed-body examples per fuzz test (Hypothesis)": test_malformed_input.MAX_EXAMPLES,
        "unreadable batch CSVs, each refused whole (page and API)": len(test_malformed_input.BAD_CSVS),
        "generated ZIP archives sent to the batch endpoint": test_archive_fuzz.MAX_EXAMPLES,
        "free-text fields bounded and NUL-free (page and API)": len(test_input_bounds.FIELDS),
    }


def test_it_quotes_the_figures_the_tests_count():
    text = (REPO_ROOT / "SECURITY.md").read_text()
    quoted = {
        match["label"]: int(match["value"].replace(",", ""))
        for match in re.finditer(r"^\| (?P<label>[^|]+?) \| (?P<value>[\d,]+) \|$", text, re.MULTILINE)
    }
    assert quoted == _figures()
