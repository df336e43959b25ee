"""A headless Chromium driven by Selenium (Debian's ``chromium`` and
``chromium-driver``), with Chromium's fake microphone: for the gateway's
tests and its browser bench."""

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def available():
    """True when both the browser and its driver are installed."""
    return shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None


def launch(*args):
    """A headless Chromium (a Selenium ``webdriver.Chrome``) with a fake
    microphone and ``args`` besides; raises RuntimeError when it is not
    installed."""
    if not available():
        raise RuntimeError("chromium and chromedriver are not installed "
                           "(Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--use-fake-device-for-media-stream", "--window-size=800,700", *args):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(30)
    return driver
