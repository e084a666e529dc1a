"""Debian's headless chromium for the browser tests, through chromedriver and selenium.

The same flags as the dashboard's test (``tests/e2e/test_dashboard.py``): without them
chromium, on a closed network, hangs on look-ups.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)


def start_chromium(profile: Path) -> WebDriver:
    """A headless chromium with its profile in ``profile``, its console log kept."""
    if shutil.which("chromium") is None or not Path(CHROMEDRIVER).exists():
        raise RuntimeError(
            "the browser tests need Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver; .ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument("--user-data-dir=" + str(profile))
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
