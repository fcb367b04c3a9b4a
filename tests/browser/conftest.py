"""Browser tests: the real server as a subprocess, and headless Chromium (playwright's sync API).

One server serves the whole session, on a fresh data directory; its first account (the admin) is made
through the API here, so tests can run in any order with their own, unique users. Each browser is a
persistent context on a fresh profile directory, closed at the end of the test that opened it.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Playwright, sync_playwright
from server_process import serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",  # or Chromium gathers no candidates on loopback
]
PASSWORD = "correct horse battery"


@dataclass
class Server:
    """The running service, with a tiny JSON client for setting up and checking state."""

    url: str
    admin: str
    log: Path
    pid: int = 0  # the server process
    password: str = PASSWORD  # every account made here has it
    tls: ssl.SSLContext | None = None  # trusts the test's certificate, for a server on https
    _n: int = field(default=0)

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.tls) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, json.loads(raw) if raw else None

    def unique_name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}_{secrets.token_hex(3)}"

    def register(self, username: str) -> dict[str, Any]:
        status, body = self.call(
            "POST", "/api/auth/register", {"username": username, "email": f"{username}@example.com", "password": self.password}
        )
        assert status == 201, body
        return dict(body)

    def token(self, username: str) -> str:
        status, body = self.call("POST", "/api/auth/login", {"username": username, "password": self.password})
        assert status == 200, body
        return str(body["access_token"])


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server for one test module; a module's `SERVER_SETTINGS` dict adds to or overrides its env."""
    with serve(tmp_path_factory.mktemp("server"), **getattr(request.module, "SERVER_SETTINGS", {})) as process:
        running = Server(process.url, admin="boss", log=process.log, pid=process.pid)
        assert running.register("boss")["role"] == "admin"  # the first account of a fresh database
        yield running


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@dataclass
class Browser:
    """One Chromium with its own profile; `page` is its first tab. Page errors are collected."""

    context: BrowserContext
    page: Page
    errors: list[str]
    profile: Path
    closed: bool = False

    def close(self) -> None:
        """Close it now (the machine has two cores: keep one browser open at a time where possible)."""
        if not self.closed:
            self.closed = True
            self.context.close()

    def crash(self) -> None:
        """Kill its processes outright, as a crash or a pulled cable would: no page events, no goodbyes."""
        subprocess.run(["pkill", "-KILL", "-f", f"user-data-dir={self.profile / 'data'}"], check=False)
        self.closed = True


@pytest.fixture
def open_browser(
    playwright: Playwright, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Browser]]:
    """Open a fresh Chromium; every one opened is closed after the test, and must have logged no errors.

    Failed requests (a 401 or 409 the page handles) show as console errors too; those are expected.
    Anything else, an uncaught exception or a Content-Security-Policy violation, fails the test.
    """
    opened: list[Browser] = []

    def open_(media: tuple[Path, Path] | None = None, size: tuple[int, int] = (1200, 850), phone: bool = False,
              dark: bool = False, extra_args: tuple[str, ...] = ()) -> Browser:
        """`media`: a y4m and a wav clip the fake camera and microphone play (else Chromium's own);
        `size`: the window; `phone`: a touch screen that reports itself mobile; `dark`: the system's dark theme."""
        profile = tmp_path_factory.mktemp("chromium")
        args = [*CHROMIUM_ARGS, *extra_args]
        if media is not None:
            args += [
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={media[0]}",
                f"--use-file-for-fake-audio-capture={media[1]}",
                "--autoplay-policy=no-user-gesture-required",
            ]
        env = {
            **os.environ,
            "HOME": str(profile),
            "XDG_CONFIG_HOME": str(profile / "config"),
            "XDG_CACHE_HOME": str(profile / "cache"),
            "XDG_RUNTIME_DIR": str(profile / "run"),
        }
        (profile / "run").mkdir(mode=0o700)
        context = playwright.chromium.launch_persistent_context(
            str(profile / "data"),
            executable_path=CHROMIUM,
            headless=True,
            args=args,
            env=env,
            base_url=server.url,
            viewport={"width": size[0], "height": size[1]},
            is_mobile=phone,
            has_touch=phone,
            device_scale_factor=3 if phone else 1,
            color_scheme="dark" if dark else "light",
        )
        context.set_default_timeout(10_000)
        errors: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error" and "Failed to load resource" not in message.text:
                errors.append(f"console: {message.text}")

        context.on("console", on_console)
        context.on("weberror", lambda error: errors.append(f"uncaught: {error.error}"))
        page = context.pages[0] if context.pages else context.new_page()
        browser = Browser(context, page, errors, profile)
        opened.append(browser)
        return browser

    yield open_
    problems = [e for b in opened for e in b.errors]
    for browser in opened:
        browser.close()
    assert not problems, "the pages logged errors:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A y4m and a wav clip (4 s, looped by Chromium) for a fake camera and microphone."""
    folder = tmp_path_factory.mktemp("clips")
    video, audio = folder / "camera.y4m", folder / "microphone.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "4", "-pix_fmt", "yuv420p", str(video)],
        check=True,
    )
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "4", str(audio)], check=True)
    return video, audio
