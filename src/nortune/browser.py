"""Open a report in real headless Chromium: console errors, broken images, a screenshot.

Uses Debian's chromium + chromium-driver through Selenium; nothing is downloaded. ``make setup``
installs them. A missing browser is an error that says how to install it, never a silent skip;
``NORTUNE_BROWSER_CHECK=off`` is the explicit, recorded opt-out.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,2000")


OPT_OUT_ENV = "NORTUNE_BROWSER_CHECK"
MISSING = ("the report's browser check needs Chromium and ChromeDriver, which are not installed: run "
           "`sudo apt-get install chromium chromium-driver` (Debian/Ubuntu; `make setup` does it as root), "
           f"or set {OPT_OUT_ENV}=off to write the report without the check")


def available() -> bool:
    return shutil.which("chromium") is not None and shutil.which("chromedriver") is not None


def opted_out() -> bool:
    import os

    return os.environ.get(OPT_OUT_ENV, "").strip().lower() in ("off", "0", "no", "false")


def check_page(page: Path, screenshot: Path) -> dict[str, Any]:
    """Load ``page`` from disk; return console errors and image counts; save a full-page PNG."""
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from nortune import children

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(shutil.which("chromedriver"), popen_kw=children.popen_kwargs())  # ends with nortune
        driver = webdriver.Chrome(service=service, options=options)
        try:
            driver.get(page.resolve().as_uri())
            images = driver.execute_script(
                "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0]);")
            height = driver.execute_script("return document.body.scrollHeight;")
            driver.set_window_size(1280, min(max(int(height), 800), 12000))
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
            errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        finally:
            driver.quit()
    return {"console_errors": errors, "images": len(images),
            "broken_images": [alt for alt, ok in images if not ok], "screenshot": str(screenshot)}
