"""The live page in headless Chromium (Debian's chromium and chromium-driver through
Selenium): the stream shows frames that change, the counts and events update, and an
alert event's snapshot and clip are linked and play.

Set ``UBIQ_LIVE_SCREENSHOT=PATH`` to keep the page's screenshot (docs/live-view.png is
made that way).
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from ubiq.pipelines.sinks.live import LiveViewSink

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

TOKEN = "browser-test-token-0123456789"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (scripts/install-system-deps.sh)",
)


CLIP_STEM = "20260101-120000-demo-zone.intrusion-0123456789abcdef"


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory):
    """The demo clip's frames with BlazeFace's detections, an alert event now and then
    naming its snapshot and clip (as the clip recorder does), and the clip folder."""
    os.environ.setdefault("UBIQ_HOME", str(tmp_path_factory.mktemp("ubiq_home")))
    import cv2

    import ubiq
    from ubiq.hardware.sources.demo import DemoSource
    from ubiq.pipelines.sinks.annotate import draw
    from ubiq.pipelines.sinks.clips import open_video_writer

    folder = tmp_path_factory.mktemp("clips")
    snapshot, clip = folder / f"{CLIP_STEM}.jpg", folder / f"{CLIP_STEM}.mp4"
    pipeline = ubiq.Pipeline([ubiq.Detect(ubiq.load_model("blazeface"))])
    results = []
    writer = open_video_writer(clip, 30.0, (640, 480))
    with DemoSource() as source:
        for frame in source:
            result = pipeline.process(frame)
            if frame.index < 30:
                writer.write(draw(result))
            if frame.index % 20 == 5:
                paths = {"snapshot": str(snapshot), "clip": str(clip)}
                result.add_event("zone.intrusion", zone="door", label="face", **paths)
                if not snapshot.exists():
                    cv2.imwrite(str(snapshot), draw(result))
            results.append(result)
    writer.close()
    return results, folder


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,700"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_shows_the_stream_live_counts_and_alert_clips(browser, demo_results, tmp_path):
    demo_results, clips_folder = demo_results
    live = LiveViewSink(
        "0.0.0.0", 0, token=TOKEN, title="ubiq detect: demo", clips_folder=clips_folder
    )
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            for result in demo_results:
                if stop.is_set():
                    return
                live.write(result)
                time.sleep(1 / 30)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        # Without the token the page is refused; with it, it loads.
        browser.get(f"http://127.0.0.1:{live.port}/")
        assert "a token is needed" in browser.page_source
        browser.get(f"http://127.0.0.1:{live.port}/?token={TOKEN}")
        assert browser.title == "ubiq detect: demo"

        def stream_state():
            return browser.execute_script(
                "const img = document.getElementById('stream');"
                "if (!img.complete || img.naturalWidth === 0) return null;"
                "const canvas = document.createElement('canvas');"
                "canvas.width = 64; canvas.height = 48;"
                "const context = canvas.getContext('2d');"
                "context.drawImage(img, 0, 0, 64, 48);"
                "const pixels = context.getImageData(0, 0, 64, 48).data;"
                "let sum = 0; for (let i = 0; i < pixels.length; i += 7) sum += pixels[i];"
                "return [img.naturalWidth, img.naturalHeight, sum];"
            )

        deadline = time.monotonic() + 20
        states = []
        while time.monotonic() < deadline and len({s[2] for s in states}) < 3:
            state = stream_state()
            if state is not None:
                states.append(state)
            time.sleep(0.3)
        assert states and states[-1][:2] == [640, 480]
        assert len({s[2] for s in states}) >= 3  # the picture changes: frames keep coming

        def text(element_id: str) -> str:
            return browser.find_element("id", element_id).text

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            "face" not in text("objects")
            or "zone.intrusion" not in text("events")
            or "zone.intrusion" not in text("totals")  # counts come every second
        ):
            time.sleep(0.3)
        assert text("status") == "live"
        assert "face\n1" in text("objects").replace(" ", "\n")
        first_frame = int(text("frame"))
        first_totals = text("totals")
        time.sleep(2.5)
        assert int(text("frame")) != first_frame  # the counts keep updating
        assert "zone.intrusion" in first_totals and float(text("fps")) > 5
        assert '"zone":"door"' in text("events")
        # The alert is listed with links to its snapshot and clip, token included.
        links = {
            link.get_attribute("class"): link.get_attribute("href")
            for link in browser.find_elements("css selector", "#alerts a")
        }
        base = f"http://127.0.0.1:{live.port}/clips/{CLIP_STEM}"
        assert links == {
            "snapshot": f"{base}.jpg?token={TOKEN}",
            "clip": f"{base}.mp4?token={TOKEN}",
        }
        assert "zone.intrusion" in text("alerts")
        path = os.environ.get("UBIQ_LIVE_SCREENSHOT") or str(tmp_path / "live-view.png")
        assert browser.save_screenshot(path)
        assert os.path.getsize(path) > 20_000
        # The clip plays in the browser: H.264 in MP4, decoded to its frame size.
        browser.get(links["clip"])
        deadline = time.monotonic() + 10
        size = None
        while time.monotonic() < deadline and not size:
            size = browser.execute_script(
                "const video = document.querySelector('video');"
                "return video && video.readyState >= 1 ? [video.videoWidth, video.videoHeight,"
                " video.duration] : null;"
            )
            time.sleep(0.2)
        assert size is not None and size[:2] == [640, 480] and size[2] > 0.5
    finally:
        stop.set()
        feeder.join()
        live.close()
