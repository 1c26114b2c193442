"""The console page in a real headless Chromium (Debian's package, driven by Playwright; no browser download).

`console(admin_url)` opens the page and records every request it makes, so that tests can check that nothing
goes to another host and the token never appears in a URL. Screenshots go to test-results/console/.
"""

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).parents[1] / "test-results" / "console"
# Without these Chromium reaches for Google's hosts at start (updates, sync, field trials): refused here, and no
# business of a test that checks the page talks to its own host only.
QUIET = [
    "--headless=new",
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]


@dataclass
class Console:
    page: object  # playwright.sync_api.Page
    admin_url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def log_in(self, token: str) -> None:
        self.page.fill("#token", token)
        self.page.click("#login button[type=submit]")

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def wait_text(self, selector: str, pattern: str, timeout_s: float = 60) -> str:
        """Wait until `selector`'s text matches `pattern` (a regular expression)."""
        self.page.wait_for_function(
            "([selector, pattern]) => new RegExp(pattern).test(document.querySelector(selector)?.innerText ?? '')",
            arg=[selector, pattern],
            timeout=timeout_s * 1000,
        )
        return self.text(selector)

    def fact(self, name: str) -> str:
        return self.text(f'dd[data-fact="{name}"]')

    def line_pixels(self, canvas: str) -> int:
        """Pixels of a chart drawn in its first series' colour (#2457a6): the line is on the canvas, not only in
        the data behind it."""
        return self.page.evaluate(
            """(id) => {
                const canvas = document.getElementById(id);
                const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
                let count = 0;
                for (let i = 0; i < data.length; i += 4) {
                    const near = Math.abs(data[i] - 36) + Math.abs(data[i + 1] - 87) + Math.abs(data[i + 2] - 166);
                    if (near < 40 && data[i + 3] > 200) count++;
                }
                return count;
            }""",
            canvas,
        )

    def other_hosts(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(self.admin_url + "/")]

    def confirm(self, action: str) -> None:
        """Press an engine button, then the dialog's confirmation."""
        self.page.click(f'button[data-action="{action}"]')
        self.page.wait_for_selector("#confirm[open]")
        self.page.click("#confirm-yes")


def browser_or_skip():
    """Playwright's Chromium driver on Debian's Chromium; a loud skip where `make test` could not install it."""
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.skip(f"SKIPPED LOUDLY: no Chromium at {CHROMIUM}: `make test` installs Debian's chromium (needs root)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


@contextmanager
def console(admin_url: str) -> Iterator[Console]:
    with browser_or_skip() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            seen = Console(page, admin_url)
            page.on("request", lambda request: seen.requests.append(request.url))
            page.on("console", lambda message: message.type == "error" and seen.console_errors.append(message.text))
            page.goto(admin_url + "/")
            yield seen
        finally:
            browser.close()


def number(text: str) -> float:
    """The first number in a readout such as '12.5 tok/s'."""
    match = re.search(r"-?\d+(?:\.\d+)?", text)
    assert match, f"no number in {text!r}"
    return float(match.group())
