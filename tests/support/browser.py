"""A real headless browser for the console's tests: Debian's chromium driven by selenium
through chromium-driver (both installed by deploy/install-system-packages.sh).

Chromium starts with the flags this machine needs (no sandbox as root, no GPU, no
background networking, component updates or sync, which the closed network would refuse)
and a fresh profile, so nothing carries over between test modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.support.required_tools import required_tool

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1")


@contextmanager
def headless_chromium(profile: Path, width: int = 1360, height: int = 900) -> Iterator[webdriver.Chrome]:
    """A Chromium session with a new profile in ``profile``; quit when the block ends."""
    options = webdriver.ChromeOptions()
    options.binary_location = required_tool("chromium", "Debian package chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    # No password manager: it would fill in the last password typed into a login form.
    options.add_experimental_option("prefs", {"credentials_enable_service": False,
                                              "profile.password_manager_enabled": False})
    service = Service(executable_path=required_tool("chromedriver", "Debian package chromium-driver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def full_page_screenshot(driver: webdriver.Chrome, path: Path, width: int = 1360) -> Path:
    """A PNG of the whole page (the window is made as tall as the page first)."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, max(height, 400))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
