"""tests/pages_in_browser.py fails the pages it should, on small pages made to fail.

Needs Chromium, its driver and selenium: ``nox -s browser`` runs it before
checking the site; elsewhere it skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pages_in_browser import WIDTHS, check, chromium, missing, served

pytest.importorskip("selenium")
if missing():
    pytest.skip(str(missing()), allow_module_level=True)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><article>{}</article></body></html>
"""
#: A 1 x 1 PNG that decodes.
DOT = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4"
    "nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
)
WIDE = '<div style="width: 2000px">{}</div>'
TABLE = '<table><tr><td style="white-space: nowrap">{}</td></tr></table>'

#: Page -> its body and what each width must report (substrings), phone then desktop.
PAGES = {
    "fine": (
        f'<p>text <img src="{DOT}" alt="dot"></p>'
        '<div class="highlight"><pre>code</pre><button class="copybtn"></button></div>'
        f'<div style="overflow-x: auto">{WIDE.format("wide, in a box that scrolls")}</div>',
        [],
        [],
    ),
    "wide": (WIDE.format("too wide"), ["past the"], ["past the"]),
    "clipped": (
        f'<div style="overflow: hidden">{WIDE.format("cut off, not scrolled")}</div>',
        ["past the"],
        ["past the"],
    ),
    "wide-table": (
        f'<div style="overflow-x: auto">{TABLE.format("a row " * 200)}</div>',
        [],
        ["needs sideways scrolling"],
    ),
    "image": ('<img src="nothing.png" alt="none">', ["does not decode"], ["does not decode"]),
    "copy": ('<div class="highlight"><pre>code</pre></div>', ["copy button"], ["copy button"]),
    "console": (
        '<script>throw new Error("deliberate");</script>',
        ["console:"],
        ["console:"],
    ),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Path]]:
    html = tmp_path_factory.mktemp("html")
    for name, (body, *_) in PAGES.items():
        (html / f"{name}.html").write_text(PAGE.format(body))
    with served(html) as root, chromium() as driver:
        yield driver, root, tmp_path_factory.mktemp("screens")


@pytest.mark.parametrize("width", WIDTHS, ids=lambda w: w.name)
@pytest.mark.parametrize("page", PAGES)
def test_reports(site: tuple[Any, str, Path], page: str, width: Any) -> None:
    driver, root, screens = site
    expected = PAGES[page][1 if width.mobile else 2]
    problems = check(driver, f"{root}{page}.html", width, screens / f"{page}-{width.name}.png")
    assert (screens / f"{page}-{width.name}.png").stat().st_size > 0
    if not expected:
        assert problems == []
    for words in expected:
        assert any(words in problem for problem in problems), problems
