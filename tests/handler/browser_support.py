"""Headless Chromium for the web-page tests (selenium + chromedriver from Debian: ``apt-get install -y
chromium chromium-driver``; skipped when missing): the service in a subprocess (``serve``), the driver and
page helpers, a recorder of the page's requests and screenshot checks. The fixtures (one browser and one
server per module) are registered by tests/handler/conftest.py."""

from __future__ import annotations

import contextlib
import io
import json
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


def css(driver: Any, selector: str) -> Any:
    return driver.find_element("css selector", selector)


def error_shown(driver: Any) -> Any:
    """The page's error box once it is displayed."""
    return wait(
        driver,
        lambda d: d.find_element("id", "error") if d.find_element("id", "error").is_displayed() else False,
    )


def click_search(driver: Any) -> list[dict[str, Any]]:
    before = [r["id"] for r in results(driver)]
    css(driver, "#search-button").click()
    return wait_results(driver, before or None)


def search_text(driver: Any, text: str) -> list[dict[str, Any]]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    before = [r["id"] for r in results(driver)]
    box = driver.find_element(By.ID, "query")
    box.clear()
    box.send_keys(text, Keys.ENTER)
    return wait_results(driver, before or None)


# -- requests and screenshots --------------------------------------------------------------------------------

RECORD_JS = """
    window.__requests = [];
    const orig = window.fetch;
    window.fetch = async (url, opts) => {
        const entry = {url: String(url), body: opts && typeof opts.body === 'string' ? opts.body : null};
        window.__requests.push(entry);
        const res = await orig(url, opts);
        entry.status = res.status;
        return res;
    };"""


def record_requests(driver: Any) -> None:
    """From now on the page's fetch calls are kept (url, JSON body, status) for :func:`searches`."""
    driver.execute_script(RECORD_JS)


def searches(driver: Any) -> list[dict[str, Any]]:
    """The POST /search requests since :func:`record_requests`: ``{"body": JSON, "status", "size"}``."""
    entries = driver.execute_script("return window.__requests.filter(e => /search$/.test(e.url))")
    return [
        {"body": json.loads(e["body"]), "size": len(e["body"]), "status": e.get("status")} for e in entries
    ]


def screenshot(driver: Any, element: Any = None) -> Any:
    """A PNG screenshot of the viewport, checked (the viewport's size in device pixels, not blank), as a PIL
    RGB image; with ``element``: the element is scrolled into view first and its area is returned."""
    from PIL import Image, ImageStat

    if element is not None:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    png = driver.get_screenshot_as_png()
    img = Image.open(io.BytesIO(png)).convert("RGB")
    w, h, dpr = driver.execute_script("return [innerWidth, innerHeight, devicePixelRatio]")
    assert img.size == (round(w * dpr), round(h * dpr)), (img.size, w, h, dpr)
    assert max(ImageStat.Stat(img).stddev) > 10, "blank screenshot"
    if element is None:
        return img
    r = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]", element
    )
    box = tuple(round(v * dpr) for v in r)
    assert box[2] - box[0] > 4 and box[3] - box[1] > 4, ("element not visible", box)
    return img.crop(box)


def share(img: Any, rgb: tuple[int, int, int], tol: int = 60) -> float:
    """Fraction of the pixels of ``img`` within ``tol`` (per channel) of ``rgb``."""
    import numpy as np

    a = np.asarray(img, dtype=np.int16)
    return float((np.abs(a - np.array(rgb)).max(axis=2) <= tol).mean())
