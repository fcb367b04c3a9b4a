"""A live stream's health for its broadcaster: the node samples how the stream arrives every 2 s and tells
the bus; the API gives the owner the last minutes and says in words what looks wrong."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from signaling.analytics.ingest_health import Sample, warnings
from signaling.app import SERVICES
from support import Api
from test_whip_whep import go_live, stream_key


@pytest.fixture
async def rtc(app_factory: Callable[..., web.Application], clock: Any) -> AsyncIterator[Api]:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"])
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database holds none of it
async def test_the_owner_sees_how_the_stream_arrives(rtc: Api) -> None:
    name, token = await rtc.user("broadcaster")
    _, other_token = await rtc.user("broadcaster")
    status, ingest, _ = await rtc.call("GET", f"/api/channels/{name}/ingest", token=token)
    assert status == 200 and ingest == {"channel": name, "live": False, "samples": [], "warnings": []}

    publisher, _ = await go_live(rtc, name, await stream_key(rtc, token))  # 30 fps, a keyframe every 15 frames
    for _ in range(100):  # a sample every 2 s: the first has no rates yet, the second has
        await asyncio.sleep(0.1)
        status, ingest, _ = await rtc.call("GET", f"/api/channels/{name}/ingest", token=token)
        if len(ingest["samples"]) >= 2:
            break
    assert status == 200 and ingest["live"] is True, ingest
    last = ingest["samples"][-1]
    assert last["video_kbps"] > 10 and 20 <= last["fps"] <= 40, last
    assert 0.3 <= last["keyframe_interval"] <= 1.0, last  # 15 frames at 30 fps
    assert last["loss_percent"] == 0 and last["viewers"] == 0 and last["audio_kbps"] == 0
    assert not any("Keyframes" in said or "dropping" in said for said in ingest["warnings"]), ingest["warnings"]

    # The same samples on /metrics, labelled by channel (Grafana's stream health dashboard).
    _, metrics, _ = await rtc.call("GET", "/metrics")
    series = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.decode().splitlines()
              if line.startswith("tally_stream_")}
    assert 20 <= series[f'tally_stream_ingest_frames_per_second{{channel="{name}"}}'] <= 40, series
    assert series[f'tally_stream_ingest_bits_per_second{{channel="{name}",kind="video"}}'] > 10_000, series
    assert series[f'tally_stream_ingest_loss_ratio{{channel="{name}"}}'] == 0, series

    assert (await rtc.call("GET", f"/api/channels/{name}/ingest", token=other_token))[0] == 403
    assert (await rtc.call("GET", f"/api/channels/{name}/ingest"))[0] == 401
    assert (await rtc.call("GET", "/api/channels/nobody_here/ingest", token=token))[0] == 404
    await publisher.close()
    for _ in range(100):  # the stream ends (the publisher's connection closed): its history goes
        await asyncio.sleep(0.1)
        status, ingest, _ = await rtc.call("GET", f"/api/channels/{name}/ingest", token=token)
        if not ingest["live"]:
            break
    assert ingest["live"] is False and ingest["warnings"] == []


def _samples(**figures: float) -> list[Sample]:
    base = dict(video_kbps=2500.0, audio_kbps=128.0, fps=30.0, keyframe_interval=2.0, loss_percent=0.0, viewers=3)
    return [Sample(at=float(t), **{**base, **figures}) for t in range(0, 12, 2)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("figures", "said"), [
    ({}, []),
    ({"keyframe_interval": 10.0}, ["Keyframes every 10 s: set 2 s in your encoder"]),
    ({"loss_percent": 5.0}, ["Your upload is dropping packets (5 % go missing)"]),
    ({"video_kbps": 150.0}, ["Video arrives at only 150 kbit/s"]),
    ({"fps": 12.0}, ["Only 12 frames per second arrive"]),
    ({"video_kbps": 0.0, "fps": 0.0}, ["No video is arriving"]),
])
def test_what_looks_wrong_is_said_in_words(figures: dict[str, float], said: list[str]) -> None:
    told = warnings(_samples(**figures))
    assert len(told) == len(said) and all(t.startswith(s) for t, s in zip(told, said)), told
