"""Every page of the built docs, as a reader sees it in headless Chromium.

    python -m tests.pages_in_browser docs/_build/html docs/_build/screens
    nox -s browser

Each page is loaded over HTTP at a phone's width (390 px) and a desktop's
(1280 px), a full-page screenshot of it is kept, and the page fails if:

- an ``<img>`` does not decode (a plot missing from the build, a broken path);
- an element reaches past the viewport, unless a scroll container (an
  ancestor with ``overflow-x: auto`` or ``scroll``, such as furo's table
  wrapper, but not one around the whole content column) holds it: what
  sticks out of an ``overflow: hidden`` box is cut off, which is worse than
  a page that scrolls sideways;
- an element of the page's content reaches past the content's column, with
  the same exception (at 1280 px a wide element runs into the margin, and
  over the table of contents where it is shown, long before it reaches the
  viewport's edge);
- at desktop width, a table needs sideways scrolling: its wrapper keeps the
  page whole, but a reader with room for the whole table should see it whole
  (at phone width scrolling inside the frame is the best there is);
- a code block has no copy button (sphinx-copybutton adds them from its
  script: a block it does not select, or a page without the script, shows none);
- the browser's console logs an error (a script that throws, a 404).

Chromium and its driver come from Debian: ``apt-get install -y chromium
chromium-driver``. selenium drives them; it is imported only once they are
found, so that this module imports where they are not.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import http.server
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

INSTALL = "apt-get install -y chromium chromium-driver"


class Width(NamedTuple):
    name: str
    width: int
    height: int
    #: Emulate a phone: the page's viewport meta tag applies, as on a real one.
    mobile: bool


WIDTHS = (Width("phone", 390, 844, True), Width("desktop", 1280, 800, False))

#: Build folders that hold no pages of their own.
NOT_PAGES = {"_static", "_sources", "_images", "_downloads", "_generated", "screens"}

#: A page's checks, run in the page once it has loaded. Returns one list of
#: problems per check. ``arguments[0]`` says whether the page is at phone
#: width; the last argument is execute_async_script's callback.
CHECKS = r"""
const mobile = arguments[0];
const done = arguments[arguments.length - 1];
const viewport = document.documentElement.clientWidth;
const SLACK = 1;  // sub-pixel rounding of borders
// furo's content column (the article and its margins), or the article.
const frame = document.querySelector(".content") || document.querySelector("article");
const column = frame ? frame.getBoundingClientRect() : null;

function name(el) {
  let text = el.tagName.toLowerCase();
  if (el.id) text += "#" + el.id;
  if (typeof el.className === "string" && el.className.trim())
    text += "." + el.className.trim().split(/\s+/).join(".");
  const words = (el.textContent || "").trim().replace(/\s+/g, " ").slice(0, 50);
  return words ? `${text} "${words}"` : text;
}

// An element that a scroll container holds can be scrolled to, not cut off.
// Not a container around the whole content column: at phone widths furo
// makes its .content scroll sideways, which would excuse anything in it,
// and a reader would have to scroll the whole page to see one wide element.
function scrolled(el) {
  for (let up = el.parentElement; up; up = up.parentElement) {
    if (frame && up.contains(frame)) return false;
    const x = getComputedStyle(up).overflowX;
    if (x === "auto" || x === "scroll") return true;
  }
  return false;
}

// furo's navigation drawers wait off-screen (position: fixed, wholly outside
// the viewport) until opened: they are not page content sticking out.
function parked(el) {
  for (let up = el; up; up = up.parentElement) {
    if (getComputedStyle(up).position !== "fixed") continue;
    const box = up.getBoundingClientRect();
    return box.right <= SLACK || box.left >= viewport - SLACK;
  }
  return false;
}

// The outermost elements past [left, right], each once with how far.
function past(elements, left, right, where) {
  const found = [];
  const reported = new Set();
  for (const el of elements) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    const over = Math.max(box.right - right, left - box.left);
    if (over <= SLACK) continue;
    if (scrolled(el) || parked(el)) continue;
    let up = el.parentElement;
    while (up && !reported.has(up)) up = up.parentElement;
    reported.add(el);
    if (up) continue;
    found.push(`${name(el)} is ${Math.round(box.width)} px wide, ` +
               `${Math.round(over)} px past the ${where}`);
  }
  return found;
}

async function images() {
  const found = [];
  for (const img of document.images) {
    img.loading = "eager";  // a lazy image below the fold would not load at all
    try { await img.decode(); } catch (e) { /* naturalWidth says it */ }
    if (img.naturalWidth === 0) found.push(`image ${img.getAttribute("src")} does not decode`);
  }
  return found;
}

function copyButtons() {
  const found = [];
  for (const pre of document.querySelectorAll("pre")) {
    const block = pre.closest("div.highlight") || pre.parentElement;
    if (!block.querySelector("button.copybtn"))
      found.push(`code block without a copy button: ${name(pre)}`);
  }
  return found;
}

// A table wider than the box that scrolls it, by how much.
function scrolledTables() {
  const found = [];
  for (const table of document.querySelectorAll("table")) {
    let box = table.parentElement;
    while (box && !["auto", "scroll"].includes(getComputedStyle(box).overflowX))
      box = box.parentElement;
    if (!box) continue;  // then the frame checks judge it
    const over = table.getBoundingClientRect().width - box.clientWidth;
    if (over > SLACK)
      found.push(`${name(table)} needs sideways scrolling: ${Math.round(over)} px ` +
                 `wider than its ${box.clientWidth} px frame`);
  }
  return found;
}

images().then((broken) => done({
  images: broken,
  viewport: past(document.body.querySelectorAll("*"), 0, viewport, `${viewport} px viewport`),
  column: column
    ? past(frame.querySelectorAll("*"), column.left, column.right,
           `${Math.round(column.width)} px content column`)
    : [],
  tables: mobile ? [] : scrolledTables(),
  copy: copyButtons(),
}));
"""


def pages(html: Path) -> list[Path]:
    """Every page of the build, relative to it, in a stable order."""
    return sorted(
        p.relative_to(html)
        for p in html.rglob("*.html")
        if not NOT_PAGES.intersection(p.relative_to(html).parts)
    )


@contextlib.contextmanager
def served(html: Path) -> Iterator[str]:
    """The build over HTTP on a free loopback port, as a host would serve it.

    Not file://, where Chromium blocks some of a theme's requests and logs
    errors that no reader of the hosted site would see.
    """

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(html))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()


def missing() -> str | None:
    """What is missing to run the checks, with how to install it, or None."""
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not on PATH: {INSTALL}"
    return None


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver from PATH: selenium would otherwise try to download one.
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def check(driver: Any, url: str, width: Width, screen: Path) -> list[str]:
    """Loads ``url`` at ``width``, keeps its screenshot in ``screen``, returns its problems."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {
            "width": width.width,
            "height": width.height,
            "deviceScaleFactor": 1,
            "mobile": width.mobile,
        },
    )
    driver.get_log("browser")  # what the previous page logged is not this page's
    driver.get(url)
    found = driver.execute_async_script(CHECKS, width.mobile)
    problems = [problem for check in found.values() for problem in check]
    problems += [
        f"console: {entry['message']}"
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and not _asks_for_icon(entry["message"])
    ]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    screen.write_bytes(base64.b64decode(shot["data"]))
    return problems


def _asks_for_icon(message: str) -> bool:
    """The browser's own request for /favicon.ico, made of any site that names no icon.

    No page asked for it, and a host answers it or not: not a page's error.
    """
    return "/favicon.ico " in message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("html", type=Path, help="the built HTML docs")
    parser.add_argument("screens", type=Path, help="where the screenshots go")
    args = parser.parse_args(argv)
    absent = missing()
    if absent:
        print(f"pages_in_browser: skipped: {absent}")
        return 0
    found = pages(args.html)
    if not found:
        print(f"pages_in_browser: no pages under {args.html}: build the docs first")
        return 1
    args.screens.mkdir(parents=True, exist_ok=True)
    start, failed = time.monotonic(), 0
    with served(args.html) as root, chromium() as driver:
        for page in found:
            for width in WIDTHS:
                screen = args.screens / f"{page.with_suffix('')}-{width.width}.png"
                screen.parent.mkdir(parents=True, exist_ok=True)
                problems = check(driver, root + page.as_posix(), width, screen)
                failed += bool(problems)
                status = "FAIL" if problems else "ok"
                print(f"{status:4} {page} at {width.width} px ({width.name})")
                for problem in problems:
                    print(f"       {problem}")
    checked = len(found) * len(WIDTHS)
    print(
        f"pages_in_browser: {checked - failed} of {checked} page views pass "
        f"({len(found)} pages at {' and '.join(f'{w.width}' for w in WIDTHS)} px) "
        f"in {time.monotonic() - start:.0f} s; screenshots in {args.screens}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
