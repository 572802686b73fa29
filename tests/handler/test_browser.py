"""The web page in real headless Chromium (selenium + chromedriver from Debian: ``apt-get install -y chromium
chromium-driver``), against ``python -m handler.serve`` on a free local port: text search, image upload
(file picker and drag and drop), "more like this", error messages, API key. The compound-query builder,
filters, dedupe and pages: test_browser_query.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from demo.shapes import PALETTE
from tests.handler.browser_support import (
    API_KEY,
    css,
    error_shown,
    open_page,
    record_requests,
    results,
    screenshot,
    search_text,
    searches,
    serve,
    share,
    wait,
    wait_results,
)
from tests.handler.conftest import render_png

pytestmark = pytest.mark.browser


def test_text_search_renders_results(browser: Any, site: str) -> None:
    open_page(browser, site)
    record_requests(browser)
    assert "256 images" in browser.find_element("id", "info").text
    rs = search_text(browser, "a red circle")
    assert len(rs) == 12
    assert rs[0]["caption"] == "a red circle", rs[:3]
    assert [r["score"] for r in rs] == sorted((r["score"] for r in rs), reverse=True)
    wait(browser, lambda d: all(r["loaded"] for r in results(d)[:4]))  # thumbnails really load
    status = browser.find_element("id", "status").text
    assert "12 results" in status and "a red circle" in status
    assert not browser.find_element("id", "error").is_displayed()
    # the simplest request: no terms, no filter, no dedupe unless asked for
    assert [s["body"] for s in searches(browser)] == [{"text": "a red circle", "k": 12, "offset": 0}]
    thumb = screenshot(browser, css(browser, "#results .result .thumb"))
    assert share(thumb, PALETTE["red"]) > 0.03  # the first card shows a red shape


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
    css(browser, "#results .result .more-like-this").click()
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
    error = error_shown(browser)
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
        error = error_shown(browser)
        assert "unauthorized" in error.text and "missing x-api-key" in error.text
        css(browser, "#settings summary").click()
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
