"""docs/design.md's table of where each concept lives matches the tree."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "design.md"


def table_paths():
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## 6. Where each concept lives"):]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| concept")]
    return [p for ln in rows for p in re.findall(r"`([^`]+)`", ln.split("|")[2])]


def test_every_path_in_the_table_exists():
    paths = table_paths()
    assert len(paths) > 30
    missing = [p for p in paths if not (ROOT / p.split(" ")[0]).exists()]
    assert not missing, f"docs/design.md names paths that do not exist: {missing}"


def test_every_package_and_top_module_is_listed():
    listed = {p.split(" ")[0].rstrip("/") for p in table_paths()}
    src = ROOT / "src" / "facemargin"
    packages = {str(p.parent.relative_to(ROOT)) for p in src.rglob("__init__.py") if p.parent != src}
    top = {str(p.relative_to(ROOT)) for p in src.glob("*.py")}

    def covered(path):  # a package is listed itself, by a parent folder or by one of its files
        return path in listed or any(path.startswith(q + "/") or q.startswith(path + "/") for q in listed)

    unlisted = sorted(p for p in packages | top if not covered(p))
    assert not unlisted, f"docs/design.md does not say where these live: {unlisted}"
