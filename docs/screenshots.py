"""Every page of the built site looked at as a reader would: served over HTTP, opened in headless
Chromium, screenshotted, and checked for what a broken page shows.

    python docs/screenshots.py   # after `mkdocs build`; `make docs-screenshots` does both

For each page of build/site: a full-width screenshot into build/screenshots/<page>.png, and the
DOM Chromium renders, checked for: every Markdown table and code fence of the source page became
a <table> / <pre> (not a paragraph of pipes or backticks), every image it shows is served and is a
PNG of non-zero size, and no "```" or "| --- |" leaked into the text. Exit 1 naming each page and
what is wrong.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import struct
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "site"
DOCS = ROOT / "docs"
SHOTS = ROOT / "build" / "screenshots"
FENCE = re.compile(r"^```", re.MULTILINE)
TABLE_RULE = re.compile(r"^\|( *:?-+:? *\|)+ *$", re.MULTILINE)


class _Page(HTMLParser):
    """Counts of what rendered, and the visible text of the article."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = self.pres = 0
        self.images: list[str] = []
        self.text: list[str] = []
        self._in_article = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "article":
            self._in_article += 1
        if not self._in_article:
            return
        if tag == "table":
            self.tables += 1
        elif tag == "pre":
            self.pres += 1
        elif tag == "img" and attributes.get("src"):
            self.images.append(attributes["src"])

    def handle_endtag(self, tag):
        if tag == "article":
            self._in_article -= 1

    def handle_data(self, data):
        if self._in_article:
            self.text.append(data)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    raise SystemExit("docs/screenshots.py: no chromium on PATH (Debian: apt-get install chromium)")


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", data[16:24])


def _serve() -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _source(page: Path) -> Path | None:
    """docs/x/y.md for build/site/x/y/index.html (docs/index.md for the home page)."""
    relative = page.parent.relative_to(SITE)
    candidate = DOCS / (f"{relative}.md" if str(relative) != "." else "index.md")
    return candidate if candidate.exists() else None


def _check(url: str, dom: str, source: Path | None) -> list[str]:
    parsed = _Page()
    parsed.feed(dom)
    problems = []
    text = "".join(parsed.text)
    if source is not None:
        markdown = source.read_text()
        fences = len(FENCE.findall(markdown)) // 2
        tables = len(TABLE_RULE.findall(markdown))
        if parsed.pres < fences:
            problems.append(f"{fences} code blocks in the source, {parsed.pres} rendered")
        if parsed.tables < tables:
            problems.append(f"{tables} tables in the source, {parsed.tables} rendered")
    if "```" in text:
        problems.append("a code fence leaked into the text")
    if TABLE_RULE.search(text):
        problems.append("a table's rule line leaked into the text")
    for src in parsed.images:
        image_url = urllib.parse.urljoin(url, src)
        try:
            data = urllib.request.urlopen(image_url, timeout=10).read()
        except OSError as exc:
            problems.append(f"image {src} not served ({exc})")
            continue
        size = _png_size(data) if src.endswith(".png") else (1, 1)
        if not size or 0 in size:
            problems.append(f"image {src} is not a PNG with pixels")
    return problems


def main() -> int:
    if not (SITE / "index.html").exists():
        print("docs/screenshots.py: no built site in build/site (run `make docs` first)", file=sys.stderr)
        return 2
    chromium = _chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    server, base = _serve()
    pages = sorted(p for p in SITE.rglob("index.html") if "assets" not in p.parts and "search" not in p.parts)
    failures = 0
    try:
        for page in pages:
            relative = page.parent.relative_to(SITE)
            url = base + ("" if str(relative) == "." else f"{relative}/")
            name = "home" if str(relative) == "." else str(relative).replace("/", "__")
            flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     "--virtual-time-budget=3000"]
            shot = subprocess.run([*flags, f"--screenshot={SHOTS / name}.png", "--window-size=1280,2400", url],
                                  capture_output=True, text=True, timeout=120)
            dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
            problems = _check(url, dom, _source(page))
            if shot.returncode or not (SHOTS / f"{name}.png").exists():
                problems.append(f"no screenshot ({shot.stderr.strip().splitlines()[-1:] or shot.returncode})")
            failures += bool(problems)
            print(f"{'ok  ' if not problems else 'FAIL'} {relative}: {'; '.join(problems) or 'rendered'}")
    finally:
        server.shutdown()
    print(f"{len(pages)} pages, {failures} with problems; screenshots in {SHOTS.relative_to(ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
