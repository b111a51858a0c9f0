"""Every relative link in the README, docs/ and the gallery points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_in_the_documentation_resolve():
    pages = [*ROOT.glob("*.md"), *ROOT.glob("docs/**/*.md"), *ROOT.glob("analyses/*.md")]
    assert len(pages) > 10
    broken = [
        f"{page.relative_to(ROOT)} -> {link}"
        for page in pages
        for link in LINK.findall(page.read_text())
        if not link.startswith(("http://", "https://", "mailto:")) and not (page.parent / link).exists()
    ]
    assert not broken, "broken links:\n" + "\n".join(broken)
