"""The web page's query builder in headless Chromium (see browser_support.py): compound terms with weights,
an image term downscaled in the browser (no 413 for a 12 MP photo), "more like this" / "add to query",
near-duplicates collapsed, pages, filters and error states. Every state is checked on a screenshot too."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from demo.shapes import PALETTE
from handler.config import Settings
from tests.handler.browser_support import (
    click_search,
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
MAX_IMAGE_BYTES = Settings.model_fields["max_image_bytes"].default  # the service's (413 above it)


@pytest.fixture(scope="module")
def photo_4000x3000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12 MP PNG of a blue square (a rendered demo image scaled up, with noise), larger than the service's
    MAX_IMAGE_BYTES: sent as it is, it would be refused with 413."""
    import io

    square = Image.open(io.BytesIO(render_png("blue", "square", seed=77, size=300))).convert("RGB")
    canvas = Image.new("RGB", (4000, 3000), (128, 126, 120))
    canvas.paste(square.resize((3000, 3000), Image.Resampling.BILINEAR), (500, 0))
    rng = np.random.default_rng(0)
    pixels = np.asarray(canvas, dtype=np.int16) + rng.integers(-6, 7, (3000, 4000, 3), dtype=np.int16)
    path = tmp_path_factory.mktemp("photo") / "phone-photo.png"
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, compress_level=1)
    assert path.stat().st_size > MAX_IMAGE_BYTES
    return path


def test_compound_query_with_a_negative_term_changes_the_ranking(browser: Any, site: str) -> None:
    open_page(browser, site)
    record_requests(browser)
    single = search_text(browser, "a red circle")
    assert all(r["caption"] == "a red circle" for r in single[:8]), single[:8]
    css(browser, "#add-text").click()
    term = css(browser, "#terms .term:last-child")
    term.find_element("css selector", ".term-text").send_keys("a circle")  # the added term has the focus
    weight = term.find_element("css selector", ".term-weight")
    weight.clear()
    weight.send_keys("-1")
    compound = click_search(browser)
    assert searches(browser)[-1]["body"] == {
        "terms": [{"text": "a red circle", "weight": 1}, {"text": "a circle", "weight": -1}],
        "k": 12,
        "offset": 0,
    }
    # red minus circle: red items that are not circles rank first now
    assert all(r["caption"].startswith("a red ") and "circle" not in r["caption"] for r in compound[:6]), (
        compound
    )
    assert "− “a circle”" in css(browser, "#status").text
    wait(browser, lambda d: all(r["loaded"] for r in results(d)[:4]))
    assert share(screenshot(browser, css(browser, "#results .result .thumb")), PALETTE["red"]) > 0.03
    assert "#2 text" in term.text and screenshot(browser, term).size[0] > 200  # the term row is on screen


def test_large_image_is_downscaled_before_upload(browser: Any, site: str, photo_4000x3000: Path) -> None:
    open_page(browser, site)
    record_requests(browser)
    css(browser, "#file").send_keys(str(photo_4000x3000))
    rs = wait_results(browser)
    assert rs[0]["caption"] == "a blue square", rs[:3]
    sent = searches(browser)[-1]
    assert sent["status"] == 200 and sent["body"]["image"].startswith("data:image/jpeg;base64,")
    assert sent["size"] < MAX_IMAGE_BYTES / 10  # a few hundred KB, not the 12 MP PNG
    status = css(browser, "#status").text
    assert "phone-photo.png" in status and "768×576 JPEG" in status and "from 4000×3000" in status, status
    assert not css(browser, "#error").is_displayed()
    # the image now is the builder's query; as an image term with a text term it is downscaled the same way
    term = css(browser, "#terms .term[data-kind=image]")
    assert "sent: 768×576 JPEG" in term.text
    css(browser, "#clear-terms").click()
    css(browser, "#query").send_keys("a square")
    css(browser, "#add-image").click()
    row = css(browser, "#terms .term:last-child")
    row.find_element("css selector", ".term-file").send_keys(str(photo_4000x3000))
    wait(browser, lambda d: "sent: 768×576 JPEG" in row.text)
    rs = click_search(browser)
    body = searches(browser)[-1]["body"]
    assert [sorted(t) for t in body["terms"]] == [["text", "weight"], ["image", "weight"]]
    assert (
        body["terms"][1]["image"].startswith("data:image/jpeg;base64,")
        and searches(browser)[-1]["status"] == 200
    )
    assert rs[0]["caption"] == "a blue square", rs[:3]
    preview = screenshot(browser, row.find_element("css selector", ".term-preview"))
    assert share(preview, PALETTE["blue"]) > 0.05  # the preview shows what was sent


IMAGE_EVENT_JS = """
    const [target, type, size, name] = arguments;
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = size;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#8a8a80'; ctx.fillRect(0, 0, size, size);
    ctx.fillStyle = 'rgb(25, 70, 225)'; ctx.fillRect(size / 4, size / 4, size / 2, size / 2);
    canvas.toBlob((blob) => {
        const dt = new DataTransfer();
        dt.items.add(new File([blob], name, {type: 'image/png'}));
        const init = {bubbles: true, cancelable: true};
        target.dispatchEvent(type === 'paste' ? new ClipboardEvent('paste', {...init, clipboardData: dt})
                                              : new DragEvent('drop', {...init, dataTransfer: dt}));
    }, 'image/png');"""


def test_paste_and_drop_fill_image_terms(browser: Any, site: str) -> None:
    """An image pasted into a term (while it has the focus) or dropped on it fills that term; pasted elsewhere
    it starts a new search by the image."""
    open_page(browser, site)
    record_requests(browser)
    css(browser, "#query").send_keys("a square")
    css(browser, "#add-image").click()
    pasted = css(browser, "#terms .term:last-child")
    browser.execute_script(
        IMAGE_EVENT_JS, pasted.find_element("css selector", ".term-weight"), "paste", 1200, ""
    )
    wait(browser, lambda d: "sent: 768×768 JPEG" in pasted.text and "from 1200×1200" in pasted.text)
    css(browser, "#add-image").click()
    dropped = css(browser, "#terms .term:last-child")
    browser.execute_script(IMAGE_EVENT_JS, dropped, "drop", 64, "small.png")
    wait(browser, lambda d: "sent: 64×64 PNG" in dropped.text and "small.png" in dropped.text)  # as it is
    assert searches(browser) == []  # filling terms searches nothing
    rs = click_search(browser)
    assert [next(iter(t)) for t in searches(browser)[-1]["body"]["terms"]] == ["text", "image", "image"]
    assert rs[0]["caption"] == "a blue square", rs[:3]
    browser.execute_script(IMAGE_EVENT_JS, css(browser, "#results"), "paste", 900, "")
    wait(browser, lambda d: "image “pasted image”" in d.find_element("id", "status").text)
    assert "image" in searches(browser)[-1]["body"]  # a new search by the pasted image alone
    wait(
        browser,
        lambda d: (
            [t.get_attribute("data-kind") for t in d.find_elements("css selector", "#terms .term")]
            == ["image"]
        ),
    )
    assert share(screenshot(browser, css(browser, "#terms .term-preview")), PALETTE["blue"]) > 0.05


def test_more_like_this_and_add_to_query(browser: Any, site: str) -> None:
    open_page(browser, site)
    record_requests(browser)
    first = search_text(browser, "a green triangle")
    target = first[0]
    css(browser, "#results .result .more-like-this").click()
    wait(browser, lambda d: "more like" in d.find_element("id", "status").text)
    similar = results(browser)
    assert searches(browser)[-1]["body"] == {"id": target["id"], "k": 12, "offset": 0}
    assert target["id"] not in [r["id"] for r in similar]
    assert [t.get_attribute("data-kind") for t in browser.find_elements("css selector", "#terms .term")] == [
        "id"
    ]
    assert css(browser, "#query").get_attribute("value") == ""
    # "+ Add to query" adds the item as a term of the current query and searches again
    second = similar[0]
    css(browser, "#results .result .add-to-query").click()
    wait(browser, lambda d: len(searches(d)) == 3 and searches(d)[-1]["status"] == 200)
    rs = wait_results(browser, [r["id"] for r in similar])
    assert searches(browser)[-1]["body"]["terms"] == [
        {"id": target["id"], "weight": 1},
        {"id": second["id"], "weight": 1},
    ]
    assert not {target["id"], second["id"]} & {r["id"] for r in rs}
    wait(browser, lambda d: all(r["loaded"] for r in results(d)[:4]))
    assert share(screenshot(browser, css(browser, "#results .result .thumb")), PALETTE["green"]) > 0.03


@pytest.fixture(scope="module")
def dupes_site(
    demo_bundle: Path, demo_collection: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """(url, copy): a collection with 8 byte-identical copies of one image, built by the index builder."""
    from index_builder.cli import main as build

    tmp = tmp_path_factory.mktemp("dupes")
    images_dir, items, _ = demo_collection
    src = tmp / "photos"
    picked = [it for it in items if it["metadata"]["colour"] in ("red", "blue", "green")][:40]
    for it in picked:
        (src / it["id"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(images_dir / it["id"], src / it["id"])
    data = (images_dir / picked[0]["id"]).read_bytes()
    for i in range(1, 8):
        (src / f"copy_{i}.jpg").write_bytes(data)
    argv = [
        "build",
        "--source",
        src,
        "--bundle",
        demo_bundle,
        "--out",
        tmp / "index",
        "--threads",
        "2",
        "--quiet",
    ]
    assert build([str(a) for a in argv]) == 0
    with serve(demo_bundle, tmp / "index", tmp) as url:
        yield url, src / "copy_3.jpg"


def test_dedupe_shows_the_duplicates_badge(browser: Any, dupes_site: tuple[str, Path]) -> None:
    url, copy = dupes_site
    open_page(browser, url)
    record_requests(browser)
    css(browser, "#file").send_keys(str(copy))
    plain = wait_results(browser)
    copies = [r["id"] for r in plain[:8]]
    assert "copy_3.jpg" in copies and not browser.find_elements("css selector", ".dupes-badge:not(:empty)")
    css(browser, "#dedupe").click()
    rs = click_search(browser)  # the dropped image is the builder's query now
    assert searches(browser)[-1]["body"]["dedupe"] is True and rs[0]["id"] in copies
    assert not {r["id"] for r in rs[1:]} & set(copies)
    badge = css(browser, "#results .result .dupes-badge")
    assert badge.text == "+7 duplicates" and "7 near-duplicates collapsed" in css(browser, "#status").text
    badge.click()  # expands the list of the absorbed ids
    listed = wait(
        browser, lambda d: [li.text for li in d.find_elements("css selector", ".dupes-list li") if li.text]
    )
    assert sorted(listed) == sorted(set(copies) - {rs[0]["id"]})
    assert share(screenshot(browser, badge), (255, 244, 214), tol=12) > 0.3  # the badge is drawn


def test_pages(browser: Any, site: str) -> None:
    open_page(browser, site)
    record_requests(browser)
    from selenium.webdriver.support.ui import Select

    Select(css(browser, "#k")).select_by_visible_text("6")
    page1 = search_text(browser, "a red circle")
    assert len(page1) == 6 and not css(browser, "#prev").is_enabled() and css(browser, "#next").is_enabled()
    css(browser, "#next").click()
    page2 = wait_results(browser, [r["id"] for r in page1])
    assert searches(browser)[-1]["body"] == {"text": "a red circle", "k": 6, "offset": 6}
    assert len(page2) == 6 and not {r["id"] for r in page1} & {r["id"] for r in page2}
    assert page2[0]["score"] <= page1[-1]["score"]
    assert css(browser, "#page-label").text == "results 7–12"
    assert screenshot(browser, css(browser, "#pager")).size[0] > 100
    css(browser, "#prev").click()
    again = wait_results(browser, [r["id"] for r in page2])
    assert [r["id"] for r in again] == [r["id"] for r in page1]


def test_errors_are_shown(browser: Any, site: str) -> None:
    open_page(browser, site)
    record_requests(browser)
    search_text(browser, "a red circle")
    weight = css(browser, "#query-weight")
    weight.clear()
    weight.send_keys("0")
    css(browser, "#search-button").click()
    error = error_shown(browser)
    assert "invalid request" in error.text and "all zero" in error.text and "HTTP 400" in error.text
    assert results(browser) == [] and searches(browser)[-1]["status"] == 400
    shot = screenshot(browser, error)
    assert share(shot, (253, 240, 239), tol=8) > 0.5 and share(shot, (179, 38, 30), tol=50) > 0.01
    # an empty term is refused in the page, naming it
    weight.clear()
    weight.send_keys("1")
    css(browser, "#add-text").click()
    n = len(searches(browser))
    css(browser, "#search-button").click()
    wait(browser, lambda d: "term #2 is empty" in d.find_element("id", "error").text)
    assert len(searches(browser)) == n


def test_filters_are_sent_only_when_set(browser: Any, site: str) -> None:
    open_page(browser, site)
    record_requests(browser)
    css(browser, "#filters summary").click()
    for field, value in [
        ("f-path", "set_a/"),
        ("f-ext", "jpg, .PNG"),
        ("f-wmin", "50"),
        ("f-meta-key", "colour"),
        ("f-meta-value", "red"),
    ]:
        css(browser, "#" + field).send_keys(value)
    assert "(4 set)" in css(browser, "#filter-count").text
    css(browser, "#query").send_keys("a circle")
    css(browser, "#search-button").click()
    wait(browser, lambda d: searches(d) and searches(d)[-1]["status"])
    expected = {
        "path_prefix": "set_a/",
        "ext": ["jpg", "PNG"],
        "width": {"min": 50},
        "meta": {"colour": "red"},
    }
    assert searches(browser)[-1]["body"]["filter"] == expected
    if searches(browser)[-1]["status"] == 400:  # a service without filters: the page says so
        assert "filter" in error_shown(browser).text
        assert share(screenshot(browser, css(browser, "#error")), (253, 240, 239), tol=8) > 0.5
    else:
        rs = wait_results(browser)
        assert all(r["id"].startswith("set_a/") and r["caption"].startswith("a red") for r in rs), rs
        assert share(screenshot(browser, css(browser, "#results .result .thumb")), PALETTE["red"]) > 0.03
    browser.execute_script("""const el = document.querySelector('#f-from');
        el.value = '2020-01-31'; el.dispatchEvent(new Event('input'));""")
    assert "(5 set)" in css(browser, "#filter-count").text
    css(browser, "#search-button").click()
    wait(browser, lambda d: len(searches(d)) == 2 and searches(d)[-1]["status"])
    assert searches(browser)[-1]["body"]["filter"] == {**expected, "taken": {"from": "2020-01-31"}}
    css(browser, "#clear-filters").click()
    assert css(browser, "#filter-count").text == ""
    css(browser, "#search-button").click()
    wait(browser, lambda d: len(searches(d)) == 3 and searches(d)[-1]["status"] == 200)
    assert "filter" not in searches(browser)[-1]["body"]
