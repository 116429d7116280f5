"""The playground page in headless Chromium against real servers: the key prompt, images, the
server's own error messages, a video job played in the page, and both tabs' screenshots.

Screenshots go to docs/ (for the README) only with OMNI_WRITE_SCREENSHOTS=1, so a test run
leaves the checkout clean.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

import omni.engine.engine
from omni.config import EngineConfig
from omni.http import ServerConfig
from tests.http.servers import REPO_ROOT, ServerThread, server_thread

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium executable on PATH (Debian: apt-get install chromium)"
)

API_KEY = "sk-playground-test"
WAIT_MS = 60_000  # a generous bound for a tiny model on a busy CPU, not a speed check
DESKTOP = {"width": 1000, "height": 900}
NARROW = {"width": 400, "height": 900}


def config(model: Path, name: str, storage: Path, **server: Any) -> ServerConfig:
    engine = EngineConfig(model=str(model), served_model_name=name, profile_seconds=0)
    return ServerConfig(engine=engine, port=0, storage_path=storage, **server)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    if os.environ.get("OMNI_WRITE_SCREENSHOTS") == "1":
        return REPO_ROOT / "docs"
    return tmp_path


@pytest.fixture(scope="module")
def image_server(
    tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    storage = tmp_path_factory.mktemp("storage")
    with server_thread(config(tiny_flux_dir, "omni-tiny", storage, api_key=API_KEY)) as server:
        yield server


def server_message(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


def fits_the_width(page: Any) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def signed_in(browser: Any, url: str) -> Any:
    """A page that has been given the key (the first test shows how it asks for it)."""
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{url}/")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_label("API key").press("Enter")
    page.locator("#app").wait_for()
    return page


def test_the_page_asks_for_the_key_then_makes_images(
    browser: Any, image_server: ServerThread, screenshots: Path
) -> None:
    url = image_server.url
    wrong_key = requests.get(
        f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=10
    )
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{url}/")  # the page itself needs no key

    key = page.get_by_label("API key")
    expect(key).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    key.fill("wrong")
    key.press("Enter")
    expect(page.locator("#key-error")).to_have_text(server_message(wrong_key, 401))
    key.fill(API_KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#model-info")).to_contain_text(image_server.server.engine.config.name)
    assert page.evaluate("sessionStorage.getItem('omni-api-key')") == API_KEY
    assert page.evaluate("localStorage.length") == 0
    page.reload()  # the tab keeps the key for its session
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#key-form")).to_be_hidden()
    assert page.get_by_role("tab", name="Video").is_hidden()  # an image model

    info = image_server.server.engine.info
    width, height = 2 * info.size_multiple, 3 * info.size_multiple
    panel = page.get_by_role("tabpanel", name="Image")
    panel.get_by_label("Prompt", exact=True).fill("a lighthouse on a cliff at dusk")
    panel.get_by_label("Size (width x height)").fill(f"{width}x{height}")
    panel.get_by_label("Number of images").fill("2")
    panel.get_by_role("button", name="Generate").press("Enter")  # the keyboard works

    done = page.locator("#image-grid figure[data-state=done] img")
    expect(done).to_have_count(2, timeout=WAIT_MS)
    page.wait_for_function(
        "[...document.querySelectorAll('#image-grid img')].every(i => i.complete)"
    )
    sizes = done.evaluate_all("images => images.map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[width, height], [width, height]]
    expect(page.locator("#image-error")).to_be_empty()
    page.screenshot(path=screenshots / "playground-image.png", full_page=True)

    page.set_viewport_size(NARROW)
    assert fits_the_width(page)
    page.set_viewport_size(DESKTOP)

    bad_size = f"{width + 1}x{height}"
    refused = requests.post(
        f"{url}/v1/images/generations",
        json={"prompt": "a cat", "size": bad_size},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    panel.get_by_label("Size (width x height)").fill(bad_size)
    panel.get_by_label("Number of images").fill("1")
    panel.get_by_role("button", name="Generate").click()
    expect(page.locator("#image-error")).to_have_text(server_message(refused, 400))
    expect(page.locator("#image-grid figure[data-state=failed]")).to_have_count(1)
    page.close()


def test_the_page_makes_a_video_and_plays_it(
    browser: Any, tiny_wan_dir: Path, screenshots: Path, tmp_path: Path
) -> None:
    with server_thread(config(tiny_wan_dir, "omni-tiny-video", tmp_path)) as server:
        info = server.server.engine.info
        side = 2 * info.size_multiple
        page = browser.new_page(viewport=DESKTOP)
        page.goto(f"{server.url}/playground")

        video_tab = page.get_by_role("tab", name="Video")
        expect(video_tab).to_have_attribute("aria-selected", "true")
        panel = page.get_by_role("tabpanel", name="Video")
        panel.get_by_label("Prompt", exact=True).fill("a paper boat drifting on a pond")
        panel.get_by_label("Size (width x height)").fill(f"{side}x{side}")
        panel.get_by_label("Frames", exact=True).fill("5")
        panel.get_by_label("Frames per second").fill("8")
        panel.get_by_label("Steps").fill("2")
        panel.get_by_role("button", name="Create video").click()

        job = page.locator("#video-jobs li[data-status=completed]")
        expect(job).to_have_count(1, timeout=WAIT_MS)
        job.get_by_role("button", name="Play").click()
        # HAVE_ENOUGH_DATA: the metadata, and the frames to play (the whole file is in memory).
        page.wait_for_function(
            "() => document.getElementById('video-player').readyState === 4", timeout=WAIT_MS
        )
        player = page.locator("#video-player")
        assert player.evaluate("v => [v.videoWidth, v.videoHeight]") == [side, side]
        expect(page.locator("#video-error")).to_be_empty()
        # It plays; and once played, headless Chromium's controls drop their loading spinner.
        player.evaluate("v => { v.muted = true; return v.play().then(() => v.pause()); }")
        page.screenshot(path=screenshots / "playground-video.png", full_page=True)

        page.set_viewport_size(NARROW)
        assert fits_the_width(page)
        video_tab.press("ArrowLeft")  # tabs move with the arrow keys
        expect(page.get_by_role("tab", name="Image")).to_have_attribute("aria-selected", "true")
        expect(page.get_by_role("tabpanel", name="Image")).to_be_visible()
        assert fits_the_width(page)
        page.get_by_role("tab", name="Image").press("ArrowRight")
        expect(panel).to_be_visible()

        job.get_by_role("button", name="Delete").click()
        expect(page.locator("#video-jobs li")).to_have_count(0)
        assert requests.get(f"{server.url}/v1/videos", timeout=10).json()["data"] == []
        expect(player).to_be_hidden()
        page.close()


def test_the_page_waits_for_the_model_to_load(
    browser: Any, tiny_flux_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    release = threading.Event()
    real_load_model = omni.engine.engine.load_model

    def load_when_released(*args: Any) -> Any:
        release.wait(60)
        return real_load_model(*args)

    monkeypatch.setattr(omni.engine.engine, "load_model", load_when_released)
    with server_thread(config(tiny_flux_dir, "omni-tiny", tmp_path), wait_healthy=False) as server:
        page = browser.new_page(viewport=DESKTOP)
        try:
            page.goto(f"{server.url}/")
            loading = requests.get(f"{server.url}/health", timeout=10)
            expect(page.locator("#model-info")).to_contain_text(server_message(loading, 503))
            expect(page.locator("#app")).to_be_hidden()
        finally:
            release.set()
        expect(page.locator("#app")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#model-info")).to_contain_text("image")
        page.close()


def test_no_playground_takes_the_page_away(tiny_flux_dir: Path, tmp_path: Path) -> None:
    with server_thread(
        config(tiny_flux_dir, "omni-tiny", tmp_path, playground=False), wait_healthy=False
    ) as server:
        page = requests.get(f"{server.url}/", timeout=10)
        script = requests.get(f"{server.url}/playground/static/main.js", timeout=10)

    assert page.status_code == 404
    assert script.status_code == 404


def test_streamed_partial_images_show_as_progress(browser: Any, image_server: ServerThread) -> None:
    """The server's image stream, as the page reads it: partial images, then the completed one,
    each partial image moving the image's progress bar."""
    url = image_server.url
    asked: list[dict[str, Any]] = []

    def record(request: Any) -> None:
        if request.method == "POST" and request.url.endswith("/v1/images/generations"):
            asked.append(request.post_data_json)

    page = signed_in(browser, url)
    page.on("request", record)
    # Log every value the page gives an image's progress bar once the bar is on the page.
    page.evaluate(
        """() => {
            window.progressSeen = [];
            const value = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, "value");
            Object.defineProperty(HTMLProgressElement.prototype, "value", {
                get() { return value.get.call(this); },
                set(v) {
                    if (this.closest("#image-grid")) window.progressSeen.push(v);
                    value.set.call(this, v);
                },
            });
        }"""
    )
    panel = page.get_by_role("tabpanel", name="Image")
    panel.get_by_label("Prompt", exact=True).fill("a red bicycle")
    panel.get_by_label("Number of images").fill("2")
    panel.get_by_role("button", name="Generate").click()

    done = page.locator("#image-grid figure[data-state=done] img")
    expect(done).to_have_count(2, timeout=WAIT_MS)
    assert [(body["n"], body["stream"]) for body in asked] == [(1, True), (1, True)]
    partials_per_image = asked[0]["partial_images"]
    assert partials_per_image >= 1
    seen = page.evaluate("window.progressSeen")
    assert sorted(seen) == sorted(list(range(1, partials_per_image + 1)) * 2)
    expect(page.locator("#image-error")).to_be_empty()
    page.close()


def expect_count(locator: Any, count: int) -> None:
    expect(locator).to_have_count(count, timeout=WAIT_MS)


def expect_empty(locator: Any) -> None:
    expect(locator).to_be_empty()
