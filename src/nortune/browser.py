"""Open a report in real headless Chromium: dialogs, script errors, policy violations, images, a screenshot.

Uses Debian's chromium + chromium-driver through Selenium; nothing is downloaded. ``make setup``
installs them. A missing browser is an error that says how to install it, never a silent skip;
``NORTUNE_BROWSER_CHECK=off`` is the explicit, recorded opt-out.

A report page runs no script at all, so anything that does is a finding (``problems``): before
the page loads, a DevTools script (which the page's Content-Security-Policy does not govern)
replaces ``alert``/``confirm``/``prompt`` with a recorder and listens for script errors and
``securitypolicyviolation``; a real dialog that opens anyway is read and closed; SEVERE console
entries (a blocked inline script logs one) are collected too.
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


# Runs in the page before any of its own content (Page.addScriptToEvaluateOnNewDocument).
_WATCH = """
(() => {
  const seen = {dialogs: [], errors: [], violations: []};
  Object.defineProperty(window, '__nortuneSeen', {value: seen});
  for (const name of ['alert', 'confirm', 'prompt', 'print']) {
    window[name] = function (message) {
      seen.dialogs.push(name + '(' + String(message === undefined ? '' : message) + ')');
      return name === 'confirm' ? false : null;
    };
  }
  window.addEventListener('error', event => {
    if (event instanceof ErrorEvent) {
      seen.errors.push(String(event.message) + ' at ' + event.filename + ':' + event.lineno);
    }
  });
  window.addEventListener('unhandledrejection',
                          event => seen.errors.push('unhandled rejection: ' + String(event.reason)));
  document.addEventListener('securitypolicyviolation', event =>
    seen.violations.push(event.violatedDirective + ' blocked ' + (event.blockedURI || 'inline')
                         + (event.sample ? ': ' + event.sample : '')));
})();
"""
_SEEN = "return window.__nortuneSeen || null;"
_MAX_DIALOGS = 50
# What check_page reports that fails the report stage (``problems``), and how a message names it.
FINDINGS = {"dialogs": "JavaScript dialog", "script_errors": "script error",
            "csp_violations": "Content-Security-Policy violation", "console_errors": "console error"}


def _close_dialogs(driver, found: list[str]) -> None:
    """Read and accept every real JavaScript dialog that is open (none, unless the watch was bypassed)."""
    from selenium.common.exceptions import NoAlertPresentException

    for _ in range(_MAX_DIALOGS):
        try:
            dialog = driver.switch_to.alert
            found.append(f"dialog ({dialog.text})")
            dialog.accept()
        except NoAlertPresentException:
            return


def _script(driver, script: str, dialogs: list[str]) -> Any:
    """``execute_script``, closing (and recording) any dialog that stands in its way."""
    from selenium.common.exceptions import UnexpectedAlertPresentException

    for _ in range(_MAX_DIALOGS):
        try:
            return driver.execute_script(script)
        except UnexpectedAlertPresentException:
            _close_dialogs(driver, dialogs)
    raise RuntimeError(f"more than {_MAX_DIALOGS} JavaScript dialogs on one page")


def check_page(page: Path, screenshot: Path) -> dict[str, Any]:
    """Load ``page`` from disk; return what ran or failed there, the image counts and the text it shows
    (``document.body.innerText``); save a full-page PNG."""
    import tempfile
    import time

    from selenium import webdriver
    from selenium.common.exceptions import UnexpectedAlertPresentException
    from selenium.webdriver.chrome.service import Service

    from nortune import children

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.unhandled_prompt_behavior = "ignore"  # a dialog stays open for _close_dialogs to read
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(shutil.which("chromedriver"), popen_kw=children.popen_kwargs())  # ends with nortune
        driver = webdriver.Chrome(service=service, options=options)
        dialogs: list[str] = []
        try:
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _WATCH})
            try:
                driver.get(page.resolve().as_uri())
            except UnexpectedAlertPresentException:
                _close_dialogs(driver, dialogs)
            time.sleep(0.3)  # timers and late image errors of the page
            _close_dialogs(driver, dialogs)
            images = _script(
                driver, "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0]);",
                dialogs)
            height = _script(driver, "return document.body.scrollHeight;", dialogs)
            driver.set_window_size(1280, min(max(int(height), 800), 12000))
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
            text = _script(driver, "return document.body.innerText;", dialogs)
            seen = _script(driver, _SEEN, dialogs)  # last: all that the page did until now
            if seen is None:  # without the watch the check would vouch for what it never saw
                raise RuntimeError(f"browser check of {page}: the watch script did not run in the page")
            errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        finally:
            driver.quit()
    return {"dialogs": seen["dialogs"] + dialogs, "script_errors": seen["errors"],
            "csp_violations": seen["violations"], "console_errors": errors, "images": len(images),
            "broken_images": [alt for alt, ok in images if not ok], "screenshot": str(screenshot), "text": text}


def problems(checked: dict[str, Any]) -> list[str]:
    """What makes a checked page unsafe or broken: a dialog, a script error, a policy violation, a console error.

    A report page runs no script, so each of these means that data became markup somewhere."""
    found = []
    for key, what in FINDINGS.items():
        if checked.get(key):
            shown = "; ".join(str(item)[:200] for item in checked[key][:5])
            found.append(f"{len(checked[key])} {what}{'s' if len(checked[key]) > 1 else ''} ({shown})")
    return found
