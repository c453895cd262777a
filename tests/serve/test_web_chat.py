"""The web chat page in headless Chromium: send a message, watch it stream, change the temperature;
answer from a RAG index with its citations and sources shown, abstain, show the route's errors."""

from __future__ import annotations

import shutil
import time
import urllib.parse
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("headless test needs Debian's chromium (apt-get install chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from .conftest import start_server  # noqa: E402


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
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-indexes"))
    assert not browser.find_element(By.ID, "rag-box").is_displayed()  # a server without indexes: no selector
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


NOTES = {
    "lighthouse.txt": "The Varnholm lighthouse was painted green in 1923 by its keeper, Ingrid Tallis.",
    "bakery.txt": "The bakery on Mill Street sells rye bread and cardamom buns every morning.",
    "comet.txt": "Halley's Comet returns to the inner Solar System roughly every 76 years.",
}


@pytest.fixture(scope="module")
def rag_server(bundled_folder, tmp_path_factory):
    from lmlab.rag import Index, IndexConfig

    docs = tmp_path_factory.mktemp("notes")
    for name, text in NOTES.items():
        (docs / name).write_text(text)
    root = tmp_path_factory.mktemp("indexes")
    index, _ = Index.build([docs], root / "notes", IndexConfig(chunk_tokens=64, overlap=8))
    Index.build([docs / "comet.txt"], root / "spare", IndexConfig(chunk_tokens=64, overlap=8, dense="none"))
    s = start_server(bundled_folder, tmp_path_factory, "--rag-indexes", str(root))
    s.root, s.doc_ids = root, {Path(d).name: d for d in index.documents}
    yield s
    s.stop()


def choose(driver, index: str) -> None:
    Select(driver.find_element(By.ID, "rag-index")).select_by_value(index)


def test_chat_answers_from_an_index_with_sources(rag_server, browser):
    browser.get(rag_server.url + "/")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-indexes"))
    assert browser.find_element(By.ID, "rag-box").is_displayed()
    options = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#rag-index option")]
    assert options == ["(none)", "notes (3 docs, 3 chunks)", "spare (1 doc, 1 chunk)"]
    set_slider(browser, "max_tokens", 40)

    # with k=1 the one passage shown is the best hit and the constrained answer must cite it as [1]
    choose(browser, "notes")
    set_slider(browser, "rag_k", 1)
    msg, _ = send(browser, "What colour was the Varnholm lighthouse painted?")
    assert "error" not in msg.get_attribute("class"), msg.text
    marks = msg.find_elements(By.CSS_SELECTOR, "a.cite")
    assert marks and all(m.text == "[1]" for m in marks), msg.text
    assert urllib.parse.urlparse(marks[0].get_attribute("href")).fragment.endswith("-1")
    sources = msg.find_elements(By.CSS_SELECTOR, ".sources details.source")
    assert len(sources) == 1
    src = sources[0]
    assert src.get_attribute("data-doc-id") == rag_server.doc_ids["lighthouse.txt"]
    assert rag_server.doc_ids["lighthouse.txt"] in src.find_element(By.CSS_SELECTOR, "summary").text
    assert "score" in src.find_element(By.CSS_SELECTOR, ".score").text
    passage = src.find_element(By.CSS_SELECTOR, ".passage")
    assert not passage.is_displayed() and src.get_attribute("open") is None  # collapsed until asked
    marks[0].click()  # a marker opens its source
    assert src.get_attribute("open") is not None
    assert "Varnholm lighthouse was painted green" in passage.text
    assert "from notes" in msg.find_element(By.CSS_SELECTOR, ".meta").text

    # more passages: each retrieved one is either a cited source or listed as retrieved, not cited
    set_slider(browser, "rag_k", 3)
    msg, _ = send(browser, "What does the bakery on Mill Street sell?")
    assert "error" not in msg.get_attribute("class"), msg.text
    cited = [s.get_attribute("data-doc-id") for s in msg.find_elements(By.CSS_SELECTOR, "details.source")]
    others = [s.get_attribute("data-doc-id") for s in msg.find_elements(By.CSS_SELECTOR, ".others .other")]
    assert sorted(cited + others) == sorted(rag_server.doc_ids.values()), (cited, others)
    assert len(msg.find_elements(By.CSS_SELECTOR, "a.cite")) >= len(cited)

    # nothing relevant (BM25-only index, no shared term): the abstention, without sources
    choose(browser, "spare")
    msg, _ = send(browser, "Who wrote Hamlet?")
    assert msg.get_attribute("data-abstained") == "true" and "not in the documents" in msg.text, msg.text
    assert not msg.find_elements(By.CSS_SELECTOR, "details.source")

    # the route's error shows like a chat error: the index went away after the page listed it
    shutil.rmtree(rag_server.root / "spare")
    msg, _ = send(browser, "When does Halley's Comet return?")
    assert "error" in msg.get_attribute("class") and "no index 'spare'; available: notes" in msg.text

    # (none): the plain chat path, streamed tokens and all
    choose(browser, "")
    msg, _ = send(browser, "Say hello.")
    assert msg.find_elements(By.CSS_SELECTOR, ".tok") and "T=0.7" in msg.find_element(By.CSS_SELECTOR, ".meta").text
    assert not msg.find_elements(By.CSS_SELECTOR, ".sources")
