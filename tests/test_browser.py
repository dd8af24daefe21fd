"""The app in a real browser: Debian's Chromium driven by Playwright, at desktop and phone sizes."""

import shutil
import time
from pathlib import Path

import pytest

from gpt.training.data import describe_text

pytestmark = pytest.mark.browser  # the Chromium tier: drives a browser

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
TABS = ["Chat", "Playground", "Ladder", "Model"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: apt-get install -y chromium (.ci/run does this)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


def open_app(browser, url, size="desktop"):
    page = browser.new_page(viewport=SIZES[size])
    page.goto(url, wait_until="domcontentloaded")
    chat_box(page).wait_for(timeout=30_000)
    return page


@pytest.fixture
def page(browser, app_url):
    page = open_app(browser, app_url)
    yield page
    page.close()


def chat_box(page):
    return page.get_by_placeholder("Say something…").or_(page.get_by_placeholder("the start of an item…")).first


def shown_refusal(page, text: str, field=None):
    """Enter on a field (the chat box unless given) until the validator's message holding `text` shows: its locator.

    Gradio's page now and then drops a validator's answer: beside three busy loops, 2 of ~100 fresh pages showed
    nothing although the server had refused the message (a 422 holding it, and the refusal in the app's log). A user
    presses Enter again, and so does this; the message must show then."""
    message, field = page.get_by_text(text).first, field or chat_box(page)
    for wait in (15_000, 45_000):
        field.press("Enter")
        try:
            message.wait_for(timeout=wait)
            return message
        except playwright.Error:
            pass
    said = page.locator("body").inner_text()[:600]
    raise AssertionError(f"no message after two tries; the field holds {field.input_value()!r}; page: {said!r}")


def no_error_overlay(page) -> bool:
    """Nothing on the page is left in Gradio's 'Error' state (the overlay that only a reload used to clear)."""
    return page.get_by_text("Error", exact=True).filter(visible=True).count() == 0


RECORD_BOT_TEXT = """() => {
    window.botLengths = [];
    new MutationObserver(() => {
        const bot = document.querySelector('[data-testid="bot"]');
        if (bot) window.botLengths.push(bot.innerText.length);
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


SCROLL_CHAT_TO_TOP = """e => {
    for (let n = e.parentElement; n; n = n.parentElement)
        if (n.scrollHeight > n.clientHeight + 1 && getComputedStyle(n).overflowY !== "visible") {
            n.scrollTop = 0
            break
        }
}"""


def wait_for_reply(page):
    bot = page.locator('[data-testid="bot"]').last
    bot.wait_for(timeout=30_000)
    deadline, last = time.time() + 30, -1
    while time.time() < deadline:  # until the reply stops changing
        time.sleep(0.5)
        now = len(bot.inner_text())
        if now == last and now > 0:
            break
        last = now
    return bot.inner_text()


def test_chat_reply_grows_in_the_page(page):
    page.evaluate(RECORD_BOT_TEXT)  # every render of the reply, not just the ones a poll would catch
    chat_box(page).fill("Good morrow, sweet lady. What news from Verona?")
    chat_box(page).press("Enter")
    page.locator('[data-testid="user"]').first.wait_for(timeout=10_000)
    reply = wait_for_reply(page)
    lengths = [n for n in page.evaluate("window.botLengths") if n > 0]
    assert lengths and lengths[-1] == len(reply)
    if len(reply.strip()) > 3:
        assert len(set(lengths)) >= 2, lengths  # seen part-way, then longer: the reply streams into the DOM
    assert "seed" in page.get_by_text("seed ").first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "chat.png"))


@pytest.mark.parametrize("message", ["Hi {there}", "   "], ids=["unknown-characters", "whitespace"])
def test_a_bad_message_stays_in_a_usable_box(page, message):
    box = chat_box(page)
    box.fill(message)
    shown_refusal(page, "The message is empty" if not message.strip() else "vocabulary has no")
    assert box.input_value() == message and box.is_enabled() and no_error_overlay(page)
    assert page.get_by_text("Textbox", exact=True).count() == 0  # the message names the field, not its type
    assert page.locator('[data-testid="user"]').count() == 0
    box.fill("Good morrow.")
    box.press("Enter")
    assert wait_for_reply(page)
    assert no_error_overlay(page)
    page.screenshot(path=str(ARTIFACTS / f"chat-error-{'chars' if message.strip() else 'empty'}.png"))


def test_blank_seed_stays_blank_when_the_settings_open(page):
    page.get_by_text("Generation settings").click()
    seed = page.get_by_label("seed (blank = random)")
    seed.wait_for(timeout=10_000)
    assert seed.input_value() == ""


def load_names_model(page) -> None:
    """Load the names model on the Model tab, as a visitor picks it."""
    page.get_by_role("tab", name="Model").click()
    page.get_by_label("model", exact=True).click()
    page.get_by_role("option", name="names (base)", exact=True).click()
    page.get_by_role("button", name="Load", exact=True).click()
    page.get_by_text("Model: names").first.wait_for(timeout=30_000)


def test_a_document_model_gets_its_own_examples_and_prompt(page, names_file):
    first = describe_text(names_file, names_file.read_text(), documents=True)["openings"][0]  # its commonest start
    load_names_model(page)
    assert no_error_overlay(page)
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("a new model starts a new conversation").wait_for(timeout=10_000)
    page.get_by_role("button", name=first, exact=True).click()  # an example for this model, from its text: sent
    assert wait_for_reply(page).startswith(first)
    chat_box(page).fill("Em")
    shown_refusal(page, "only lowercase")
    assert chat_box(page).input_value() == "Em" and no_error_overlay(page)
    page.get_by_role("tab", name="Playground").click()
    assert page.get_by_label("start of an item (blank: a fresh one)").input_value() == ""


def seed_note(page) -> str:
    return page.get_by_text("seed ").first.inner_text()


def test_examples_send_and_the_last_turn_can_be_retried_undone_and_edited(page, play_file):
    first = describe_text(play_file, play_file.read_text(), documents=False)["openings"][0]
    users = page.locator('[data-testid="user"]')
    page.get_by_role("button", name=first, exact=True).click()
    wait_for_reply(page)
    assert users.count() == 1 and users.first.inner_text().strip() == first
    before = seed_note(page)
    page.get_by_role("button", name="Retry").last.click()
    playwright.expect(page.get_by_text("seed ").first).not_to_have_text(before, timeout=20_000)
    wait_for_reply(page)
    assert users.count() == 1 and page.locator('[data-testid="bot"]').count() == 1
    page.get_by_role("button", name="Edit").first.click()
    page.locator("textarea.edit-textarea").fill("What news?")
    page.get_by_role("button", name="Submit").click()
    playwright.expect(users.first).to_have_text("What news?", timeout=20_000)
    wait_for_reply(page)
    assert users.count() == 1
    page.get_by_role("button", name="Undo").last.click()
    playwright.expect(users).to_have_count(0, timeout=10_000)
    assert chat_box(page).input_value() == "What news?" and no_error_overlay(page)


def test_the_conversation_is_kept_across_a_reload_until_cleared(page):
    message = "Good morrow, sweet lady."
    chat_box(page).fill(message)
    chat_box(page).press("Enter")
    reply = wait_for_reply(page)
    page.wait_for_function("() => localStorage.getItem('gpt-chat') !== null", timeout=10_000)
    time.sleep(1.0)  # the copy is written after the Export file, once the turn is done
    page.reload(wait_until="domcontentloaded")
    users = page.locator('[data-testid="user"]')
    playwright.expect(users.first).to_have_text(message, timeout=30_000)
    assert page.locator('[data-testid="bot"]').last.inner_text() == reply
    page.locator("button:has-text('Clear')").click()  # ours, not the chatbot's own icon of that name
    playwright.expect(users).to_have_count(0, timeout=10_000)
    time.sleep(1.0)
    page.reload(wait_until="domcontentloaded")
    chat_box(page).wait_for(timeout=30_000)
    time.sleep(2.0)  # the page's load event has had time to restore anything kept
    assert users.count() == 0 and no_error_overlay(page)


def test_playground_streams_and_keeps_probabilities_when_stopped(page):
    page.get_by_role("tab", name="Playground").click()
    page.get_by_role("button", name="Complete").click()
    page.locator(".probs .tok").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Stop").click()
    time.sleep(1.0)
    shown = page.locator(".probs .tok").count()
    assert shown >= 8 and page.locator(".probs .tok").first.get_attribute("data-alt")
    time.sleep(0.5)
    assert page.locator(".probs .tok").count() == shown  # the stream ended at Stop and kept what it had
    completion = page.get_by_label("completion", exact=True)
    assert completion.count() == 0 or not completion.is_visible()
    page.locator(".probs .tok").first.focus()  # a tap shows the alternatives too
    assert no_error_overlay(page)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)


def test_the_ladder_tab_compares_the_names_models_and_samples_again(page):
    page.get_by_role("tab", name="Ladder").click()
    page.get_by_role("cell", name="names-mlp").wait_for(timeout=60_000)
    assert page.get_by_role("cell", name="mlp", exact=True).count() == 1
    page.get_by_text("**Step 0**".strip("*")).wait_for(timeout=30_000)  # micrograd's network, fresh
    page.get_by_role("button", name="Step", exact=True).click()
    page.get_by_text("Step 1", exact=False).first.wait_for(timeout=30_000)
    assert page.locator("text=after o.backward()").count() >= 1
    assert page.get_by_text("seed 0,").count() == 1
    seed = page.get_by_label("seed (blank = random)").last
    page.get_by_role("button", name="Sample again").click()
    playwright.expect(seed).not_to_have_value("0", timeout=30_000)
    page.get_by_text(f"seed {seed.input_value()},").wait_for(timeout=30_000)
    assert no_error_overlay(page)
    page.screenshot(path=str(ARTIFACTS / "ladder.png"), full_page=True)


def test_model_tab_shows_the_card_and_the_api(page):
    page.get_by_role("tab", name="Model").click()
    page.get_by_text("layers / heads / width").wait_for(timeout=10_000)
    page.get_by_text("Use it from code").click()
    page.get_by_text("/v1/completions").first.wait_for(timeout=10_000)
    assert page.locator('img[alt="loss curve"]').count() == 0  # the card's image link is not left broken
    page.screenshot(path=str(ARTIFACTS / "model.png"), full_page=True)


@pytest.mark.parametrize("size", SIZES)
def test_every_tab_renders_at_each_size(browser, app_url, size):
    page = open_app(browser, app_url, size)
    for tab in TABS:
        page.get_by_role("tab", name=tab).click()
        time.sleep(0.5)
        assert no_error_overlay(page)
        page.screenshot(path=str(ARTIFACTS / f"{tab.lower()}-{size}.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("size", SIZES)
def test_a_long_error_message_wraps_inside_the_screen(browser, app_url, size):
    page = open_app(browser, app_url, size)
    chat_box(page).fill("Hi {there}")
    try:
        message = shown_refusal(page, "vocabulary has no")
    finally:
        page.screenshot(path=str(ARTIFACTS / f"chat-error-{size}.png"), full_page=True)
    box = message.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= SIZES[size]["width"], box
    page.close()


def test_each_generation_control_says_what_it_does(page):
    page.get_by_text("Generation settings").click()
    for words in ["favours the likeliest tokens", "k likeliest next tokens", "share of the probability"]:
        playwright.expect(page.get_by_text(words)).to_be_visible(timeout=10_000)
    assert no_error_overlay(page)


def attention_shown(page) -> str:
    """The Playground's attention of the default prompt, shown: the image's source, to see it redrawn."""
    page.get_by_role("tab", name="Playground").click()
    page.get_by_role("button", name="Show attention").click()
    image = page.locator("#attention-map img")
    image.wait_for(timeout=30_000)
    return image.get_attribute("src")


def redrawn(page, before: str) -> None:
    page.wait_for_function(
        "(before) => { const img = document.querySelector('#attention-map img'); return img && img.src !== before }",
        arg=before,
        timeout=30_000,
    )


def test_attention_follows_the_sliders(page):
    before = attention_shown(page)
    track = page.get_by_label("range slider for layer")
    size = track.bounding_box()
    track.click(position={"x": size["width"] - 2, "y": size["height"] / 2})  # to the last layer, and let go
    redrawn(page, before)
    assert no_error_overlay(page)


def finished_completion(page):
    """Complete the Playground's prompt and wait until its coloured characters stop coming."""
    page.get_by_role("tab", name="Playground").click()
    page.get_by_role("button", name="Complete").click()
    tokens = page.locator(".probs .tok")
    tokens.first.wait_for(timeout=30_000)
    deadline, last = time.time() + 60, -1
    while time.time() < deadline and tokens.count() != last:
        last = tokens.count()
        time.sleep(1.0)
    return tokens


@pytest.mark.parametrize("size", SIZES)
def test_a_characters_alternatives_open_inside_the_screen(browser, app_url, size):
    page = open_app(browser, app_url, size)
    tokens = finished_completion(page)
    rights = tokens.evaluate_all("els => els.map(e => e.getBoundingClientRect().right)")
    rightmost = tokens.nth(max(range(len(rights)), key=rights.__getitem__))
    rightmost.scroll_into_view_if_needed()
    rightmost.hover()
    tip = page.locator("#tok-tip")
    playwright.expect(tip).to_be_visible(timeout=5_000)
    box, width = tip.bounding_box(), SIZES[size]["width"]
    assert box["x"] >= 0 and box["x"] + box["width"] <= width and tip.inner_text().startswith("#"), box
    page.screenshot(path=str(ARTIFACTS / f"playground-tooltip-{size}.png"))
    page.close()


def test_clicking_a_character_shows_its_distribution_and_continues_from_it(page):
    tokens = finished_completion(page)
    prompt = page.get_by_label("prompt", exact=True)
    before = prompt.input_value()
    written = "".join(tokens.all_text_contents()).replace("↵", "\n")
    tokens.nth(4).click()
    playwright.expect(page.get_by_label("number input for position")).to_have_value("5", timeout=10_000)
    page.locator("#distribution img").wait_for(timeout=30_000)
    page.get_by_role("button", name="Continue from here").click()
    playwright.expect(prompt).to_have_value(before + written[:5], timeout=30_000)
    page.locator(".probs .tok").first.wait_for(timeout=30_000)
    assert no_error_overlay(page)
    page.screenshot(path=str(ARTIFACTS / "playground-distribution.png"), full_page=True)


@pytest.mark.parametrize("size", SIZES)
def test_the_ladder_table_keeps_its_words_whole_and_the_chart_its_top(browser, app_url, size):
    page = open_app(browser, app_url, size)
    page.get_by_role("tab", name="Ladder").click()
    page.get_by_role("cell", name="names-mlp").wait_for(timeout=60_000)
    page.locator("#ladder-chart img").wait_for(timeout=30_000)
    lines = page.locator(".ladder-table th").evaluate_all(
        "els => els.map(th => { const r = document.createRange(); r.selectNodeContents(th);"
        " return [th.innerText.trim(), new Set([...r.getClientRects()].map(b => Math.round(b.top))).size] })"
    )
    for word in ("model", "architecture", "parameters"):
        assert [n for text, n in lines if text == word] == [1], lines  # one line: no word broken
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]  # the table scrolls instead
    hidden = page.locator(".ladder-table table").first.evaluate("t => t.scrollWidth > t.clientWidth + 1")
    hint = page.get_by_text("Swipe the table sideways").first
    assert hint.is_visible() == hidden == (size == "phone")  # columns out of sight on a phone, and it says so
    image = page.locator("#ladder-chart img").bounding_box()
    labels = page.locator("#ladder-chart label").filter(visible=True)
    for i in range(labels.count()):  # nothing laid over the chart's top
        box = labels.nth(i).bounding_box()
        assert box["y"] + box["height"] <= image["y"] or box["y"] >= image["y"] + image["height"], (box, image)
    page.screenshot(path=str(ARTIFACTS / f"ladder-table-{size}.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("size", SIZES)
def test_a_bad_ladder_seed_is_a_message_at_the_field_and_the_table_stays(browser, app_url, size):
    page = open_app(browser, app_url, size)
    page.get_by_role("tab", name="Ladder").click()
    page.get_by_role("cell", name="names-mlp").wait_for(timeout=60_000)
    page.get_by_text("Step 0", exact=False).first.wait_for(timeout=60_000)  # the tab's other events are done
    page.locator("#ladder-chart img").wait_for(timeout=60_000)
    seed = page.get_by_label("seed (blank = random)").last
    seed.fill("abc")
    shown_refusal(page, "The seed must be a whole number", seed)
    assert page.get_by_role("cell", name="names-mlp").count() == 1 and page.locator("#ladder-chart img").count() == 1
    assert no_error_overlay(page)
    page.screenshot(path=str(ARTIFACTS / f"ladder-bad-seed-{size}.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("size", SIZES)
def test_nothing_is_laid_over_the_first_message(browser, app_url, size):
    page = open_app(browser, app_url, size)
    chat_box(page).fill("Good morrow.")
    chat_box(page).press("Enter")
    first = page.locator('[data-testid="user"]').first
    first.wait_for(timeout=10_000)
    wait_for_reply(page)
    first.evaluate(SCROLL_CHAT_TO_TOP)  # a long reply scrolls the first message away, under the toolbar
    time.sleep(0.3)
    bubble = first.bounding_box()
    badges = page.get_by_text("conversation", exact=True).filter(visible=True)
    toolbar = page.locator(".top-panel button").filter(visible=True)  # the chat's share, clear and copy icons
    assert toolbar.count() >= 1
    for element in badges.all() + toolbar.all():  # a label badge or the toolbar would cover the first message
        box = element.bounding_box()
        apart = box["y"] + box["height"] <= bubble["y"] or box["y"] >= bubble["y"] + bubble["height"]
        assert apart or box["x"] + box["width"] <= bubble["x"] or box["x"] >= bubble["x"] + bubble["width"], box
    page.screenshot(path=str(ARTIFACTS / f"chat-first-message-{size}.png"))
    page.close()


def test_thumbs_and_retries_are_kept_as_preference_records(browser, tiny_model, app_process, tmp_path):
    """--feedback DIR: a thumb up is a label record; a retried reply then a liked one is a pair; datasets reads both."""
    import json

    from datasets import load_dataset

    with app_process("--feedback", str(tmp_path), env={"MODEL_ID": str(tiny_model)}) as app:
        app.wait_ready()
        page = open_app(browser, app.url + "/")
        assert "Feedback is on" in page.locator("#feedback-note").inner_text()
        chat_box(page).fill("What news?")
        chat_box(page).press("Enter")
        first = wait_for_reply(page)
        page.get_by_role("button", name="Dislike").last.click()
        playwright.expect(page.get_by_text("kept a thumb down")).to_be_visible(timeout=10_000)
        page.get_by_role("button", name="Retry").last.click()
        playwright.expect(page.get_by_text("kept a thumb down")).to_have_count(0, timeout=20_000)
        second = wait_for_reply(page)
        page.get_by_role("button", name="Like").last.click()
        playwright.expect(page.get_by_text("1 preference pair(s)")).to_be_visible(timeout=10_000)
        page.close()
    (labels,) = tmp_path.glob("labels-*.jsonl")
    (pairs,) = tmp_path.glob("pairs-*.jsonl")
    thumbs = [json.loads(line) for line in labels.read_text().splitlines()]
    assert [t["label"] for t in thumbs] == [False, True]
    assert thumbs[0]["prompt"] == [{"role": "user", "content": "What news?"}]
    (pair,) = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert (
        pair["chosen"][0]["content"].strip() == second.strip()
        and pair["rejected"][0]["content"].strip() == first.strip()
    )
    read = load_dataset("json", data_files=str(pairs), split="train")
    assert read[0]["prompt"] == pair["prompt"] and read[0]["chosen"] == pair["chosen"]


@pytest.mark.parametrize("size", SIZES)
def test_the_charts_keep_a_readable_size_and_scroll_on_a_phone(browser, app_url, size):
    """micrograd's graphs and the next-token chart hold words: on a phone they keep a readable width inside a box
    that scrolls sideways, and the page itself never does."""
    page = open_app(browser, app_url, size)
    page.get_by_role("tab", name="Ladder").click()
    graphs = [page.locator(f"#micrograd-{when} img") for when in ("before", "after")]
    for graph in graphs:
        graph.wait_for(timeout=60_000)
        box = graph.bounding_box()
        assert box["width"] >= 600 and box["x"] >= 0, box  # wide, and its left edge in reach: it scrolls from there
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]
    tokens = finished_completion(page)
    tokens.nth(2).click()
    chart = page.locator("#distribution img")
    chart.wait_for(timeout=30_000)
    assert chart.bounding_box()["width"] >= 600 and chart.bounding_box()["x"] >= 0, chart.bounding_box()
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]
    page.screenshot(path=str(ARTIFACTS / f"ladder-graphs-{size}.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("size", SIZES)
def test_a_message_longer_than_the_context_is_said_under_the_chat_not_in_a_toast(browser, app_url, size):
    page = open_app(browser, app_url, size)
    chat_box(page).fill("Good morrow, sweet lady, what news from fair Verona this night? " * 2)
    chat_box(page).press("Enter")
    wait_for_reply(page)
    playwright.expect(page.get_by_text("longer than the model's context").first).to_be_visible(timeout=10_000)
    assert page.locator(".toast-body").filter(visible=True).count() == 0  # nothing laid over the conversation
    page.screenshot(path=str(ARTIFACTS / f"chat-long-message-{size}.png"))
    page.close()


@pytest.mark.parametrize("size", SIZES)
def test_a_layer_typed_in_its_box_redraws_the_attention(browser, app_url, size):
    page = open_app(browser, app_url, size)
    before = attention_shown(page)
    box = page.get_by_label("number input for layer")
    box.fill("1")
    box.press("Enter")
    redrawn(page, before)
    assert no_error_overlay(page)
    page.screenshot(path=str(ARTIFACTS / f"attention-layer-{size}.png"), full_page=True)
    page.close()


def test_export_downloads_the_conversation_and_nothing_after_another_model_is_loaded(page):
    chat_box(page).fill("Good morrow.")
    chat_box(page).press("Enter")
    wait_for_reply(page)
    time.sleep(1.0)  # the Export file is made once the turn is done
    export = page.locator("#chat-export")
    with page.expect_download(timeout=10_000) as download:
        export.click()
    assert "Good morrow." in Path(download.value.path()).read_text(encoding="utf-8")
    load_names_model(page)
    page.get_by_role("tab", name="Chat").click()
    time.sleep(1.0)
    with pytest.raises(playwright.TimeoutError):  # the last model's conversation is gone, and so is its file
        with page.expect_download(timeout=3_000):
            page.locator("#chat-export").click()
    assert no_error_overlay(page)
