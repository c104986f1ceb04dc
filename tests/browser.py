"""Headless Chromium for end-to-end UI tests: Selenium driving the system chromium + chromedriver.

Nothing is downloaded: both binaries are given explicitly (Debian's ``chromium`` and
``chromium-driver`` packages, installed by ``.ci/run``) and Selenium Manager is kept offline.
Override the paths with ``LINEAGE_CHROMIUM`` / ``LINEAGE_CHROMEDRIVER``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, TypeVar

import pytest

CHROMIUM = os.environ.get("LINEAGE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LINEAGE_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
    "--window-size=1600,1100",
]

T = TypeVar("T")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_browser() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for what, path, package in (("chromium", CHROMIUM, "chromium"), ("chromedriver", CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{what} not found at {path} (apt-get install {package}, or set LINEAGE_{what.upper()})"
    return None


def require_browser() -> None:
    """Skip on a dev box without a browser; fail in CI (CI=true), where .ci/run installs one."""
    reason = missing_browser()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true but the browser test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


class Browser:
    """One headless Chromium session against a base URL, with screenshots into ``shots_dir``."""

    def __init__(self, base_url: str, shots_dir: Path, profile_dir: Path, timeout: float = 90):
        self.base_url, self.shots_dir, self.profile_dir, self.timeout = base_url, shots_dir, profile_dir, timeout
        self.shots: list[Path] = []
        self.driver = None
        self.nux_dismissed = False
        self._se_offline: str | None = None

    def __enter__(self) -> "Browser":
        self._se_offline = os.environ.get("SE_OFFLINE")
        os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never fetch drivers or browsers
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in FLAGS:
            opts.add_argument(flag)
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        opts.add_argument(f"--user-data-dir={self.profile_dir}")
        self.shots_dir.mkdir(parents=True, exist_ok=True)
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(self.timeout)
        return self

    def __exit__(self, *exc) -> None:
        if self.driver is not None:
            try:
                self.driver.quit()
            finally:
                self.driver = None
                shutil.rmtree(self.profile_dir, ignore_errors=True)
        if self._se_offline is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = self._se_offline

    # ---- navigation and waiting ---------------------------------------------------------------
    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def wait(self, what: str, probe: Callable[[], T], timeout: float | None = None, poll: float = 0.5) -> T:
        """Poll ``probe`` until it returns something truthy; a TimeoutError naming ``what`` otherwise."""
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

        deadline = time.monotonic() + (timeout or self.timeout)
        last: Exception | None = None
        while True:
            try:
                value = probe()
                if value:
                    return value
            except (StaleElementReferenceException, WebDriverException) as exc:  # page re-rendered
                last = exc
            if time.monotonic() > deadline:
                shot = self.screenshot("timeout")
                raise TimeoutError(f"timed out after {timeout or self.timeout:.0f}s waiting for {what} "
                                   f"on {self.driver.current_url} (screenshot {shot}); last error: {last}; "
                                   f"page text: {self.text()[:1500]!r}")
            time.sleep(poll)

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        try:
            return self.driver.find_element(By.TAG_NAME, "body").text
        except Exception:
            return ""

    def visible(self, xpath: str) -> list:
        from selenium.webdriver.common.by import By

        return [e for e in self.driver.find_elements(By.XPATH, xpath) if e.is_displayed()]

    def wait_text(self, text: str, timeout: float | None = None) -> None:
        """Wait until ``text`` is part of the page's visible text."""
        self.wait(f"text {text!r}", lambda: text in self.text(), timeout)

    def wait_exact(self, text: str, timeout: float | None = None):
        """Wait for a visible element whose own text is exactly ``text``; return it."""
        xpath = f"//*[normalize-space(text())={_xpath_literal(text)}]"
        return self.wait(f"an element reading {text!r}", lambda: (self.visible(xpath) or [None])[0], timeout)

    def button(self, label: str, within: str = "", timeout: float | None = None):
        """Wait for an enabled, visible button whose text is ``label`` (optionally inside XPath ``within``)."""
        xpath = f"{within}//button[normalize-space()={_xpath_literal(label)}]"
        return self.wait(f"button {label!r}", lambda: next(
            (b for b in self.visible(xpath) if b.is_enabled() and b.get_attribute("disabled") is None), None), timeout)

    def click(self, element) -> None:
        """Click, dismissing Dagster's one-off community dialog if it is in the way."""
        from selenium.common.exceptions import ElementClickInterceptedException

        try:
            element.click()
        except ElementClickInterceptedException:
            self.dismiss_nux(wait=2)
            element.click()

    def dismiss_nux(self, wait: float = 0) -> bool:
        """Skip the "Join the Dagster community" dialog (shown once, ~1 s after the first page load).

        Waits up to ``wait`` seconds for it, unless it was dismissed already (Dagster remembers that).
        """
        xpath = "//*[@role='dialog']//button[normalize-space()='Skip']"
        deadline = time.monotonic() + (0 if self.nux_dismissed else wait)
        while True:
            buttons = self.visible(xpath)
            if buttons:
                buttons[0].click()
                self.wait("the community dialog to close", lambda: not self.visible(xpath), timeout=15)
                self.nux_dismissed = True
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)

    def screenshot(self, name: str) -> Path:
        path = self.shots_dir / f"{len(self.shots) + 1:02d}_{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)
        return path


def _xpath_literal(s: str) -> str:
    if "'" not in s:
        return f"'{s}'"
    if '"' not in s:
        return f'"{s}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in s.split("'")) + ")"
