"""The keyboard page in a real browser (Debian's chromium via Playwright) against a real server and tiny model.

Typing by dwell and by one-switch scanning, word completion, undo, speech, right-to-left layout, the 400 px
layout, an axe-core accessibility check, the page keeping the user's text through failures, and /docs
offline. Screenshots go to test-artifacts/ (git-ignored) for a reviewer to look at.
"""

import contextlib
import os
from pathlib import Path

import pytest

from nextchar.serve import server_process

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = ROOT / "test-artifacts"
# CI sets this so a missing browser (or axe-core) fails the run instead of quietly skipping the page test
REQUIRED = os.environ.get("NEXTCHAR_REQUIRE_BROWSER") == "1"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-sync",
        "--disable-background-networking", "--disable-component-update"]


def _why_not() -> str | None:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} not found: `make test` installs Debian's chromium when run as root with apt"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: `make setup` installs it"
    return None


WHY_NOT = _why_not()
if WHY_NOT and REQUIRED:
    raise RuntimeError(f"NEXTCHAR_REQUIRE_BROWSER=1 but {WHY_NOT}")
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

READY = """t => { const b = document.getElementById('board');
                 return b.dataset.ready === 'true' && b.dataset.prefix === t; }"""
VALUE = "document.getElementById('text').value"


@pytest.fixture(scope="module")
def url(tiny_run):
    with server_process(tiny_run) as u:
        yield u


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # executable_path: Debian's own chromium; Playwright must never download a browser of its own
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


def open_page(browser, url, width=1280, height=1100, init=None):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    if init:
        ctx.add_init_script(init)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)  # generous: a loaded 2-core machine can be slow, never wrong
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(url)
    pg.wait_for_function("document.body.dataset.keys === 'ready'")
    pg.wait_for_function(READY, arg="")  # the page asks for the empty prefix on load
    pg.errors = errors
    return ctx, pg


@pytest.fixture
def page(browser, url):
    ctx, pg = open_page(browser, url)
    yield pg
    assert pg.errors == []  # no uncaught script error in any test
    ctx.close()


def wait_ready(page) -> str:
    """Wait until both suggestion rows are for the text before the cursor; return the box's text."""
    page.wait_for_function("() => document.getElementById('board').dataset.ready === 'true' && "
                           "document.getElementById('board').dataset.prefix === prefixNow()")
    return page.evaluate(VALUE)


def type_and_wait(page, text: str) -> None:
    """Type into the text box like a person and wait until the suggestions are for that text."""
    page.locator("#text").click()
    page.keyboard.type(text)
    page.wait_for_function(READY, arg=text)


def chars(page) -> list[str]:
    return page.eval_on_selector_all("#chars .sugg", "bs => bs.map(b => b.disabled ? null : b.dataset.char)")


def words(page) -> list[str]:
    return page.eval_on_selector_all("#words .sugg", "bs => bs.map(b => b.disabled ? null : b.dataset.text)")


def open_settings(page) -> None:
    if not page.evaluate("document.getElementById('settings').open"):
        page.locator("#settings summary").click()


def remember(url: str, page, text: str, times: int = 3) -> None:
    """Tell the server (as this page's session) that the user wrote `text` before, so suggestions know it."""
    import httpx

    sid = page.evaluate("session")
    for _ in range(times):
        r = httpx.post(url + "v1/session/observe", json={"session": sid, "text": text})
        assert r.status_code == 200


def target_for(page, typed: str, sentence: str) -> tuple[str, str]:
    """What a user aiming at `sentence` picks next: a completion that gives the next word, else a character
    suggestion that is the next character, else the key. Returns (selector, kind)."""
    rest = sentence[len(on_track(typed, sentence)):]
    for i, w in enumerate(words(page)):
        # the page adds a space after a completed word; a full stop typed next takes that space's place
        if w and rest.startswith(w) and len(rest) > len(w) and rest[len(w)] in " .":
            return f"#words .sugg[data-slot='{i}']", "word"
    for i, c in enumerate(chars(page)):
        if c == rest[0]:
            return f"#chars .sugg[data-slot='{i}']", "char"
    if rest[0] == " ":
        return "#space", "key"
    return f"#keys .key[data-char='{rest[0]}']", "key"


def on_track(typed: str, sentence: str) -> str:
    """The part of `typed` that is the sentence's beginning; a completed word's space before the sentence's
    full stop counts too (the full stop will take its place)."""
    if sentence.startswith(typed):
        return typed
    assert typed.endswith(" ") and sentence.startswith(typed[:-1] + "."), (typed, sentence)
    return typed[:-1]


def shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


# ------------------------------------------------------------------------------------------ suggestions


def test_type_see_words_and_characters_pick_one(page):
    type_and_wait(page, "Hello wor")
    cs = chars(page)
    assert len(cs) == 3 and all(c and len(c) == 1 for c in cs) and len(set(cs)) == 3
    ws = [w for w in words(page) if w]
    assert ws and all(w.strip() == w and w for w in ws)  # rests of the word: no spaces, never empty
    assert page.locator("#chars .prob").first.inner_text().endswith("%")
    assert page.locator("#latency").inner_text().endswith("ms")
    page.locator("#chars .sugg").nth(1).click()  # the second character
    assert page.evaluate(VALUE) == "Hello wor" + cs[1]
    now = wait_ready(page)
    best = chars(page)[0]
    page.keyboard.press("Alt+4")  # Alt+4..6 pick characters, Alt+1..3 words
    assert page.evaluate(VALUE) == now + best
    page.keyboard.type("1")  # a plain digit is text while the digit toggle is off
    assert page.evaluate(VALUE) == now + best + "1"


def test_digit_keys_pick_when_the_toggle_is_on(page):
    open_settings(page)
    page.locator("[data-toggle='digits']").click()
    assert page.locator("[data-toggle='digits']").get_attribute("aria-pressed") == "true"
    type_and_wait(page, "The qui")
    third = chars(page)[2]
    page.keyboard.press("6")
    assert page.evaluate(VALUE) == "The qui" + third
    wait_ready(page)
    first_word = words(page)[0]
    assert first_word  # the tiny model always finds some way to go on
    page.keyboard.press("1")
    assert page.evaluate(VALUE) == "The qui" + third + first_word + " "


def test_completion_backspace_and_undo(page, url):
    remember(url, page, "Jerusalem is an old city. Jerusalem is an old city.")
    type_and_wait(page, "Jerus")
    ws = words(page)
    assert "alem" in ws  # the remembered word completes
    page.locator(f"#words .sugg[data-slot='{ws.index('alem')}']").click()
    assert page.evaluate(VALUE) == "Jerusalem "  # one selection types the rest of the word and a space
    wait_ready(page)
    page.locator("#chars .sugg").first.click()
    after = page.evaluate(VALUE)
    assert len(after) == len("Jerusalem ") + 1
    page.locator("#backspace").click()
    assert page.evaluate(VALUE) == "Jerusalem "
    page.locator("#backspace").click()
    assert page.evaluate(VALUE) == "Jerusalem"
    page.locator("#undo").click()
    assert page.evaluate(VALUE) == "Jerusalem "
    page.locator("#undo").click()
    assert page.evaluate(VALUE) == after
    page.locator("#clear").click()
    assert page.evaluate(VALUE) == ""
    page.locator("#undo").click()  # even Clear is undone
    assert page.evaluate(VALUE) == after
    page.locator("#text").click()
    page.keyboard.press("Control+z")  # the keyboard's undo is the same history
    assert page.evaluate(VALUE) == "Jerusalem "


def test_punctuation_takes_the_space_of_a_completed_word(page, url):
    remember(url, page, "We met in Jerusalem, then in Paris.")
    type_and_wait(page, "We met in Jeru")
    ws = words(page)
    assert "salem" in ws
    page.keyboard.press(f"Alt+{ws.index('salem') + 1}")
    assert page.evaluate(VALUE) == "We met in Jerusalem "
    wait_ready(page)
    page.locator("#panes [data-pane='symbols']").click()
    page.locator("#keys .key[data-char=',']").click()
    assert page.evaluate(VALUE) == "We met in Jerusalem,"


def test_page_helpers(page):
    assert page.evaluate("label(' ')") == "␣"
    assert page.evaluate("label('\\u05b8')") == "\u25cc\u05b8"  # a Hebrew vowel point sits on a dotted circle
    assert page.evaluate("label('\\u200c')") == "ZWNJ"  # Persian's zero-width non-joiner
    # the optional `language` of a predict answer, in any of the shapes a model might give it
    assert page.evaluate("parseLanguage('he')") == "he"
    assert page.evaluate("parseLanguage({en: 0.2, de: 0.7, fr: 0.1})") == "de"
    assert page.evaluate("parseLanguage([{language: 'fa', prob: 0.9}])") == "fa"
    assert page.evaluate("parseLanguage(undefined)") is None
    # Done's text: the last max_text characters, fewer when JSON would escape them past the body limit
    got = page.evaluate("""() => { const t = 'ab'.repeat(15000); const s = fitForServer(t);
                                  return [s.length, t.endsWith(s)]; }""")
    assert got == [20000, True]
    got = page.evaluate("""() => { const t = '\\u0001'.repeat(30000); const s = fitForServer(t);
        const bytes = new TextEncoder().encode(JSON.stringify({session, text: s})).length;
        return [s.length < 20000, s.length > 5000, bytes <= config.maxBody, t.endsWith(s)]; }""")
    assert got == [True, True, True, True]


def test_forget_starts_a_new_session(page):
    old = page.evaluate("session")
    type_and_wait(page, "abc")
    page.locator("#forget").click()
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Forgotten')")
    assert page.evaluate("session") != old and page.evaluate(VALUE) == "abc"  # the text stays


# ------------------------------------------------------------------------------------------ access methods


def test_dwell_types_a_sentence_without_clicks(page, url):
    sentence = "the lazy dog jumps over the quick fox."
    open_settings(page)
    for _ in range(5):  # 800 ms -> 300 ms, the shortest
        page.locator("[data-step='dwellMs'][data-by='-100']").click()
    assert page.locator("#dwellMs").inner_text() == "300 ms"
    page.locator("[data-set='access'][data-value='dwell']").click()
    page.mouse.move(2, 2)  # off every target
    page.reload()  # the setting persists
    page.wait_for_function("document.body.dataset.keys === 'ready'")
    assert page.locator("[data-set='access'][data-value='dwell']").get_attribute("aria-pressed") == "true"
    assert page.evaluate("document.documentElement.dataset.access") == "dwell"
    remember(url, page, sentence)
    page.wait_for_function(READY, arg="")
    typed, selections, completed = "", 0, 0
    while typed != sentence:
        sel, kind = target_for(page, typed, sentence)
        if kind == "key" and not page.locator(sel).is_visible():
            pytest.fail(f"no key for {sentence[len(typed)]!r}")
        page.locator(sel).hover()
        # the fill is visible while it runs
        page.wait_for_function(f"() => {VALUE} !== {typed!r}", timeout=10_000)
        page.mouse.move(2, 2)  # look away, as the same target must be left before it fires again
        selections += 1
        completed += kind == "word"
        typed = wait_ready(page)
        on_track(typed, sentence)
    assert completed >= 1 and selections < len(sentence), (selections, completed)
    assert page.evaluate("document.querySelectorAll('.dwelling').length") == 0


def test_dwell_shows_a_fill_and_waits_the_dwell_time(page):
    open_settings(page)
    page.locator("[data-set='access'][data-value='dwell']").click()  # 800 ms
    page.mouse.move(2, 2)
    key = page.locator("#keys .key").first
    ch = key.get_attribute("data-char")
    # the page's own clock: a loaded machine may delay this test's steps, never the page's timers
    t0 = page.evaluate(f"""() => {{ window.typedAt = null;
        const poll = () => {{ if ({VALUE} !== '') window.typedAt = performance.now(); else requestAnimationFrame(poll); }};
        requestAnimationFrame(poll); return performance.now(); }}""")
    key.hover()
    assert key.evaluate("b => b.classList.contains('dwelling') && getComputedStyle(b, '::after').animationName") \
        == "dwell-fill"
    page.wait_for_timeout(300)
    now, value = page.evaluate(f"[performance.now(), {VALUE}]")
    if now - t0 < 700:
        assert value == ""  # not yet: 800 ms
        shot(page, "keyboard-dwell.png")  # the bar part full
    page.wait_for_function("() => window.typedAt !== null")
    assert page.evaluate("window.typedAt") - t0 >= 800 - 20  # it fired after the dwell time (one frame's slack)
    assert page.evaluate(VALUE) == ch
    page.wait_for_timeout(1200)  # resting on it does not repeat it
    assert page.evaluate(VALUE) == ch


def test_scanning_types_a_sentence_with_one_key(page, url):
    sentence = "the old city."
    open_settings(page)
    for _ in range(6):  # 1.0 s -> 0.4 s per step
        page.locator("[data-step='scanMs'][data-by='-100']").click()
    assert page.locator("#scanMs").inner_text() == "0.4 s"
    page.locator("[data-set='access'][data-value='scan']").click()
    page.locator("#text").focus()  # the switch key must not type a space there
    remember(url, page, sentence)
    page.evaluate("predict(true)")
    wait_ready(page)
    typed, presses, selections, completed = "", 0, 0, 0
    while typed != sentence:
        sel, kind = target_for(page, typed, sentence)
        # wait until the target's row lights up, press; until the target itself does, press (unless the row
        # has only that target, which the row press picks)
        page.wait_for_function(f"() => document.querySelector({sel!r}).classList.contains('scan-row')")
        page.keyboard.press("Space")
        presses += 1
        if selections == 0:
            shot(page, "keyboard-scanning.png")  # a row picked: its keys light up one by one
        if page.evaluate(f"{VALUE} === {typed!r}"):
            page.wait_for_function(f"() => document.querySelector({sel!r}).classList.contains('scan-item')")
            page.keyboard.press("Space")
            presses += 1
        page.wait_for_function(f"() => {VALUE} !== {typed!r}")
        selections += 1
        completed += kind == "word"
        typed = wait_ready(page)
        on_track(typed, sentence)
    assert completed >= 1 and selections < len(sentence), (selections, completed)
    assert presses <= 2 * selections
    open_settings(page)
    page.locator("[data-set='access'][data-value='touch']").click()  # a click still works while scanning
    assert page.evaluate("document.querySelectorAll('.scan-row, .scan-item').length") == 0


def test_keyboard_only(page):
    page.locator("#text").focus()
    for _ in range(30):  # Tab reaches the letter keys (one tab stop for all of them)
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('key')"):
            break
    else:
        pytest.fail("Tab never reached the keys")
    first = page.evaluate("document.activeElement.dataset.char")
    page.keyboard.press("ArrowRight")
    second = page.evaluate("document.activeElement.dataset.char")
    assert second != first
    page.keyboard.press("Enter")
    assert page.evaluate(VALUE) == second
    page.keyboard.press("ArrowDown")  # a key in the next row
    below = page.evaluate("document.activeElement.getBoundingClientRect().top")
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.activeElement.dataset.char") == second
    assert below > page.evaluate("document.activeElement.getBoundingClientRect().top")


def test_settings_persist_and_themes_apply(page):
    open_settings(page)
    page.locator("[data-set='theme'][data-value='contrast']").click()
    page.locator("[data-set='size'][data-value='large']").click()
    page.locator("[data-set='order'][data-value='abc']").click()
    page.reload()
    page.wait_for_function("document.body.dataset.keys === 'ready'")
    root = page.evaluate("[document.documentElement.dataset.theme, document.documentElement.dataset.size]")
    assert root == ["contrast", "large"]
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(0, 0, 0)"
    letters = page.eval_on_selector_all("#keys .key", "bs => bs.map(b => b.dataset.char)")
    latin = [c for c in letters if c.isalpha()]
    assert latin[:3] == ["a", "b", "c"]  # alphabetical order


# ------------------------------------------------------------------------------------------ speech, scripts, layout


SPOKEN = """window.__spoken = [];
if (window.speechSynthesis) {
  window.speechSynthesis.speak = (u) => window.__spoken.push({ text: u.text, lang: u.lang });
}"""


def test_speak_uses_speech_synthesis_in_the_texts_language(browser, url):
    ctx, page = open_page(browser, url, init=SPOKEN)
    try:
        type_and_wait(page, "Good morning")
        page.locator("#speak").click()
        spoken = page.evaluate("window.__spoken")
        assert [x["text"] for x in spoken] == ["Good morning"] and spoken[0]["lang"].startswith("en")
        page.evaluate("document.getElementById('text').value = ''")
        type_and_wait(page, "שלום לכולם")
        page.locator("#speak").click()
        assert page.evaluate("window.__spoken")[-1] == {"text": "שלום לכולם", "lang": "he"}  # the script's language
    finally:
        ctx.close()


def test_hebrew_lays_out_right_to_left(page):
    type_and_wait(page, "שלום עולם")
    assert page.evaluate("getComputedStyle(document.getElementById('text')).direction") == "rtl"
    assert page.evaluate("getComputedStyle(document.getElementById('board')).direction") == "rtl"
    assert page.locator("#script").inner_text().startswith("Hebrew")
    keys = page.locator("#keys .key")
    letters = page.eval_on_selector_all("#keys .key", "bs => bs.map(b => b.dataset.char)")
    assert all("\u0590" <= c <= "\u05ff" for c in letters if c.isalpha()) and len(letters) >= 20
    a, b = keys.nth(0).bounding_box(), keys.nth(1).bounding_box()
    assert a["x"] > b["x"]  # the first key is on the right
    w0, w1 = (page.locator(f"#chars .sugg[data-slot='{i}']").bounding_box() for i in (0, 1))
    assert w0["x"] > w1["x"]  # so is the best suggestion
    assert page.evaluate("document.getElementById('text').lang") == "he"
    assert page.locator("#shift").is_disabled()  # Hebrew has no capitals
    keys.nth(0).click()
    assert page.evaluate(VALUE) == "שלום עולם" + letters[0]
    shot(page, "keyboard-hebrew.png")


def test_script_button_overrides_the_text(page):
    type_and_wait(page, "Hello")
    assert page.locator("#script").inner_text().startswith("Latin")
    for _ in range(10):
        page.locator("#script").click()
        if page.locator("#script").inner_text().startswith("Greek"):
            break
    letters = page.eval_on_selector_all("#keys .key", "bs => bs.map(b => b.dataset.char)")
    assert any("\u03b1" <= c <= "\u03c9" for c in letters)
    page.locator("#keys .key").first.click()
    assert page.locator("#script").inner_text().startswith("Greek")  # a choice, not a guess: it stays


FITS = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('button, select, summary, textarea, input')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;  // not shown (a closed panel)
    if (r.width < 44 || r.height < 44) bad.push(`${el.id || el.className || el.tagName} ${el.textContent.trim().slice(0, 12)}: ${r.width.toFixed(0)}x${r.height.toFixed(0)}`);
  }
  const wide = document.documentElement.scrollWidth > window.innerWidth;
  return { bad, wide, scroll: document.documentElement.scrollWidth };
}"""


@pytest.mark.parametrize("size", ["normal", "large"])
def test_400px_no_horizontal_scroll_and_big_targets(browser, url, size):
    ctx, page = open_page(browser, url, width=400, height=900)
    try:
        open_settings(page)
        page.locator(f"[data-set='size'][data-value='{size}']").click()
        page.locator("#help summary").click()
        type_and_wait(page, "Hello wor")
        for pane in ("letters", "more", "symbols"):
            page.locator(f"#panes [data-pane='{pane}']").click()
            got = page.evaluate(FITS)
            assert got["bad"] == [] and not got["wide"], (pane, got)
        page.locator("#panes [data-pane='letters']").click()
        page.evaluate("document.getElementById('text').value = ''")
        type_and_wait(page, "שלום עו")
        got = page.evaluate(FITS)
        assert got["bad"] == [] and not got["wide"], got
        if size == "normal":
            page.evaluate("document.getElementById('text').value = ''")
            type_and_wait(page, "Hello wor")
            page.locator("#settings summary").click()
            page.locator("#help summary").click()
            shot(page, "keyboard-400px.png")
    finally:
        ctx.close()


def test_desktop_screenshots(browser, url):
    ctx, page = open_page(browser, url, width=1280, height=900)
    try:
        type_and_wait(page, "Hello wor")
        shot(page, "keyboard-desktop.png")
        open_settings(page)
        page.locator("[data-set='theme'][data-value='contrast']").click()
        page.locator("[data-set='size'][data-value='large']").click()
        shot(page, "keyboard-contrast-large.png")
    finally:
        ctx.close()


@pytest.mark.parametrize("theme", ["standard", "contrast"])
def test_axe_finds_no_serious_problems(page, theme):
    if not AXE.is_file():
        if REQUIRED:
            pytest.fail(f"{AXE} missing: `make test` installs axe-core with npm")
        pytest.skip(f"{AXE} missing: run `npm ci` (or `make test`)")
    open_settings(page)
    page.locator(f"[data-set='theme'][data-value='{theme}']").click()
    page.locator("#help summary").click()
    type_and_wait(page, "Hello wor")
    page.locator("#status").evaluate("el => el.textContent = ''")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
           if v["impact"] in ("serious", "critical")]
    assert bad == []


# ------------------------------------------------------------------------------------------ never losing text


def test_long_text_done_server_restart_and_reload_keep_the_text(browser, tiny_run):
    from conftest import TINY_TEXTS

    long = (TINY_TEXTS["en"] * 40)[:71_400]
    stack = contextlib.ExitStack()
    url = stack.enter_context(server_process(tiny_run))
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    ctx, page = open_page(browser, url)
    try:
        page.locator("#text").focus()
        page.keyboard.insert_text(long)  # a paste
        wait_ready(page)
        page.locator("#done").click()
        # the page sends what the server keeps (its last 20,000 characters) and says so
        status = page.locator("#status")
        page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Remembered')")
        assert status.inner_text().startswith("Remembered the last 20,000 of 71,400 characters")
        assert "this session remembers" in status.inner_text()
        assert page.evaluate(VALUE) == ""
        wait_ready(page)
        page.wait_for_timeout(500)  # predictions come and go; the message stays
        assert status.inner_text().startswith("Remembered the last 20,000")
        page.locator("#undo").click()
        assert page.evaluate(VALUE) == long
        wait_ready(page)

        stack.close()  # the server goes away
        page.locator("#done").click()
        page.wait_for_function("() => document.getElementById('status').classList.contains('error')")
        assert status.inner_text().startswith("Could not remember your text")
        assert page.evaluate(VALUE) == long  # never cleared on failure
        page.wait_for_timeout(300)
        assert status.inner_text().startswith("Could not remember your text")  # stays until the next action
        page.locator("#text").focus()
        page.keyboard.press("End")
        page.keyboard.type("!")
        page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Cannot reach')")
        assert page.evaluate(VALUE) == long + "!"

        url2 = stack.enter_context(server_process(tiny_run, port=port))  # back on the same address
        assert url2 == url
        page.wait_for_function("() => document.getElementById('status').textContent === 'Connected again.'",
                               timeout=30_000)
        wait_ready(page)
        page.reload()  # the draft is kept in the browser
        page.wait_for_function("document.body.dataset.keys === 'ready'")
        assert page.evaluate(VALUE) == long + "!"
        assert status.inner_text().startswith("Your text from last time is back (71,401 characters)")
        assert page.errors == []
    finally:
        ctx.close()
        stack.close()


def test_docs_and_redoc_work_offline(browser, url):
    ctx = browser.new_context()
    page = ctx.new_page()
    outside = []

    def only_local(route):
        if route.request.url.startswith(url):
            route.continue_()
        else:
            outside.append(route.request.resource_type)
            route.abort()

    page.route("**/*", only_local)
    page.goto(url + "docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=30_000)
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent.trim())")
    assert "/v1/predict" in paths and "/v1/keys" in paths
    assert outside == []
    page.goto(url + "redoc")
    page.wait_for_selector("[data-section-id^='operation/']", timeout=30_000)
    assert page.locator("[data-section-id^='operation/']").count() >= 5
    assert set(outside) <= {"image"}  # ReDoc asks only for its maker's logo, and renders without it
    ctx.close()
