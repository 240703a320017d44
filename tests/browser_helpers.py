"""A real headless Chromium (Debian's chromium + chromium-driver, installed by scripts/test.sh)
driven through Selenium, and helpers to read the console page's canvas and click on it."""
import base64
import shutil
import time

import cv2
import numpy as np
import pytest


def chromium_driver():
    """A headless Chromium WebDriver, or skip when the browser is not installed."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("chromium / chromium-driver not installed (scripts/test.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_script_timeout(30)
    return driver


def canvas_rgb(driver) -> np.ndarray:
    """The page's view canvas as an H x W x 3 uint8 RGB array."""
    url = driver.execute_script("return document.getElementById('view').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _move(driver, x: float, y: float):
    """An ActionChains positioned at image pixel (x, y) of the canvas (displayed 1:1)."""
    from selenium.webdriver.common.action_chains import ActionChains

    el = driver.find_element("id", "overlay")
    w, h = el.size["width"], el.size["height"]
    return ActionChains(driver).move_to_element_with_offset(el, int(round(x - w / 2)), int(round(y - h / 2)))


def click(driver, x: float, y: float, right: bool = False) -> None:
    chain = _move(driver, x, y)
    (chain.context_click() if right else chain.click()).perform()


def drag(driver, points) -> None:
    """Press at points[0], move through the others, release (a box or a brush stroke)."""
    chain = _move(driver, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        chain = chain.move_by_offset(int(round(x1 - x0)), int(round(y1 - y0)))
    chain.release().perform()


def page_state(driver):
    return driver.execute_script("return window.samConsole && window.samConsole.state")


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    return predicate()


def open_page(driver, url: str) -> None:
    driver.get(url)
    assert wait_for(lambda: driver.execute_script("return !!(window.samConsole && window.samConsole.state "
                                                  "&& window.samConsole.frame > 0)"), 30), driver.page_source[:500]
