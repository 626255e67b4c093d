"""Look at every page of a built book in headless Chromium, offline, as a reader would.

    python tools/browser_check.py _build/html [--screenshots _build/screenshots] [--width 1280]

Each page is loaded from ``file://`` with the network cut off (a dead proxy, no name resolution,
and the DevTools "offline" switch), at a window ``width`` px wide, after MathJax has typeset it.
A problem is reported when

* raw TeX is left in the rendered text (``\\(``, ``\\[``, ``$$``, ``\\begin{``; code excluded),
* JavaScript throws or logs an error, or a resource (script, style, font, image) fails to load or
  asks for the network,
* an element of the article is wider than the content column, or scrolls sideways in it,
* an image does not load, a figure's image has no description (no alt text, or its file name), or a
  local link points to a missing file or anchor,
* a page is longer than :data:`MAX_SCREENS` windows (the parts in :data:`LONG_PARTS`: their own
  limit), a numbered figure is cited by no link of the book (``{numref}``/``{ref}``), or a numbered
  table (book/_ext numbers the printed ones) is neither cited nor introduced by the text right before
  it (a sentence ending in a colon, or naming a table; a table right after another continues its run).

A screenshot of each page's first screen is saved when a folder is given. The browser is driven
through the Chrome DevTools Protocol over a pipe (``--remote-debugging-pipe``): no driver binary,
no port, no third-party package. Exit status 1 when a problem was found.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER_ENV = "OOD_CHROMIUM"  # a browser binary to use instead of the first of BROWSERS on PATH
SKIP_DIRS = ("_static", "_sources", "_images", "_downloads")
# A chapter a reader finishes: at most this many windows (900 px high) long at the check's 1,280 px
# width (about 12 at 1,400 px, where the column is wider); reference parts may be longer (their
# tables are looked up, not read through).
MAX_SCREENS = 13
LONG_PARTS = {"Appendix": 32}
INSPECT_JS = Path(__file__).with_name("browser_inspect.js").read_text()  # run in each loaded page


@dataclass(frozen=True)
class Problem:
    """One thing a reader would see go wrong on ``page`` (a path relative to the HTML folder)."""

    page: str
    kind: str  # raw-tex, js-error, resource, network, too-wide, scrolls, image, link
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: [{self.kind}] {self.detail}"


def find_browser() -> str | None:
    """The Chromium binary: ``$OOD_CHROMIUM``, else the first of :data:`BROWSERS` on PATH, else None."""
    if os.environ.get(BROWSER_ENV):
        return shutil.which(os.environ[BROWSER_ENV])
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


class Browser:
    """A headless Chromium and one page in it, spoken to over the DevTools pipe (fds 3 and 4)."""

    def __init__(self, binary: str, width: int, height: int, timeout: float = 60.0) -> None:
        self.timeout, self.events, self._next, self._buf = timeout, [], 0, b""
        self.profile = tempfile.mkdtemp(prefix="ood-chromium-")
        to_browser, self._w = os.pipe()
        self._r, from_browser = os.pipe()

        def child() -> None:  # the protocol's fixed descriptors: 3 = commands in, 4 = replies out
            hi_in, hi_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser))
            os.dup2(hi_in, 3)
            os.dup2(hi_out, 4)

        args = [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--mute-audio",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars",
                f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"]
        self.log = Path(self.profile) / "stderr.log"  # a file, not a pipe: a chatty browser never blocks
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, preexec_fn=child, close_fds=False, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log)
        for fd in (to_browser, from_browser):  # the browser's ends
            os.close(fd)
        try:
            self._open_page(width, height)
        except BaseException:
            self.close()
            raise

    def _open_page(self, width: int, height: int) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.page_id = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", page=True)
        self.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                        "uploadThroughput": -1}, page=True)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                          "mobile": False}, page=True)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"no answer from the browser in {self.timeout:.0f} s")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                err = self.log.read_text(errors="replace")[-2000:] if self.log.is_file() else ""
                raise RuntimeError(f"the browser closed its DevTools pipe (exit {self.proc.poll()}): {err}")
            self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, page: bool = False) -> dict:
        """Send one command, to the page when ``page`` (else to the browser); events read meanwhile
        are kept in :attr:`events`."""
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if page:
            msg["sessionId"] = self.page_id
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline))

    def evaluate(self, expression: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                      page=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"inspection script failed: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._w, self._r):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


def pages(html: Path) -> list[Path]:
    """Every built page: the HTML files outside the asset folders."""
    return sorted(p for p in html.rglob("*.html")
                  if not any(part in SKIP_DIRS for part in p.relative_to(html).parts))


def redirect_target(path: Path) -> str | None:
    """The page a redirect stub (``<meta http-equiv="refresh" content="0; url=…">``) sends the reader
    to, or None for a page of its own. A stub is not loaded: it navigates away while it is inspected."""
    head = path.read_text(errors="replace")[:2000]
    m = re.search(r"<meta\s+http-equiv=[\"']refresh[\"']\s+content=[\"']\s*\d+\s*;\s*url=([^\"']+)[\"']", head, re.I)
    return unquote(m.group(1).strip()) if m else None


def _event_problems(page: str, events: list[dict]) -> list[Problem]:
    out = []
    urls = {e["params"]["requestId"]: e["params"]["request"]["url"]
            for e in events if e.get("method") == "Network.requestWillBeSent"}
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text", "")
            out.append(Problem(page, "js-error", f"{text.splitlines()[0] if text else '?'} ({d.get('url', '')})"))
        elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
            out.append(Problem(page, "js-error", "console.error: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", []))))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error" and p["entry"].get("source") != "network":
            out.append(Problem(page, "js-error", f"{p['entry'].get('text')} ({p['entry'].get('url', '')})"))
        elif m == "Network.requestWillBeSent" and not p["request"]["url"].startswith(("file:", "data:", "blob:")):
            out.append(Problem(page, "network", f"asks the network for {p['request']['url']}"))
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            url = urls.get(p.get("requestId"), "?")
            if not url.startswith(("file:", "data:", "blob:")) or p.get("type") == "Image":
                continue  # a network request, or an image: each reported once, above or by the page
            out.append(Problem(page, "resource", f"{p.get('type', '?')} {url} failed to load: {p.get('errorText')}"))
    return out


def _length_problems(found: dict[str, dict]) -> list[Problem]:
    out = []
    for page, info in found.items():
        limit = LONG_PARTS.get(info.get("part", ""), MAX_SCREENS)
        if info.get("screens", 0) > limit:
            out.append(Problem(page, "too-long", f"{info['screens']:.1f} windows long (at most {limit} in "
                                                 f"{info.get('part') or 'this part'})"))
    return out


def _citation_problems(html: Path, found: dict[str, dict]) -> list[Problem]:
    """Numbered figures and tables no link of the book points to."""
    cited = set()
    for info in found.values():
        for href in info.get("cites", []):
            url = urlsplit(href)
            try:
                rel = Path(unquote(url.path)).resolve().relative_to(html.resolve()).as_posix()
            except ValueError:
                continue
            cited.add((rel, unquote(url.fragment)))
    out = [Problem(page, "not-cited", f"{number or 'figure'} (#{fid}) is cited nowhere in the book")
           for page, info in found.items() for fid, number in info.get("figures", []) if (page, fid) not in cited]
    return out + [Problem(page, "not-cited", f"{number} (#{tid}) is neither cited nor introduced by the text before it")
                  for page, info in found.items() for tid, number, intro in info.get("tables", [])
                  if not intro and (page, tid) not in cited]


def _link_problems(html: Path, found: dict[str, dict]) -> list[Problem]:
    ids = {page: set(info["ids"]) for page, info in found.items()}
    out = []
    for page, info in found.items():
        for href in sorted(set(info["links"])):
            url = urlsplit(href)
            target = Path(unquote(url.path))
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                out.append(Problem(page, "link", f"{href} points to a missing file"))
                continue
            try:
                rel = target.resolve().relative_to(html.resolve()).as_posix()
            except ValueError:
                out.append(Problem(page, "link", f"{href} points outside the book"))
                continue
            anchor = unquote(url.fragment)
            if anchor and rel in ids and anchor not in ids[rel]:
                out.append(Problem(page, "link", f"{href}: no element with id {anchor!r} on {rel}"))
    return out


def check_book(html: Path, screenshots: Path | None = None, width: int = 1280, height: int = 900,
               browser: str | None = None) -> list[Problem]:
    """Load every page of the built book ``html`` offline in Chromium; the problems a reader would see."""
    html = Path(html).resolve()
    if not (html / "index.html").is_file() and not pages(html):
        raise FileNotFoundError(f"no built book at {html} (no HTML pages there): run `make book` first")
    binary = browser or find_browser()
    if binary is None:
        raise FileNotFoundError(f"no Chromium found (tried {', '.join(BROWSERS)} on PATH, and ${BROWSER_ENV})")
    if screenshots is not None:
        Path(screenshots).mkdir(parents=True, exist_ok=True)
    problems: list[Problem] = []
    found: dict[str, dict] = {}
    b = Browser(binary, width, height)
    try:
        for path in pages(html):
            page = path.relative_to(html).as_posix()
            target = redirect_target(path)
            if target is not None:  # a stub that sends the reader on (index.html): its target must exist
                if not (path.parent / target).is_file():
                    problems.append(Problem(page, "link", f"redirects to a missing page {target}"))
                continue
            b.events.clear()
            b.send("Page.navigate", {"url": path.as_uri()}, page=True)
            b.wait_for("Page.loadEventFired")
            info = b.evaluate(INSPECT_JS)
            b.send("Runtime.evaluate", {"expression": "window.scrollTo(0, 0)"}, page=True)
            problems += _event_problems(page, b.events)
            problems += [Problem(page, kind, detail) for kind, detail in info["problems"]]
            found[page] = info
            if screenshots is not None:
                shot = b.send("Page.captureScreenshot", {"format": "png"}, page=True)["data"]
                (Path(screenshots) / (page.replace("/", "__").removesuffix(".html") + ".png")).write_bytes(
                    base64.b64decode(shot))
    finally:
        b.close()
    return problems + _link_problems(html, found) + _length_problems(found) + _citation_problems(html, found)


def summary(problems: list[Problem], per_kind: int = 3) -> str:
    """The problems grouped by page and kind: a count and the first ``per_kind`` details of each."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in problems:
        groups.setdefault((p.page, p.kind), []).append(p.detail)
    lines = []
    for (page, kind), details in sorted(groups.items()):
        lines.append(f"{page}: {len(details)} × {kind}")
        lines += [f"    {d[:200]}" for d in details[:per_kind]] + (["    …"] if len(details) > per_kind else [])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path, help="the built book's HTML folder (_build/html)")
    ap.add_argument("--screenshots", type=Path, default=None, help="save each page's first screen here")
    ap.add_argument("--width", type=int, default=1280, help="window width in px (default 1280)")
    ap.add_argument("--all", action="store_true", help="print every problem, not a summary per page and kind")
    args = ap.parse_args(argv)
    problems = check_book(args.html, args.screenshots, args.width)
    n_pages = len(pages(args.html))
    print("\n".join(map(str, problems)) if args.all else summary(problems))
    print(f"{n_pages} pages, {len(problems)} problems" + (f"; screenshots in {args.screenshots}" if args.screenshots else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
