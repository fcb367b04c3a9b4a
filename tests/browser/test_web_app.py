"""The web app as a new user meets it, in Chromium at a desktop (1366×768) and a phone (390×844) size:
finding Go live, going live, retitling while live, the player's controls by keyboard, the end card with
the recording, and the pages around them (404s, next= through sign-up, the chat box)."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from live_pages import end_stream, go_live, inbound, log_in, ready, wait_playing
from page_checks import AXE, artifact, check_page
from playwright.sync_api import Page, expect

from conftest import Server

if TYPE_CHECKING:
    from tests.browser.conftest import Browser

    OpenBrowser = Callable[..., Browser]

pytestmark = pytest.mark.browser

DESKTOP = (1366, 768)
PHONE = (390, 844)


def sign_up(page: Page, server: Server, name: str) -> None:
    page.fill("#username", name)
    page.fill("#email", f"{name}@example.com")
    page.fill("#password", server.password)
    page.click("#signup-form button[type=submit]")


def fetch(server: Server, path: str, accept: str = "text/html") -> tuple[int, str, str]:
    request = urllib.request.Request(server.url + path, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode(errors="replace")


def until(page: Page, predicate: str, timeout: float = 10) -> None:
    """Poll a JS function until it returns true (page.wait_for_function evals, which the CSP refuses)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate):
        assert time.monotonic() < deadline, f"not true within {timeout} s: {predicate}"
        time.sleep(0.2)


def frames(page: Page) -> int:
    return int(inbound(page).get("video", {}).get("framesDecoded", 0))


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_new_user_goes_live_retitles_and_a_viewer_watches_to_the_end(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path], size: tuple[int, int]
) -> None:
    phone = size == PHONE
    name = server.unique_name("new")
    studio_browser = open_browser(media=clips, size=size, phone=phone)
    studio = studio_browser.page
    # Signed out, the header's Go live leads to sign-up, and sign-up on to the studio.
    studio.goto("/")
    ready(studio)
    studio.click("#nav-go-live")
    expect(studio).to_have_url(re.compile(r"/signup\?next=%2Fstudio$"))
    sign_up(studio, server, name)
    studio.wait_for_url(re.compile(r"/studio$"))
    ready(studio)
    expect(studio.locator("#nav-go-live")).to_have_attribute("href", "/studio")
    expect(studio.locator("#studio")).to_be_visible()
    studio.click("summary:has-text('Recording')")
    studio.check("#record-streams")
    expect(studio.locator("#record-status")).to_contain_text("will be recorded")
    studio.click("#go-live")
    expect(studio.locator("#connection")).to_have_attribute("data-state", "live", timeout=15_000)
    expect(studio.locator("#live-badge")).to_be_visible()
    expect(studio.locator("#uptime")).to_have_text(re.compile(r"^0:0\d$"))
    expect(studio.locator("#record-state")).to_be_visible(timeout=10_000)  # REC on the preview
    assert studio.evaluate("document.getElementById('mic-level').value") > 0.01  # the microphone meter moves
    session = studio.evaluate("performance.getEntriesByType('resource').filter(e => e.name.includes('/whip/')).length")

    viewer_browser = open_browser(size=size, phone=phone)
    viewer = viewer_browser.page
    viewer.goto(f"/watch/{name}")
    wait_playing(viewer)
    pc_before = viewer.evaluate("window.tallyPlayer.pc && window.tallyPlayer.pc.__id || (window.tallyPlayer.pc.__id = Math.random())")

    # Retitle while live: viewers see it, and neither side reconnects.
    studio.fill("#title", "Retitled while live")
    studio.fill("#tags", "music, live")
    studio.click("#info-form button[type=submit]")
    expect(studio.locator("#info-saved")).to_have_text("Saved: viewers see it now")
    expect(viewer.locator("#channel-title")).to_have_text("Retitled while live", timeout=8_000)
    assert viewer.evaluate("window.tallyPlayer.pc.__id") == pc_before  # the same WebRTC session
    assert studio.evaluate("performance.getEntriesByType('resource').filter(e => e.name.includes('/whip/')).length") == session
    expect(studio.locator("#connection")).to_have_attribute("data-state", "live")

    if phone:  # a tap shows the controls; a tap while they show pauses, another resumes
        picture = viewer.locator("#player video:not([hidden])")
        picture.tap()
        until(viewer, "() => getComputedStyle(document.querySelector('.player-controls')).opacity === '1'", 3)
        assert viewer.evaluate("document.querySelector('#player video').paused") is False
        picture.tap()
        assert viewer.evaluate("document.querySelector('#player video').paused") is True
        picture.tap()
        assert viewer.evaluate("document.querySelector('#player video').paused") is False
    # The controls, by keyboard: m unmutes, the volume slider moves with arrows, k pauses and resumes
    # (the session stays up), t theater, f fullscreen.
    viewer.locator("#player-pause").focus()
    viewer.keyboard.press("m")
    assert viewer.evaluate("document.querySelector('#player video').muted") is False
    expect(viewer.locator("#player-mute")).to_have_attribute("aria-label", "Mute (m)")
    viewer.locator("#player-volume").focus()
    viewer.keyboard.press("ArrowLeft")
    viewer.keyboard.press("ArrowLeft")
    assert viewer.evaluate("document.querySelector('#player video').volume") == pytest.approx(0.9, abs=0.01)
    viewer.locator("#player-mute").focus()
    viewer.keyboard.press("k")
    assert viewer.evaluate("document.querySelector('#player video').paused") is True
    expect(viewer.locator("#player-pause")).to_have_attribute("aria-label", "Play (k)")
    viewer.keyboard.press("k")
    assert viewer.evaluate("document.querySelector('#player video').paused") is False
    before = frames(viewer)
    deadline = time.monotonic() + 5
    while frames(viewer) < before + 10:
        assert time.monotonic() < deadline, "no frames after resuming"
        time.sleep(0.2)
    viewer.keyboard.press("t")
    expect(viewer.locator("#channel")).to_have_class(re.compile(r"\btheater\b"))
    viewer.keyboard.press("f")
    until(viewer, "() => Boolean(document.fullscreenElement) && document.fullscreenElement.id === 'player'")
    viewer.keyboard.press("f")
    until(viewer, "() => !document.fullscreenElement")
    expect(viewer.locator("#player-latency")).to_have_text(re.compile(r"^\d+ ms behind$"), timeout=5_000)
    assert float(viewer.locator("#player-latency").get_attribute("data-seconds") or 9) < 1.0
    problems = check_page(viewer, f"watch-live-{size[0]}") + check_page(studio, f"studio-live-{size[0]}")
    assert not problems, "\n".join(problems)

    # Leaving by the header asks first; End asks in the page; the viewer gets the end card within 3 s.
    studio.once("dialog", lambda dialog: dialog.dismiss())
    studio.click("#site-header a[href='/settings']")
    expect(studio).to_have_url(re.compile(r"/studio$"))
    expect(studio.locator("#connection")).to_have_attribute("data-state", "live")
    studio.click("#end")
    expect(studio.locator("#end-question")).to_be_visible()
    studio.click("#end-cancel")
    expect(studio.locator("#connection")).to_have_attribute("data-state", "live")
    end_stream(studio)
    ended_at = time.monotonic()
    expect(viewer.locator("#player")).to_have_attribute("data-state", "ended", timeout=3_000)
    assert time.monotonic() - ended_at < 3.0
    expect(viewer.locator("#card-title")).to_have_text("The stream has ended")
    # A later visitor finds the offline card with when it was last live.
    later = open_browser(size=size, phone=phone).page
    later.goto(f"/watch/{name}")
    expect(later.locator("#player")).to_have_attribute("data-state", "offline", timeout=10_000)
    expect(later.locator("#card-text")).to_contain_text(re.compile(r"Last live (moments|\d+ minutes?) ago, for 0:\d\d\."))
    # The recording link, once it is ready; the studio's summary links it too.
    expect(viewer.locator("#card-recording-link")).to_have_text("Watch the recording", timeout=45_000)
    expect(studio.locator("#summary")).to_be_visible()
    expect(studio.locator("#studio-viewers")).to_have_text("0")
    expect(studio.locator("#record-state")).to_be_hidden()  # no REC on the preview once it is over
    expect(studio.locator("#live-badge")).to_be_hidden()
    expect(studio.locator("#summary-peak")).to_have_text(re.compile(r"^[1-9]"))
    expect(studio.locator("#summary-recording-link")).to_have_text("Watch the recording", timeout=15_000)
    viewer.screenshot(path=str(artifact(f"watch-ended-{size[0]}.png")))
    studio.screenshot(path=str(artifact(f"studio-ended-{size[0]}.png")))
    href = viewer.locator("#card-recording-link").get_attribute("href") or ""
    assert re.search(r"/recordings/\d+$", href), href


@pytest.fixture(scope="module")
def portrait_clips(tmp_path_factory: pytest.TempPathFactory, clips: tuple[Path, Path]) -> tuple[Path, Path]:
    """A phone held upright: a 360×640 camera."""
    video = tmp_path_factory.mktemp("portrait") / "camera.y4m"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=360x640:rate=30", "-t", "4",
                    "-pix_fmt", "yuv420p", str(video)], check=True)
    return video, clips[1]


def test_a_phone_held_upright_streams_portrait_end_to_end(
    server: Server, open_browser: OpenBrowser, portrait_clips: tuple[Path, Path]
) -> None:
    name = server.unique_name("upright")
    server.register(name)
    studio = open_browser(media=portrait_clips, size=PHONE, phone=True).page
    go_live(studio, server, name)
    viewer = open_browser(size=PHONE, phone=True).page
    viewer.goto(f"/watch/{name}")
    stats = wait_playing(viewer)
    assert stats["video"]["height"] > stats["video"]["width"], stats  # WebRTC: upright
    status, _, master = fetch(server, f"/hls/{name}/index.m3u8", accept="*/*")
    assert status == 200, master
    sizes = [tuple(map(int, m)) for m in re.findall(r"RESOLUTION=(\d+)x(\d+)", master)]
    assert sizes and all(h > w for w, h in sizes), sizes  # every rendition upright, none a sliver
    assert min(w for w, _ in sizes) >= 180, sizes
    end_stream(studio)


def test_hls_on_an_offline_channel_waits_and_plays_when_it_goes_live(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]
) -> None:
    name = server.unique_name("hlsoff")
    server.register(name)
    viewer = open_browser(size=DESKTOP).page
    viewer.goto(f"/watch/{name}?playback=hls")
    ready(viewer)
    expect(viewer.locator("#player")).to_have_attribute("data-state", "offline", timeout=10_000)
    expect(viewer.locator("#card-title")).to_contain_text("is offline")
    time.sleep(4)  # long enough for a failed playlist load and a retry
    studio = open_browser(media=clips).page
    go_live(studio, server, name)
    expect(viewer.locator("#player")).to_have_attribute("data-mode", "hls", timeout=20_000)
    expect(viewer.locator("#player")).to_have_attribute("data-state", "playing")
    # An HLS viewer counts: on its own page and in the studio.
    expect(viewer.locator("#viewers")).to_have_text("1 viewer", timeout=8_000)
    expect(studio.locator("#studio-viewers")).to_have_text("1", timeout=5_000)
    until(viewer, "() => document.querySelectorAll('#player-quality option').length >= 3", 15)
    viewer.locator("#player-quality").focus()
    viewer.keyboard.press("ArrowDown")  # Auto -> the first rendition, by keyboard
    until(viewer, "() => Boolean(window.tallyPlayer.hls && window.tallyPlayer.hls.level && window.tallyPlayer.hls.level.index === 0)", 15)
    # While the ladder runs, a WebRTC viewer gets its renditions as the server's layers to choose from.
    rtc = open_browser(size=DESKTOP).page
    rtc.goto(f"/watch/{name}")
    wait_playing(rtc)
    until(rtc, "() => [...document.querySelectorAll('#player-quality option')].some((o) => o.value === '180p')", 15)
    rtc.locator("#player-quality").focus()
    rtc.keyboard.press("End")  # the last choice: the lowest layer
    deadline = time.monotonic() + 15
    while inbound(rtc).get("video", {}).get("height") != 180:
        assert time.monotonic() < deadline, inbound(rtc)
        time.sleep(0.3)
    expect(rtc.locator("#player-quality")).to_have_value("180p")
    end_stream(studio)
    expect(viewer.locator("#player")).to_have_attribute("data-state", "ended", timeout=5_000)


def test_pages_for_nothing_are_html_404s_and_the_api_stays_json(server: Server) -> None:
    for path in ("/nosuchpage", "/watch/", "/watch/nobody_here_at_all"):
        status, kind, body = fetch(server, path)
        assert status == 404 and kind.startswith("text/html") and "Page not found" in body, (path, status, kind)
    status, kind, body = fetch(server, "/api/nosuch", accept="text/html,application/json")
    assert status == 404 and kind.startswith("application/problem+json"), (status, kind)
    status, kind, _ = fetch(server, "/nosuchpage", accept="*/*")
    assert status == 404 and kind.startswith("application/problem+json")  # not a browser navigation
    name = server.unique_name("exists")
    server.register(name)
    status, kind, _ = fetch(server, f"/watch/{name}")
    assert status == 200 and kind.startswith("text/html")


def test_next_survives_sign_up_and_login_skips_when_signed_in(server: Server, open_browser: OpenBrowser) -> None:
    name = server.unique_name("follower")
    channel = server.unique_name("followed")
    server.register(channel)
    page = open_browser().page
    page.goto(f"/watch/{channel}")
    ready(page)
    page.click("#follow-login")
    page.click("#signup-link")
    expect(page).to_have_url(re.compile(rf"/signup\?next=%2Fwatch%2F{channel}$"))
    sign_up(page, server, name)
    page.wait_for_url(re.compile(rf"/watch/{channel}$"))
    ready(page)
    expect(page.locator("#follow-button")).to_be_visible()
    page.goto(f"/login?next=%2Fwatch%2F{channel}")
    page.wait_for_url(re.compile(rf"/watch/{channel}$"))
    # next= never leaves the site, whatever the browser strips from it ("/\t/x" is "//x": another host).
    for sneaky in ("/%09/example.com", "/%0A/example.com", "//example.com", "/\\example.com", "https://example.com"):
        page.goto(f"/login?next={sneaky}")
        page.wait_for_url(lambda url: url.startswith(server.url))
        ready(page)
        assert page.url.startswith(server.url + "/"), (sneaky, page.url)


def test_form_errors_are_in_plain_words(server: Server, open_browser: OpenBrowser) -> None:
    page = open_browser().page
    page.goto("/signup")
    sign_up(page, server, "x")
    expect(page.locator("#username-error")).to_be_visible()
    text = page.locator("#username-error").text_content() or ""
    assert "validation" not in text and "Value" not in text, text


def test_a_refused_chat_post_stays_in_the_box(server: Server, open_browser: OpenBrowser) -> None:
    name = server.unique_name("chatty")
    server.register(name)
    anonymous = open_browser().page
    anonymous.goto(f"/watch/{name}")
    ready(anonymous)
    expect(anonymous.locator("#chat .chat-sign-in")).to_be_visible()
    expect(anonymous.locator("#chat .chat-sign-in")).to_have_attribute("href", f"/login?next=%2Fwatch%2F{name}")
    expect(anonymous.locator("#chat .chat-empty")).to_be_visible()
    assert anonymous.locator("#chat .chat-log").get_attribute("aria-live") == "off"

    talker = server.unique_name("talker")
    server.register(talker)
    page = open_browser().page
    log_in(page, server, talker, f"/watch/{name}")
    expect(page.locator("#chat")).to_have_attribute("data-can-post", "true", timeout=10_000)
    # Post until the limit says no (a burst of 5, then one every 2 s: how many pass depends on speed).
    box = page.locator("#chat input[name=message]")
    status = page.locator("#chat .chat-status")
    for i in range(12):
        box.fill(f"post {i}")
        box.press("Enter")
        # Wait for the server's answer to this post before typing the next: a refusal that arrived
        # while the next was being typed put the old text into the box mid-typing ("post 5post 6").
        posted = page.locator("#chat .chat-message .chat-text", has_text=re.compile(rf"^post {i}$"))
        deadline = time.monotonic() + 5
        while not (posted.count() or status.is_visible()):
            assert time.monotonic() < deadline, f"no answer to post {i}"
            page.wait_for_timeout(50)
        if status.is_visible():
            break
    expect(page.locator("#chat .chat-status")).to_contain_text("try again in")
    expect(box).to_have_value(f"post {i}")  # the refused post is back in the box, not lost
    assert i >= 5, i
    expect(page.locator("#chat .chat-message time").first).to_have_attribute("datetime", re.compile(r"^\d{4}-"))
    expect(anonymous.locator("#chat .chat-empty")).to_be_hidden()
    # Who is here: the talker is listed for the anonymous reader, who is not.
    anonymous.click("#chat .chat-chatters-button")
    expect(anonymous.locator("#chat .chat-chatters-button")).to_have_attribute("aria-expanded", "true")
    expect(anonymous.locator("#chat .chat-chatter")).to_have_text([talker])
    expect(anonymous.locator("#chat .chat-chatters-button")).to_have_text("In chat (1)")


@pytest.mark.skipif(not AXE.exists(), reason="axe-core is not installed (make web-deps)")
@pytest.mark.parametrize("look", ["desktop", "phone-360", "phone-dark"])
def test_every_page_is_accessible_and_fits_a_phone(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path], look: str
) -> None:
    size = {"desktop": DESKTOP, "phone-360": (360, 740), "phone-dark": PHONE}[look]
    phone = look != "desktop"
    name = server.unique_name("pages")
    server.register(name)
    browser = open_browser(media=clips, size=size, phone=phone, dark=look == "phone-dark")
    page = browser.page
    problems: list[str] = []
    for path in ("/", "/login", "/signup", f"/watch/{name}", "/nosuchpage"):
        page.goto(path)
        problems += check_page(page, f"{look}-out-{path.split('/')[1] or 'home'}")
    log_in(page, server, name, "/settings")
    for path in ("/settings", "/studio", f"/watch/{name}", "/notifications", "/"):
        page.goto(path)
        problems += check_page(page, f"{look}-in-{path.split('/')[1] or 'home'}")
    page.goto("/")
    ready(page)
    page.click("#logout")
    expect(page.locator("#site-header a[href^='/login']")).to_be_visible()
    log_in(page, server, server.admin, "/admin")
    problems += check_page(page, f"{look}-admin")
    assert not problems, "\n".join(problems)


def test_the_site_installs_as_an_app_and_its_shell_opens_offline(server: Server, open_browser: OpenBrowser) -> None:
    browser = open_browser(size=PHONE, phone=True)
    page = browser.page
    page.goto("/")
    ready(page)
    manifest = page.evaluate("""async () => {
      const link = document.querySelector('link[rel=manifest]');
      const response = await fetch(link.href);
      return { type: response.headers.get('content-type'), body: await response.json() };
    }""")
    assert manifest["type"].startswith("application/manifest+json")
    body = manifest["body"]
    assert body["start_url"] == "/" and body["display"] == "standalone"
    assert {icon["sizes"] for icon in body["icons"]} >= {"192x192", "512x512"}
    for icon in body["icons"]:
        status, kind, _ = fetch(server, icon["src"], accept="image/png")
        assert status == 200 and kind == "image/png"
    # The service worker controls the page (a reload after it took over), and caches what it fetched.
    until(page, "async () => Boolean(await navigator.serviceWorker.getRegistration('/'))")
    until(page, "async () => (await navigator.serviceWorker.ready).active.state === 'activated'")
    page.reload()
    ready(page)
    assert page.evaluate("() => Boolean(navigator.serviceWorker.controller)")
    assert page.evaluate("() => navigator.serviceWorker.controller.scriptURL").endswith("/sw.js")
    browser.context.set_offline(True)
    try:
        page.reload()
        ready(page)  # the shell, from the cache: header and all
        expect(page.locator("h1")).to_have_text("Channels")
        expect(page.locator("#site-header .brand")).to_be_visible()
    finally:
        browser.context.set_offline(False)


def test_a_scheduled_stream_shows_on_the_channel_and_in_the_directory(
    server: Server, open_browser: OpenBrowser, clips: tuple[Path, Path]
) -> None:
    from datetime import datetime, timedelta

    name = server.unique_name("sched")
    server.register(name)
    studio = open_browser(media=clips, size=PHONE, phone=True).page
    log_in(studio, server, name, "/studio")
    studio.click("summary:has-text('Schedule')")
    start = (datetime.now() + timedelta(days=2)).replace(second=0, microsecond=0)
    studio.fill("#schedule-title", "Friday jam")
    studio.fill("#schedule-start", start.strftime("%Y-%m-%dT%H:%M"))
    studio.fill("#schedule-minutes", "45")
    studio.click("#schedule-form button[type=submit]")
    expect(studio.locator("#schedule-list .schedule-entry")).to_have_count(1)
    expect(studio.locator("#schedule-list .schedule-entry")).to_contain_text("Friday jam")
    studio.fill("#schedule-start", "")
    studio.click("#schedule-form button[type=submit]")
    expect(studio.locator("#starts_at-error")).to_have_text("Give a date and time, like 2027-01-31T18:00:00Z.")
    problems = check_page(studio, "studio-schedule-390")

    viewer = open_browser(size=PHONE, phone=True).page
    viewer.goto(f"/watch/{name}")
    expect(viewer.locator("#player")).to_have_attribute("data-state", "offline", timeout=10_000)
    expect(viewer.locator("#card-next")).to_contain_text("Next: Friday jam")
    expect(viewer.locator("#channel-upcoming-list li")).to_contain_text(["Friday jam"])
    expect(viewer.locator("#calendar-link")).to_have_attribute("href", f"/channels/{name}/schedule.ics")
    problems += check_page(viewer, "watch-offline-scheduled-390")
    viewer.goto("/")
    ready(viewer)
    expect(viewer.locator("#upcoming")).to_be_visible()
    expect(viewer.locator("#upcoming-list li", has_text="Friday jam")).to_have_count(1)
    assert not problems, "\n".join(problems)
