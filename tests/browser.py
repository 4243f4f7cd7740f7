"""Headless Chromium for page tests: the rendered DOM of a URL, and screenshots.

Uses Debian's ``chromium`` command line (no Python dependency). A page tells the tests how its
render went through ``<body data-state>``: ``"ready"`` once it has rendered, ``"error: <message>"``
after a script error or a failed fetch (``services/dashboard.html`` does this);
:func:`rendered_dom` raises :class:`PageError` unless the state is ``"ready"``. With ``net_log``
it also keeps Chromium's network log, and :func:`page_requests` lists what the page fetched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
MISSING = (
    "headless Chromium is needed for the page tests: `make test` installs it "
    "(apt-get install chromium), or set CHROMIUM=/path/to/chromium"
)


class PageError(AssertionError):
    """The page did not render: a script error, a failed fetch, or it never became ready."""


def chromium() -> str:
    """The Chromium executable: ``$CHROMIUM``, else the first of :data:`CANDIDATES` on PATH."""
    configured = os.environ.get("CHROMIUM")
    if configured:
        if shutil.which(configured) is None:
            raise FileNotFoundError(f"CHROMIUM={configured} is not an executable. {MISSING}")
        return configured
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(MISSING)


def _run(args: list[str], timeout_s: float) -> str:
    """Run headless Chromium with a throwaway profile; its stdout, or an error with its stderr."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--mute-audio",
            f"--user-data-dir={profile}",
            *args,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise PageError(f"chromium exited {done.returncode}: {tail}")
    return done.stdout


class _BodyAttrs(HTMLParser):
    """The attributes of the first ``<body>`` tag."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body" and self.attrs is None:
            self.attrs = {name: value or "" for name, value in attrs}


def body_attrs(dom: str) -> dict[str, str]:
    """The ``<body>`` attributes of a dumped DOM (empty when there is no body)."""
    parser = _BodyAttrs()
    parser.feed(dom)
    return parser.attrs or {}


class _ElementText(HTMLParser):
    """The text inside the first element with a given id."""

    VOID = frozenset({"area", "br", "col", "hr", "img", "input", "link", "meta", "source", "wbr"})

    def __init__(self, element_id: str) -> None:
        super().__init__()
        self.element_id = element_id
        self.depth = 0  # > 0 while inside the element
        self.done = False
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.done or tag in self.VOID:
            return
        if self.depth:
            self.depth += 1
        elif ("id", self.element_id) in attrs:
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag not in self.VOID:
            self.depth -= 1
            self.done = self.depth == 0

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.parts.append(data)


def element_text(dom: str, element_id: str) -> str | None:
    """The text of the element ``id=element_id``: its text nodes joined by single spaces (so
    table cells stay apart); None when there is no such element."""
    parser = _ElementText(element_id)
    parser.feed(dom)
    if not parser.depth and not parser.done:
        return None
    return " ".join(" ".join(parser.parts).split())


def without_scripts(dom: str) -> str:
    """The DOM less its ``<script>`` elements: what the page rendered, not its source."""
    return re.sub(r"<script\b[^>]*>.*?</script>", "", dom, flags=re.S | re.I)


def page_state(dom: str) -> str:
    """``<body data-state>``: ``"ready"``, ``"loading"``, ``"error: ..."``, or ``""``."""
    return body_attrs(dom).get("data-state", "")


def rendered_dom(
    url: str,
    *,
    budget_ms: int = 3000,
    width: int = 1280,
    height: int = 900,
    require_ready: bool = True,
    timeout_s: float = 60.0,
    net_log: Path | None = None,
) -> str:
    """The DOM of ``url`` after its scripts ran for ``budget_ms`` of virtual time (fetches
    complete first). With ``require_ready``, raise :class:`PageError` unless the page says
    ``data-state="ready"``, naming the state it reached (its error message, if any). With
    ``net_log``, Chromium writes its network log there (read it with :func:`page_requests`)."""
    logging = (
        [] if net_log is None else [f"--log-net-log={net_log}", "--net-log-capture-mode=Default"]
    )
    dom = _run(
        [
            f"--window-size={width},{height}",
            f"--virtual-time-budget={budget_ms}",
            *logging,
            "--dump-dom",
            url,
        ],
        timeout_s,
    )
    state = page_state(dom)
    if require_ready and state != "ready":
        raise PageError(f"{url} did not render: body data-state={state or '(none)'!r}")
    return dom


def page_requests(net_log: Path) -> list[str]:
    """The URLs the page itself requested, in order, from a network log ``rendered_dom`` wrote:
    every request with an initiator origin (the page's documents, scripts, styles, fetches).
    Chromium's own background requests (component updates, accounts) and the top navigation
    carry none ("not an origin"), so they are left out."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        initiator = params.get("initiator")
        if event["type"] == start and initiator and initiator != "not an origin":
            urls.append(str(params["url"]))
    return urls


def page_height(url: str, *, width: int = 1280, budget_ms: int = 3000) -> int:
    """The page's full height at ``width``: ``<body data-height>`` if the page sets it, else
    the 900 px of a plain window."""
    found = body_attrs(rendered_dom(url, width=width, budget_ms=budget_ms)).get("data-height", "")
    return int(found) if re.fullmatch(r"\d+", found) else 900


def screenshot(
    url: str,
    out: Path,
    width: int = 1280,
    height: int | None = None,
    *,
    scale: float = 1.0,
    budget_ms: int = 3000,
    timeout_s: float = 60.0,
) -> Path:
    """Save a PNG of ``url`` at ``width`` x ``height`` CSS pixels (``height=None``: the whole
    page, measured first, which also checks that it renders), times ``scale`` device pixels."""
    if height is None:
        height = page_height(url, width=width, budget_ms=budget_ms)
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [
            f"--window-size={width},{height}",
            f"--force-device-scale-factor={scale}",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={out.resolve()}",
            url,
        ],
        timeout_s,
    )
    if not out.is_file():
        raise PageError(f"chromium wrote no screenshot of {url} to {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.browser URL OUT.png [--width W] [--height H] [--scale S]``: a
    screenshot of a page (the whole page unless ``--height``), e.g. of the live dashboard."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.browser", description=main.__doc__)
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    print(screenshot(args.url, args.out, args.width, args.height, scale=args.scale))


if __name__ == "__main__":
    main()
