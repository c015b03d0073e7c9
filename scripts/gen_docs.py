#!/usr/bin/env python
"""Regenerate the reference pages in docs/ that are derived from code (tests fail when they drift)."""

from pathlib import Path

from rlmec_core.config import schema_markdown
from rlmec_core.schemas import artifacts_markdown

ROOT = Path(__file__).resolve().parents[1]

PAGES = {
    ROOT / "docs" / "config.md": schema_markdown,
    ROOT / "docs" / "artifacts.md": artifacts_markdown,
}

if __name__ == "__main__":
    for path, make in PAGES.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(make(), encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
