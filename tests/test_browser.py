"""The app in a real browser: Debian's Chromium driven by Playwright."""

import shutil
import time
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def page(app_url):
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: apt-get install -y chromium (.ci/run does this)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(app_url, wait_until="domcontentloaded")
        page.locator('textarea[data-testid="textbox"]').first.wait_for(timeout=30_000)
        yield page
        browser.close()


RECORD_BOT_TEXT = """() => {
    window.botLengths = [];
    new MutationObserver(() => {
        const bot = document.querySelector('[data-testid="bot"]');
        if (bot) window.botLengths.push(bot.innerText.length);
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_chat_reply_grows_in_the_page(page):
    page.evaluate(RECORD_BOT_TEXT)  # every render of the reply, not just the ones a poll would catch
    box = page.locator('textarea[data-testid="textbox"]').first
    box.fill("Good morrow, sweet lady. What news from Verona?")
    box.press("Enter")
    page.locator('[data-testid="user"]').first.wait_for(timeout=10_000)
    bot = page.locator('[data-testid="bot"]').first
    bot.wait_for(timeout=30_000)
    deadline, last = time.time() + 30, -1
    while time.time() < deadline:  # wait until the reply stops changing
        time.sleep(0.5)
        now = len(bot.inner_text())
        if now == last and now > 0:
            break
        last = now
    lengths = [n for n in page.evaluate("window.botLengths") if n > 0]
    assert lengths and lengths[-1] == len(bot.inner_text())
    if len(bot.inner_text().strip()) > 3:
        assert len(set(lengths)) >= 2, lengths  # seen part-way, then longer: the reply streams into the DOM
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat.png"))


def test_playground_tab_streams_and_shows_probabilities(page):
    page.get_by_role("tab", name="Playground").click()
    page.evaluate("""() => {
        window.completionLengths = [];
        const box = [...document.querySelectorAll('textarea')]
            .find(t => t.closest('.block')?.innerText.includes('completion'));
        new MutationObserver(() => window.completionLengths.push(box.value.length))
            .observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
    }""")
    page.get_by_role("button", name="Complete").click()
    page.locator(".probs .tok").first.wait_for(timeout=30_000)
    lengths = set(page.evaluate("window.completionLengths")) - {0}
    assert len(lengths) >= 3, lengths  # the completion grew in several renders before the probabilities came
    assert page.locator(".probs .tok").count() > 10
    assert page.locator(".probs .tok").first.get_attribute("title")  # top-5 alternatives on hover
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)


def test_model_tab_shows_the_card(page):
    page.get_by_role("tab", name="Model").click()
    page.get_by_text("layers / heads / width").wait_for(timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "model.png"), full_page=True)
