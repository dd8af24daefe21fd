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


def test_chat_reply_grows_in_the_page(page):
    box = page.locator('textarea[data-testid="textbox"]').first
    box.fill("Good morrow, sweet lady.")
    box.press("Enter")
    page.locator('[data-testid="user"]').first.wait_for(timeout=10_000)
    bot = page.locator('[data-testid="bot"]').first
    bot.wait_for(timeout=30_000)
    lengths, deadline = [], time.time() + 30
    while time.time() < deadline:
        lengths.append(len(bot.inner_text()))
        if len(lengths) > 5 and lengths[-1] == lengths[-5] and lengths[-1] > 0:
            break
        time.sleep(0.05)
    assert lengths[-1] > 0
    assert len(set(lengths)) >= 2  # seen part-way, then longer: the reply streams into the DOM
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat.png"))


def test_playground_tab_shows_probabilities(page):
    page.get_by_role("tab", name="Playground").click()
    page.get_by_role("button", name="Complete").click()
    page.locator(".probs .tok").first.wait_for(timeout=30_000)
    assert page.locator(".probs .tok").count() > 10
    assert page.locator(".probs .tok").first.get_attribute("title")  # top-5 alternatives on hover
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)


def test_model_tab_shows_the_card(page):
    page.get_by_role("tab", name="Model").click()
    page.get_by_text("layers / heads / width").wait_for(timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "model.png"), full_page=True)
