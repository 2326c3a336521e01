"""The web keyboard in a real browser (Debian's chromium via Playwright): type, see 3 suggestions, pick one."""

import os
from pathlib import Path

import pytest

from nextchar.serve import server_process

CHROMIUM = Path("/usr/bin/chromium")
# CI sets this so a missing browser fails the run instead of quietly skipping the page test
REQUIRED = os.environ.get("NEXTCHAR_REQUIRE_BROWSER") == "1"


def _why_not() -> str | None:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} not found: `make setup` installs Debian's chromium when run as root with apt"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: `make setup` installs it"
    return None


WHY_NOT = _why_not()
if WHY_NOT and REQUIRED:
    raise RuntimeError(f"NEXTCHAR_REQUIRE_BROWSER=1 but {WHY_NOT}")
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

READY = """prefix => { const g = document.getElementById('suggestions');
                    return g.dataset.ready === 'true' && g.dataset.prefix === prefix; }"""


@pytest.fixture(scope="module")
def url(tiny_run):
    with server_process(tiny_run) as u:
        yield u


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # executable_path: Debian's own chromium; Playwright must never download a browser of its own
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser, url):
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)  # generous: a loaded 2-core machine can be slow, never wrong
    pg.goto(url)
    pg.wait_for_function(READY, arg="")  # the page asks for the empty prefix on load
    yield pg
    ctx.close()


def type_and_wait(page, box, text: str) -> None:
    """Type into the text box like a person and wait until the buttons show suggestions for that text."""
    box.click()
    page.keyboard.type(text)
    page.wait_for_function(READY, arg=text)


def suggestions(page) -> list[str]:
    return [b.get_attribute("data-char") for b in page.locator(".sugg").all()]


def test_type_see_three_pick_one(page):
    box = page.locator("#text")
    type_and_wait(page, box, "Hello wor")
    chars = suggestions(page)
    assert len(chars) == 3 and all(len(c) == 1 for c in chars) and len(set(chars)) == 3
    assert page.locator(".sugg .prob").first.inner_text().endswith("%")
    assert page.locator("#latency").inner_text().endswith("ms")
    page.locator(".sugg").nth(1).click()  # the second suggestion
    assert box.input_value() == "Hello wor" + chars[1]
    page.wait_for_function(READY, arg="Hello wor" + chars[1])  # and the buttons follow the new text
    # Alt+1 picks the best one; a plain digit is text while the digit toggle is off
    best = suggestions(page)[0]
    page.keyboard.press("Alt+1")
    assert box.input_value() == "Hello wor" + chars[1] + best
    page.keyboard.type("1")
    assert box.input_value().endswith(best + "1")


def test_digit_keys_pick_when_the_toggle_is_on(page):
    page.locator("#digits").check()
    box = page.locator("#text")
    type_and_wait(page, box, "The qui")
    third = suggestions(page)[2]
    page.keyboard.press("3")
    assert box.input_value() == "The qui" + third


def test_hebrew_right_to_left(page):
    box = page.locator("#text")
    type_and_wait(page, box, "שלום עו")
    chars = suggestions(page)
    assert len(chars) == 3 and all(chars)
    assert box.evaluate("el => getComputedStyle(el).direction") == "rtl"
    assert page.locator(".sugg").first.get_attribute("dir") == "auto"
    page.locator(".sugg").first.click()
    assert box.input_value() == "שלום עו" + chars[0]


def test_invisible_characters_get_visible_labels(page):
    assert page.evaluate("label(' ')") == "␣"
    assert page.evaluate("label('\\u05b8')") == "\u25cc\u05b8"  # a Hebrew vowel point sits on a dotted circle
    assert page.evaluate("label('\\u200c')") == "ZWNJ"  # Persian's zero-width non-joiner
    assert page.evaluate("label('a')") == "a"


def test_adaptation_is_on_and_done_remembers(page, url):
    import httpx

    assert page.locator("#adapt").is_checked()
    box = page.locator("#text")
    type_and_wait(page, box, "vizqubel vizqubel")
    assert "(adapted)" in page.locator("#model").inner_text()
    page.locator("#done").click()
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Remembered')")
    assert box.input_value() == ""
    assert httpx.get(url + "healthz").json()["sessions"] >= 1
    assert len(page.evaluate("session")) == 32  # made in the tab (16 random bytes as hex)
