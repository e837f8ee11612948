"""Which package may import which: the arrows point one way.

* `skinportal/` (settings, URLs, Celery, errors, accounts, sessions, health) imports nothing from
  `diagnosis/`: the app imports the project's cross-cutting helpers, never the other way round
  (settings and URLs name the app by dotted string; the app registers its readiness check).
* In `diagnosis/`, only the `diagnosis/inference/` package imports `ml`: the one door into the model
  package.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.portal.helpers import REPO_ROOT


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


def test_the_project_package_imports_nothing_from_the_app():
    leaning = {
        str(path.relative_to(REPO_ROOT)): sorted(n for n in _imported(path) if n.split(".")[0] == "diagnosis")
        for path in _modules("skinportal")
    }
    assert {path: names for path, names in leaning.items() if names} == {}


def test_only_the_inference_module_imports_the_model_package():
    doors = {
        str(path.relative_to(REPO_ROOT))
        for path in _modules("diagnosis")
        if any(name.split(".")[0] == "ml" for name in _imported(path))
    }
    assert doors and all(door.startswith("diagnosis/inference/") for door in doors), sorted(doors)
