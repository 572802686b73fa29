"""The web page in real headless Chromium (selenium + chromedriver from Debian: ``apt-get install -y chromium
chromium-driver``), against ``python -m handler.serve`` on a free local port: text search, image upload
(file picker and drag and drop), "more like this", error messages, API key."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handler.config import ENV_VARS
from tests.handler.conftest import render_png

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
API_KEY = "browser-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(bundle: Path, index: Path, tmp: Path, **env: str) -> Iterator[str]:
    """``python -m handler.serve`` in a subprocess; yields its base URL once /health answers 200."""
    port = _free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    environ.update(ORT_THREADS="1", CACHE_DIR=str(tmp / "cache"), LOG_LEVEL="WARNING", **env)
    log = open(tmp / f"serve-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "handler.serve",
            "--bundle",
            str(bundle),
            "--index",
            str(index),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"handler.serve exited with {proc.returncode}: {(tmp / f'serve-{port}.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("handler.serve did not become healthy within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            f"headless Chromium not available ({CHROMIUM}, {CHROMEDRIVER}): "
            "apt-get install -y chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-quic",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    os.environ.setdefault("SE_AVOID_STATS", "true")
    driver = webdriver.Chrome(service=Service(shutil.which(CHROMEDRIVER) or CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(
    demo_bundle: Path, demo_index: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with serve(demo_bundle, demo_index[0], tmp_path_factory.mktemp("serve")) as url:
        yield url


def wait(driver: Any, condition: Any, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def open_page(driver: Any, url: str) -> None:
    driver.get(url + "/")
    wait(driver, lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))


def results(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#results .result')].map(el => ({
            id: el.dataset.id, caption: el.querySelector('.caption').textContent,
            score: parseFloat(el.querySelector('.score').textContent),
            loaded: el.querySelector('img').complete && el.querySelector('img').naturalWidth > 0}));""")


def wait_results(driver: Any, previous: list[str] | None = None) -> list[dict[str, Any]]:
    def ready(d: Any) -> Any:
        rs = results(d)
        if rs and (previous is None or [r["id"] for r in rs] != previous):
            return rs
        return False

    return wait(driver, ready)


def search_text(driver: Any, text: str) -> list[dict[str, Any]]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    before = [r["id"] for r in results(driver)]
    box = driver.find_element(By.ID, "query")
    box.clear()
    box.send_keys(text, Keys.ENTER)
    return wait_results(driver, before or None)


def test_text_search_renders_results(browser: Any, site: str) -> None:
    open_page(browser, site)
    assert "256 images" in browser.find_element("id", "info").text
    rs = search_text(browser, "a red circle")
    assert len(rs) == 12
    assert rs[0]["caption"] == "a red circle", rs[:3]
    assert [r["score"] for r in rs] == sorted((r["score"] for r in rs), reverse=True)
    wait(browser, lambda d: all(r["loaded"] for r in results(d)[:4]))  # thumbnails really load
    status = browser.find_element("id", "status").text
    assert "12 results" in status and "a red circle" in status
    assert not browser.find_element("id", "error").is_displayed()


def test_image_upload_renders_results(browser: Any, site: str, tmp_path: Path) -> None:
    open_page(browser, site)
    path = tmp_path / "blue-square.png"
    path.write_bytes(render_png("blue", "square", seed=4321))
    browser.find_element("id", "file").send_keys(str(path))
    rs = wait_results(browser)
    assert rs[0]["caption"] == "a blue square", rs[:3]
    assert "blue-square.png" in browser.find_element("id", "status").text


def test_drag_and_drop_and_more_like_this(browser: Any, site: str) -> None:
    open_page(browser, site)
    first = search_text(browser, "a green triangle")
    # drop a file on the zone (built in the page from a thumbnail: selenium cannot drag OS files)
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const url = document.querySelector('#results .result img').src;
        fetch(url).then(r => r.blob()).then(blob => {
            const dt = new DataTransfer();
            dt.items.add(new File([blob], 'dropped.jpg', {type: blob.type}));
            document.querySelector('#dropzone').dispatchEvent(
                new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
            done();
        });""")
    wait(browser, lambda d: "dropped.jpg" in d.find_element("id", "status").text)
    dropped = results(browser)
    assert dropped and dropped[0]["caption"] == first[0]["caption"]
    # "more like this" on the first result
    target = dropped[0]
    browser.find_element("css selector", "#results .result .more-like-this").click()
    wait(browser, lambda d: "more like" in d.find_element("id", "status").text)
    similar = results(browser)
    assert similar and target["id"] not in [r["id"] for r in similar]
    assert sum(target["caption"].split()[1] in r["caption"] for r in similar[:5]) >= 3  # same colour


def test_invalid_upload_shows_the_error(browser: Any, site: str, tmp_path: Path) -> None:
    open_page(browser, site)
    search_text(browser, "a white star")
    bogus = tmp_path / "not-an-image.png"
    bogus.write_bytes(b"this is plain text, not a PNG")
    browser.find_element("id", "file").send_keys(str(bogus))
    error = wait(
        browser,
        lambda d: d.find_element("id", "error") if d.find_element("id", "error").is_displayed() else False,
    )
    assert "invalid image" in error.text and "not a recognised image" in error.text
    assert results(browser) == []
    # an empty query is refused in the page itself
    from selenium.webdriver.common.keys import Keys

    box = browser.find_element("id", "query")
    box.clear()
    box.send_keys(Keys.ENTER)
    wait(browser, lambda d: "type something" in d.find_element("id", "error").text)


def test_api_key_is_sent(
    browser: Any, demo_bundle: Path, demo_index: tuple[Path, Path], tmp_path: Path
) -> None:
    with serve(demo_bundle, demo_index[0], tmp_path, API_KEY=API_KEY) as url:
        open_page(browser, url)
        wait(browser, lambda d: "API key" in d.find_element("id", "info").text)
        from selenium.webdriver.common.keys import Keys

        browser.find_element("id", "query").send_keys("a red circle", Keys.ENTER)
        error = wait(
            browser,
            lambda d: (
                d.find_element("id", "error") if d.find_element("id", "error").is_displayed() else False
            ),
        )
        assert "unauthorized" in error.text and "missing x-api-key" in error.text
        browser.find_element("css selector", "#settings summary").click()
        browser.find_element("id", "api-key").send_keys(API_KEY)
        rs = search_text(browser, "a red circle")
        assert rs[0]["caption"] == "a red circle"
        wait(browser, lambda d: all(r["loaded"] for r in results(d)[:3]))  # thumbnails fetched with the key
        assert not browser.find_element("id", "error").is_displayed()
        browser.execute_script("sessionStorage.clear()")


def test_docs_page_renders_offline(browser: Any, site: str) -> None:
    """/docs (Swagger UI) renders the operations from assets served by the package (issue 11 #24): every
    resource the page loads comes from the service's own origin."""
    browser.get(site + "/docs")
    wait(browser, lambda d: d.execute_script("return document.querySelectorAll('.opblock').length") >= 4)
    paths = browser.execute_script("""return [...document.querySelectorAll('.opblock-summary-path')].map(
        e => e.getAttribute('data-path') || e.textContent.replace(/\\u200b/g, ''));""")
    assert {"/search", "/embeddings", "/health", "/info"} <= set(paths), paths
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(site + "/") for r in resources), resources
    assert browser.execute_script("return typeof SwaggerUIBundle") == "function"
