"""The account pages as a user clicks through them: sign-up, log-in, settings, directory, watch, admin."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect

if TYPE_CHECKING:
    from tests.browser.conftest import Browser, Server

    OpenBrowser = Callable[[], Browser]

pytestmark = pytest.mark.browser


def ready(page: Page) -> None:
    """Wait until the page's module finished its first render."""
    page.wait_for_selector("body[data-ready='true']", state="attached")


def sign_up(page: Page, username: str, password: str) -> None:
    page.goto("/signup")
    page.fill("#username", username)
    page.fill("#email", f"{username}@example.com")
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/settings")
    ready(page)


def log_in(page: Page, username: str, password: str) -> None:
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-form button[type=submit]")


def log_in_at_home(page: Page, server: Server, username: str) -> None:
    """Log in through the form and land on the directory."""
    page.goto("/login")
    log_in(page, username, server.password)
    page.wait_for_url(server.url + "/")


def stored_tokens(page: Page) -> dict[str, str | None]:
    return page.evaluate(
        "() => ({access: localStorage.getItem('tally.access_token'), refresh: localStorage.getItem('tally.refresh_token')})"
    )


def test_stream_key_is_shown_once_then_only_its_hint(server: Server, open_browser: OpenBrowser) -> None:
    browser = open_browser()
    page = browser.page
    name = server.unique_name("ann")
    sign_up(page, name, server.password)

    expect(page.locator("#nav-user")).to_have_text(name)
    expect(page.locator("#stream-key-reveal")).to_be_visible()
    expect(page.locator("#stream-key-reveal")).to_contain_text("shown only this once")
    first = page.locator("#stream-key-value").inner_text().strip()
    assert re.fullmatch(r"tlsk_[A-Za-z0-9_-]{40,}", first), first
    expect(page.locator("#whip-url")).to_have_value(f"{server.url}/whip/{name}")

    browser.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page.click("#copy-key")
    expect(page.locator("#copy-status")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == first

    page.reload()
    ready(page)
    expect(page.locator("#stream-key-reveal")).to_be_hidden()
    expect(page.locator("#stream-key-hint")).to_have_text(f"tlsk_…{first[-4:]}")
    assert first not in page.content()

    # Rotating asks first; cancelling changes nothing.
    page.click("#rotate-key")
    expect(page.locator("#rotate-confirm")).to_be_visible()
    page.click("#rotate-cancel")
    expect(page.locator("#rotate-confirm")).to_be_hidden()
    expect(page.locator("#stream-key-hint")).to_have_text(f"tlsk_…{first[-4:]}")

    page.click("#rotate-key")
    page.click("#rotate-yes")
    expect(page.locator("#stream-key-reveal")).to_be_visible()
    second = page.locator("#stream-key-value").inner_text().strip()
    assert second.startswith("tlsk_") and second != first

    page.reload()
    ready(page)
    expect(page.locator("#stream-key-reveal")).to_be_hidden()
    expect(page.locator("#stream-key-hint")).to_have_text(f"tlsk_…{second[-4:]}")


def test_log_out_and_log_in_again(server: Server, open_browser: OpenBrowser) -> None:
    name = server.unique_name("bob")
    server.register(name)
    page = open_browser().page

    # Signed out, settings sends you to log in, and back afterwards.
    page.goto("/settings")
    page.wait_for_url(re.compile(r"/login\?next=%2Fsettings$"))
    log_in(page, name, server.password)
    page.wait_for_url("**/settings")
    ready(page)
    expect(page.locator("#nav-user")).to_have_text(name)
    spent = stored_tokens(page)["refresh"]
    assert spent

    page.click("#logout")
    page.wait_for_url(server.url + "/")
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    assert stored_tokens(page) == {"access": None, "refresh": None}
    status, body = server.call("POST", "/api/auth/refresh", {"refresh_token": spent})
    assert status == 401, body  # logging out ended the session on the server too

    page.get_by_role("link", name="Log in").click()
    page.wait_for_url(re.compile(r"/login\?next="))
    log_in(page, name, "not the password")
    expect(page.locator("#form-error")).to_have_text("wrong username or password")
    assert stored_tokens(page)["refresh"] is None

    page.fill("#password", server.password)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(server.url + "/")
    expect(page.locator("#nav-user")).to_have_text(name)

    # A provider sign-in that failed comes back as #error=...; the page shows it and tidies the address.
    page.goto("/login#error=the%20provider%20said%3A%20access_denied")
    expect(page.locator("#form-error")).to_have_text("the provider said: access_denied")
    assert page.evaluate("() => location.hash") == ""


def test_channel_edits_show_on_watch_page_and_in_directory(server: Server, open_browser: OpenBrowser) -> None:
    name = server.unique_name("cat")
    server.register(name)
    page = open_browser().page
    log_in_at_home(page, server, name)
    page.goto("/settings")
    ready(page)

    page.fill("#title", "Night owls")
    page.fill("#description", "Quiet coding.\nEvery evening.")
    page.fill("#tags", "bad tag!")
    page.click("#channel-form button[type=submit]")
    expect(page.locator("#tags-error")).to_contain_text("lowercase letters, digits and dashes")
    assert server.call("GET", f"/api/channels/{name}")[1]["title"] != "Night owls"

    page.fill("#tags", "Coding, chill  music")
    page.click("#channel-form button[type=submit]")
    expect(page.locator("#channel-saved")).to_have_text("Saved")
    expect(page.locator("#tags-error")).to_be_hidden()
    expect(page.locator("#tags")).to_have_value("coding, chill, music")

    page.goto(f"/watch/{name}")
    ready(page)
    expect(page.locator("#channel-title")).to_have_text("Night owls")
    expect(page.locator("#channel-description")).to_have_text("Quiet coding.\nEvery evening.")
    expect(page.locator("#channel-tags li")).to_have_text(["coding", "chill", "music"])
    expect(page.locator("#live-state")).to_have_text("Offline")
    expect(page.locator("#player")).to_be_visible()
    expect(page).to_have_title("Night owls · Tallylight")

    page.goto("/")
    ready(page)
    page.fill("#search", "night ow")
    card = page.locator(f".channel-card[data-channel='{name}']")
    expect(card.locator(".channel-title")).to_have_text("Night owls")
    expect(card.locator(".tag")).to_have_text(["coding", "chill", "music"])
    expect(page.locator(".channel-card")).to_have_count(1)
    page.check("#live-only")
    expect(page.locator(".channel-card")).to_have_count(0)
    expect(page.locator("#directory-status")).to_have_text("No channel is live right now.")


def test_follow_from_the_directory_and_unfollow_on_the_watch_page(server: Server, open_browser: OpenBrowser) -> None:
    star = server.unique_name("star")
    first = open_browser()
    sign_up(first.page, star, server.password)
    first.page.fill("#title", "Star's show")
    first.page.click("#channel-form button[type=submit]")
    expect(first.page.locator("#channel-saved")).to_have_text("Saved")
    first.close()

    fan = server.unique_name("fan")
    page = open_browser().page
    sign_up(page, fan, server.password)
    expect(page.locator("#following-empty")).to_be_visible()

    page.click("header >> text=Directory")
    page.wait_for_url(server.url + "/")
    ready(page)
    own = page.locator(f".channel-card[data-channel='{fan}']")
    expect(own).to_be_visible()
    expect(own.locator(".follow-button")).to_have_count(0)  # no following your own channel
    page.fill("#search", star)
    expect(own).to_have_count(0)  # the search answered
    card = page.locator(f".channel-card[data-channel='{star}']")
    expect(card.locator(".channel-title")).to_have_text("Star's show")
    expect(card.locator(".followers")).to_have_text("0 followers")
    card.locator(".follow-button").click()
    expect(card.locator(".followers")).to_have_text("1 follower")
    expect(card.locator(".follow-button")).to_have_text("Unfollow")

    page.goto("/settings")
    ready(page)
    expect(page.locator(f"#following-list li[data-channel='{star}'] a")).to_have_text("Star's show")
    expect(page.locator("#following-empty")).to_be_hidden()

    page.click(f"#following-list li[data-channel='{star}'] a")
    page.wait_for_url(f"**/watch/{star}")
    ready(page)
    expect(page.locator("#followers")).to_have_text("1 follower")
    page.click("#follow-button")
    expect(page.locator("#followers")).to_have_text("0 followers")
    expect(page.locator("#follow-button")).to_have_text("Follow")
    assert server.call("GET", f"/api/channels/{star}")[1]["followers"] == 0

    page.goto("/settings")
    ready(page)
    expect(page.locator("#following-list li")).to_have_count(0)
    expect(page.locator("#following-empty")).to_be_visible()


def test_sign_up_errors_show_beside_the_fields_and_create_nothing(server: Server, open_browser: OpenBrowser) -> None:
    taken = server.unique_name("dan")
    server.register(taken)
    admin = server.token(server.admin)
    users_before = server.call("GET", "/api/users", token=admin)[1]["items"]
    page = open_browser().page

    page.goto("/signup")
    page.fill("#username", taken)
    page.fill("#email", f"another-{taken}@example.com")
    page.fill("#password", server.password)
    page.click("button[type=submit]")
    expect(page.locator("#username-error")).to_have_text("taken")
    expect(page.locator("#username")).to_have_attribute("aria-invalid", "true")

    page.fill("#username", "Bad Name!")
    page.fill("#password", "short")
    page.click("button[type=submit]")
    expect(page.locator("#username-error")).to_contain_text("3 to 24 characters")
    expect(page.locator("#password-error")).to_contain_text("at least 8 characters")
    expect(page.locator("#email-error")).to_be_hidden()
    expect(page.locator("#form-error")).to_be_visible()
    assert page.url.endswith("/signup")
    assert stored_tokens(page)["refresh"] is None

    assert server.call("GET", "/api/users", token=admin)[1]["items"] == users_before
    assert server.call("POST", "/api/auth/login", {"username": f"another-{taken}@example.com", "password": server.password})[0] == 401


@pytest.mark.parametrize("form", ["signup", "login"])
def test_a_password_never_goes_into_the_address_before_the_page_is_ready(
        server: Server, open_browser: OpenBrowser, form: str) -> None:
    """A slow network or a busy phone: the page's script has not taken the form yet when the person
    presses Enter. The browser must not send the form itself (a GET, the password in the address, in
    the history and in access logs): the button waits for the script."""
    page = open_browser().page
    held: list[object] = []
    page.route(f"**/static/js/{form}.js", lambda route: held.append(route))  # the script never comes
    page.goto(f"/{form}", wait_until="commit")  # its load waits for the script: not this test
    page.wait_for_selector("#password")
    page.fill("#username", "someone")
    if form == "signup":
        page.fill("#email", "someone@example.com")
    page.fill("#password", "hunter2 hunter2")
    page.press("#password", "Enter")
    page.wait_for_timeout(500)
    assert page.url.endswith(f"/{form}"), page.url
    expect(page.locator("button[type=submit]")).to_be_disabled()
    assert held  # the script was asked for, and held back
    page.unroute(f"**/static/js/{form}.js")


def test_admin_demotes_a_user_who_then_has_no_stream_key(server: Server, open_browser: OpenBrowser) -> None:
    name = server.unique_name("eve")
    server.register(name)

    admin = open_browser()
    page = admin.page
    log_in_at_home(page, server, server.admin)
    page.get_by_role("link", name="Admin").click()
    page.wait_for_url("**/admin")
    ready(page)
    row = page.locator(f"#users tr[data-username='{name}']")
    expect(row.locator("select")).to_have_value("broadcaster")
    row.locator("select").select_option("viewer")
    expect(row.locator(".role-status")).to_have_text("Saved")
    users = server.call("GET", "/api/users", token=server.token(server.admin))[1]["items"]
    assert {u["username"]: u["role"] for u in users}[name] == "viewer"

    # The server refuses to let the last admin step down; the select shows what is still true.
    mine = page.locator(f"#users tr[data-username='{server.admin}']")
    mine.locator("select").select_option("viewer")
    expect(mine.locator(".role-status")).to_contain_text("last admin")
    expect(mine.locator("select")).to_have_value("admin")
    admin.close()

    page = open_browser().page
    page.goto("/login?next=/settings")
    log_in(page, name, server.password)
    page.wait_for_url("**/settings")
    ready(page)
    expect(page.locator("#stream-key-status")).to_contain_text("needs the broadcaster role")
    expect(page.locator("#stream-key-body")).to_be_hidden()
    expect(page.locator("#stream-key-value")).to_have_text("")
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)

    page.goto("/admin")
    ready(page)
    expect(page.locator("#admin-status")).to_have_text("This page is for admins.")
    expect(page.locator("#users-panel")).to_be_hidden()


def test_user_text_is_rendered_as_text(server: Server, open_browser: OpenBrowser) -> None:
    name = server.unique_name("mal")
    server.register(name)
    token = server.token(name)
    title = "<img src=x onerror=window.__xss=1>"
    description = "<script>window.__xss=2</script><b>not bold</b>"
    status, body = server.call(
        "PATCH", f"/api/channels/{name}", {"title": title, "description": description}, token=token
    )
    assert status == 200, body
    status, body = server.call("PATCH", "/api/me", {"display_name": "<svg onload=window.__xss=3>"}, token=token)
    assert status == 200, body

    browser = open_browser()
    page = browser.page
    page.goto(f"/watch/{name}")
    ready(page)
    expect(page.locator("#channel-title")).to_have_text(title)
    expect(page.locator("#channel-description")).to_have_text(description)
    expect(page.locator("#channel-owner")).to_have_text("<svg onload=window.__xss=3>")
    assert page.locator("#channel img:not(#channel-avatar), #channel script, #channel svg, #channel b").count() == 0

    page.goto("/")
    ready(page)
    page.fill("#search", name)
    expect(page.locator(f".channel-card[data-channel='{name}'] .channel-title")).to_have_text(title)
    assert page.locator("#channels img, #channels svg").count() == 0

    log_in_at_home(page, server, server.admin)
    page.goto("/admin")
    ready(page)
    expect(page.locator(f"#users tr[data-username='{name}'] td").nth(1)).to_have_text("<svg onload=window.__xss=3>")
    assert page.evaluate("() => window.__xss") is None


def test_an_expired_access_token_is_refreshed_once_for_concurrent_calls(
    server: Server, open_browser: OpenBrowser
) -> None:
    name = server.unique_name("fay")
    server.register(name)
    page = open_browser().page
    log_in_at_home(page, server, name)
    ready(page)
    before = stored_tokens(page)

    refreshes: list[str] = []
    page.on("request", lambda request: refreshes.append(request.url) if "/api/auth/refresh" in request.url else None)
    results = page.evaluate(
        """async () => {
            const { api } = await import('/static/js/api.js');
            localStorage.setItem('tally.access_token', 'not-a-valid-token');
            const calls = [api('GET', '/api/me'), api('GET', '/api/me/following'), api('GET', '/api/me'),
                           api('GET', '/api/channels')];
            return (await Promise.all(calls)).map((r) => r.username || (r.items ? 'list' : '?'));
        }"""
    )
    assert results == [name, "list", name, "list"]
    assert len(refreshes) == 1, refreshes  # a refresh token is single-use: one refresh for all four
    after = stored_tokens(page)
    # (The new access token may equal the old one: same session, same claims, issued in the same second.)
    assert after["access"] and after["access"] != "not-a-valid-token"
    assert after["refresh"] != before["refresh"]

    # When the refresh is refused too, the user is signed out; public pages still work.
    page.evaluate("() => { localStorage.setItem('tally.access_token', 'x'); localStorage.setItem('tally.refresh_token', 'tlrt_x'); }")
    page.goto("/settings")
    page.wait_for_url(re.compile(r"/login\?next=%2Fsettings$"))
    assert stored_tokens(page) == {"access": None, "refresh": None}
    page.evaluate("() => localStorage.setItem('tally.access_token', 'x')")
    page.goto("/")
    ready(page)
    expect(page.locator(f".channel-card[data-channel='{name}']")).to_be_visible()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
