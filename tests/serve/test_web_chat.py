"""The web chat page in headless Chromium: send a message, watch it stream, change the temperature."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("headless test needs Debian's chromium (apt-get install chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(driver_path).exists():
        pytest.skip("chromium-driver is not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,800",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        opts.add_argument(flag)
    d = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_path))
    yield d
    d.quit()


def set_slider(driver, id: str, value) -> None:
    driver.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                          "e.dispatchEvent(new Event('input'));", id, str(value))


def send(driver, text: str) -> tuple:
    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    before = len(driver.find_elements(By.CSS_SELECTOR, ".msg.assistant"))
    driver.find_element(By.ID, "send").click()
    wait = WebDriverWait(driver, 60, poll_frequency=0.02)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) > before)
    msg = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
    counts = []  # token spans seen while the answer streams in
    while msg.get_attribute("data-done") != "true":
        counts.append(len(msg.find_elements(By.CSS_SELECTOR, ".tok")))
        time.sleep(0.02)
    return msg, counts


def test_chat_page_streams_and_changes_temperature(server, browser, tmp_path):
    browser.get(server.url + "/")
    WebDriverWait(browser, 20).until(lambda d: "smollm2" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "system").send_keys("You are a concise assistant.")
    set_slider(browser, "max_tokens", 40)
    browser.find_element(By.ID, "colour").click()
    msg, counts = send(browser, "Tell me a short story about a robot.")
    tokens = msg.find_elements(By.CSS_SELECTOR, ".tok")
    assert len(tokens) > 3 and msg.text.strip()
    assert any(0 < c < len(tokens) for c in counts), f"no partial answer seen while streaming: {counts}"
    assert all(t.get_attribute("data-p") for t in tokens)
    assert "rgb" in tokens[0].value_of_css_property("background-color")
    assert "T=0.7" in msg.find_element(By.CSS_SELECTOR, ".meta").text

    set_slider(browser, "temperature", 0)
    assert browser.find_element(By.ID, "temperature-value").text == "0"
    msg2, _ = send(browser, "And another one, please.")
    assert "T=0" in msg2.find_element(By.CSS_SELECTOR, ".meta").text and msg2.text.strip()
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg.user")) == 2
    shot = tmp_path / "web_chat.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
