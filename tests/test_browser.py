"""End to end in a real headless Chromium: draw digits on the page with the mouse, read the answer;
read the API docs. Every request to a host other than the server is blocked, as on a machine
with no internet: the page and the docs must work from what the server itself serves.

Needs Debian's chromium (``.ci/run`` installs it) and Playwright for Python; without either
the test is skipped with the reason, and the rest of the suite still runs.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

playwright = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# as root in a container Chromium needs --no-sandbox; the network flags keep it from calling home
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "runs" / "screenshots"

# strokes in canvas units (the canvas is 420x280), drawn the way a person would
STROKES = {
    1: [[(150, 45), (146, 120), (142, 235)]],
    7: [[(70, 60), (210, 60), (190, 110), (150, 180), (125, 240)]],
    0: [[(140, 40), (95, 60), (75, 140), (95, 220), (140, 240), (185, 220), (205, 140), (185, 60), (140, 40)]],
}


def offline(page, server: str) -> list[str]:
    """Block every request that does not go to ``server``; returns the list of blocked URLs."""
    blocked: list[str] = []
    origin = urlsplit(server).netloc

    def route(r):
        if urlsplit(r.request.url).netloc == origin:
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return blocked


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); browser test skipped")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, live_server):
    page = browser.new_page(viewport={"width": 1000, "height": 640})
    page.blocked = offline(page, live_server)
    page.goto(live_server)
    page.wait_for_selector("#model:not(:empty)")
    yield page
    assert page.blocked == [], f"the page asked another host for {page.blocked}"
    page.close()


def test_the_api_docs_render_with_no_other_host(browser, live_server):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    blocked = offline(page, live_server)
    page.goto(live_server + "docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    paths = {p.strip() for p in page.locator(".opblock-summary-path").all_text_contents()}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "docs.png"))
    page.close()
    assert {"/api/predict", "/api/health", "/api/model"} <= paths, paths
    assert blocked == [], blocked


def draw(page, strokes):
    box = page.locator("#pad").bounding_box()
    sx, sy = box["width"] / 420, box["height"] / 280
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * sx, box["y"] + y * sy)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * sx, box["y"] + y * sy, steps=8)
        page.mouse.up()


@pytest.mark.parametrize("digit", sorted(STROKES))
def test_drawing_a_digit_shows_its_label(page, digit):
    page.click("#clear")
    assert page.text_content("#prediction") == "?"
    draw(page, STROKES[digit])
    page.wait_for_function("document.querySelector('#confidence').textContent.includes('sure')", timeout=10_000)
    # the answer settles once the last stroke has been sent
    page.wait_for_function(f"document.querySelector('#prediction').textContent === '{digit}'", timeout=10_000)
    bars = page.locator(".bar.top").count()
    assert bars == 1
    page.wait_for_timeout(300)  # let the bars finish their transition
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"draw-{digit}.png"))


def shifted(strokes, dx: int):
    return [[(x + dx, y) for x, y in stroke] for stroke in strokes]


# a 4 in two strokes (the way most people write it) and a 2: 420 canvas units hold both, a gap between
FOUR = [[(70, 60), (40, 170), (140, 170)], [(115, 80), (112, 240)]]
TWO = [[(230, 90), (270, 55), (330, 60), (345, 110), (300, 170), (235, 235), (360, 235)]]


def test_drawing_a_number_shows_the_number_and_a_box_per_digit(page):
    page.click("#clear")
    draw(page, FOUR + TWO)
    page.wait_for_function("document.querySelector('#prediction').textContent === '42'", timeout=10_000)
    assert page.locator(".digit").count() == 2 and page.locator(".bar.top").count() == 2
    assert "4:" in page.text_content("#confidence") and "2:" in page.text_content("#confidence")
    # the boxes are drawn on the overlay: it has ink now
    inked = page.evaluate("""() => { const c = document.querySelector('#boxes');
        return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v > 0); }""")
    assert inked
    page.wait_for_timeout(300)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "draw-42.png"))
    page.click("#clear")  # and back to one digit: one panel of bars, no boxes
    draw(page, shifted(STROKES[7], 70))
    page.wait_for_function("document.querySelector('#prediction').textContent === '7'", timeout=10_000)
    assert page.locator(".digit").count() == 1


def test_clear_resets_the_answer(page):
    page.click("#clear")
    draw(page, STROKES[1])
    page.wait_for_function("document.querySelector('#prediction').textContent !== '?'", timeout=10_000)
    page.click("#clear")
    assert page.text_content("#prediction") == "?"
    time.sleep(0.5)  # an answer still in flight must not bring the old digit back
    assert page.text_content("#prediction") == "?"
