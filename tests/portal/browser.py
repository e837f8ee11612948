"""What every real-browser test shares: Debian's chromium (never a downloaded browser), launched
headless by Playwright, one page per test, and database work from a thread of its own.

A browser test module starts with `sync_api = require_browser()`, which skips the module, saying
why, where chromium or the playwright package is missing, and imports `browser_page` (a fixture).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

CHROMIUM = os.environ.get("SKINPORTAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
T = TypeVar("T")


def chromium_missing() -> str | None:
    """Why no browser test can run here, or None when chromium is installed."""
    if Path(CHROMIUM).is_file() or shutil.which(CHROMIUM):
        return None
    return f"no chromium at {CHROMIUM} (apt-get install chromium)"


def require_browser() -> ModuleType:
    """playwright.sync_api; skips the calling test module when it or chromium is missing."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install -e '.[dev]')"
    )
    reason = chromium_missing()
    if reason:
        pytest.skip(reason, allow_module_level=True)
    # Playwright's sync API runs an event loop in this thread; Django's ORM calls from fixtures
    # are still synchronous.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    return sync_api


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page of a fresh headless chromium (1200x900); skips the test, saying why, without one."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    sync_playwright = sync_api.sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def in_own_thread(work: Callable[[], T]) -> T | None:
    """Database work from a plain thread that closes its connection: inside Playwright's sync API
    the test thread runs an event loop, and Django would open a connection nobody closes."""
    from django.db import connections

    result: dict[str, T] = {}

    def run() -> None:
        try:
            result["value"] = work()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result.get("value")


def new_patient_and_lesion(page: Any, *, external_id: str, name: str, born: str, sex: str, label: str,
                           body_site: str) -> None:
    """From any signed-in page, through the forms a clinician uses: a new patient, then a new
    lesion of theirs; ends on the lesion's upload page."""
    page.click("nav.mainnav >> text=Patients")
    page.click("text=New patient")
    page.fill("#id_external_id", external_id)
    page.fill("#id_name", name)
    page.fill("#id_date_of_birth", born)
    page.select_option("#id_sex", sex)
    page.click("button:has-text('Create patient')")
    page.wait_for_selector(f"h1:has-text('{name}')")
    page.click("text=New lesion")
    page.fill("#id_label", label)
    page.select_option("#id_body_site", body_site)
    page.click("button:has-text('Create lesion')")
    page.wait_for_selector("h1:has-text('Upload images')")
