"""Rewrite the sample answers in docs/api.md from a real run against the shipped model.

    .venv/bin/python scripts/api_samples.py          # rewrite the samples (then review and commit docs/api.md)
    .venv/bin/python scripts/api_samples.py --check  # only compare; exit 1 when a sample is stale

Runs tests/portal/test_api_docs.py's walkthrough (the page's curl steps, made with Django's test
client on a fresh test database, served by the model that ml/models/CURRENT names) with
UPDATE_API_SAMPLES=1, which replaces the JSON under each `<!-- sample: NAME -->` marker with
the answer, volatile fields (tokens, timestamps, uuids, hashes, timings) set to fixed example
values. Run it whenever the served model or an API answer changes: the test fails until then.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
API_DOC = REPO_ROOT / "docs" / "api.md"
TEST = "tests/portal/test_api_docs.py::test_the_api_pages_samples_are_what_the_shipped_model_answers"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; do not rewrite docs/api.md")
    args = parser.parse_args(argv)
    before = API_DOC.read_text(encoding="utf-8")
    env = {**os.environ, "UPDATE_API_SAMPLES": "0" if args.check else "1"}
    # -rs: a skip (no shipped model yet) says why.
    command = [sys.executable, "-m", "pytest", TEST, "-q", "-rs", "-p", "no:cacheprovider"]
    result = subprocess.run(command, check=False, cwd=REPO_ROOT, env=env)
    if args.check:
        return result.returncode
    changed = API_DOC.read_text(encoding="utf-8") != before
    if result.returncode != 0:
        print(f"scripts/api_samples.py: the walkthrough failed (exit {result.returncode}); see above", file=sys.stderr)
        return result.returncode
    print(
        "docs/api.md: samples rewritten (review with `git diff docs/api.md`)"
        if changed
        else "docs/api.md: samples already up to date"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
