"""Server-side simulcast with the real server, SFU and HLS transcoder and aiortc peers on loopback: the
ladder's encoded renditions are WebRTC layers, and a viewer moves between them on keyframes without
its picture breaking; the loss policy that moves viewers on weak links."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sfu.layers import LayerPolicy
from sfu.subscriber import Subscriber
from signaling.app import SERVICES
from support import Api, FakeClock
from test_whip_whep import go_live, post_sdp, stream_key
from webrtc_peer import Peer

@pytest.fixture
async def sfu(app_factory: Callable[..., web.Application], clock: FakeClock) -> AsyncIterator[Api]:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], publisher_timeout=3.0, hls_ladder="source,180p@200",
                      hls_idle_seconds=2)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what or "not in time"
        await asyncio.sleep(0.05)


async def ladder_running(sfu: Api, name: str) -> asyncio.Task[None]:
    """An HLS viewer's asking (it keeps the ladder running until the task is cancelled), once the 180p
    layer is there."""
    async def hls_viewer() -> None:  # asks for the ladder as an HLS player's requests would, until it leaves
        while True:
            sfu.services.hls.ensure(name)
            await asyncio.sleep(0.3)

    await eventually(lambda: sfu.services.hls.ensure(name) is not None, 10, "the ladder")
    asking = asyncio.create_task(hls_viewer())
    node = sfu.services.node
    await eventually(lambda: name in node.rooms and "180p" in node.rooms[name].layers, 15, "the 180p layer")
    return asking


async def watching_the_source(sfu: Api, name: str) -> tuple[Peer, str]:
    """A viewer (and its session URL) once it shows the source picture."""
    viewer = Peer.viewer()
    status, answer, headers = await post_sdp(sfu, f"/whep/{name}", await viewer.offer())
    assert status == 201
    await viewer.answer(answer.decode())
    await eventually(lambda: viewer.last_size == (640, 360), 10, "the source picture")
    return viewer, str(headers["Location"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_viewer_moves_between_the_source_and_an_encoded_layer_on_keyframes(sfu: Api) -> None:
    name, token = await sfu.user()
    publisher, _ = await go_live(sfu, name, await stream_key(sfu, token), audio=True)
    node = sfu.services.node
    asking = await ladder_running(sfu, name)
    viewer, location = await watching_the_source(sfu, name)
    session = location.rsplit("/", 1)[1]
    subscriber = node.session(session)
    assert isinstance(subscriber, Subscriber)

    node.set_layer(session, "180p")  # as the loss policy would, or a viewer's choice
    await eventually(lambda: viewer.last_size == (320, 180), 10, "the 180p picture")
    before = viewer.frames
    await asyncio.sleep(1.0)
    assert viewer.frames >= before + 15  # it keeps playing on the layer
    video = subscriber.video
    assert video is not None and video.feed is node.rooms[name].layers["180p"]

    subscriber.on_layer_step(subscriber, +1)  # the policy's "up": back to the source
    await eventually(lambda: viewer.last_size == (640, 360), 10, "back to the source")
    before = viewer.frames
    await asyncio.sleep(1.0)
    assert viewer.frames >= before + 15
    assert set(viewer.sizes) == {(640, 360), (320, 180)}
    subscriber.on_layer_step(subscriber, -1)
    await eventually(lambda: viewer.last_size == (320, 180), 10, "down again")
    with pytest.raises(Exception):
        node.set_layer(session, "4k")

    # The HLS viewer leaves: the ladder stops after hls_idle_seconds, its layers with it, and the viewer
    # on the 180p layer is back on the source at its next keyframe instead of frozen.
    asking.cancel()
    await eventually(lambda: not node.rooms[name].layers, 15, "the ladder stops")
    await eventually(lambda: viewer.last_size == (640, 360), 10, "back to the source when the ladder stopped")
    before = viewer.frames
    await asyncio.sleep(1.0)
    assert viewer.frames >= before + 15
    await viewer.close()
    await publisher.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_viewer_chooses_its_layer_through_the_api_and_the_loss_policy_leaves_it_there(sfu: Api) -> None:
    name, token = await sfu.user()
    publisher, whip = await go_live(sfu, name, await stream_key(sfu, token), audio=True)
    node = sfu.services.node
    asking = await ladder_running(sfu, name)
    viewer, location = await watching_the_source(sfu, name)
    session = location.rsplit("/", 1)[1]

    status, layers, _ = await sfu.call("GET", location + "/layers")
    assert status == 200 and layers == {"choices": ["source", "180p"], "current": "source", "auto": True}
    status, layers, _ = await sfu.call("PUT", location + "/layers", {"layer": "180p"})
    assert status == 200 and layers == {"choices": ["source", "180p"], "current": "180p", "auto": False}
    await eventually(lambda: viewer.last_size == (320, 180), 10, "the chosen 180p")
    # Each move costs the channel a keyframe: one viewer may not move again within 3 s (the same choice
    # again asks for nothing and is fine).
    assert (await sfu.call("PUT", location + "/layers", {"layer": "180p"}))[0] == 200
    status, problem, _ = await sfu.call("PUT", location + "/layers", {"layer": "source"})
    assert status == 429 and "every 3 s" in problem["detail"], problem
    subscriber = node.session(session)
    assert isinstance(subscriber, Subscriber)
    subscriber.on_layer_step(subscriber, +1)  # a clean stretch: the policy would go up, but the viewer chose
    await asyncio.sleep(1.0)
    assert viewer.last_size == (320, 180)
    status, layers, _ = await sfu.call("PUT", location + "/layers", {"layer": "auto"})
    assert status == 200 and layers["auto"] is True
    subscriber.on_layer_step(subscriber, +1)  # the server's choice again
    await eventually(lambda: viewer.last_size == (640, 360), 10, "up again once auto")

    for bad, code in (({"layer": "4k"}, 422), ({"layer": "999p"}, 404), ({}, 422), ({"layer": 3}, 422)):
        status, problem, _ = await sfu.call("PUT", location + "/layers", bad)
        assert status == code, (bad, problem)
    assert (await sfu.call("GET", f"/whep/{name}/nosuchsession/layers"))[0] == 404
    assert (await sfu.call("GET", whip["Location"].replace("/whip/", "/whep/") + "/layers"))[0] == 404  # a publisher's
    asking.cancel()
    await viewer.close()
    await publisher.close()


def test_the_loss_policy_steps_down_on_sustained_loss_and_up_after_a_clean_stretch() -> None:
    clock = FakeClock()
    policy = LayerPolicy(clock, high=0.08, low=0.02, down_after=2, up_after=10.0)
    assert policy.on_loss(0.2) == 0  # one lossy report is not yet a trend
    assert policy.on_loss(0.0) == 0
    assert policy.on_loss(0.2) == 0
    assert policy.on_loss(0.25) == -1
    clock.advance(5)
    assert policy.on_loss(0.0) == 0
    clock.advance(4)
    assert policy.on_loss(0.05) == 0  # some loss: not clean, the stretch starts again
    clock.advance(9)
    assert policy.on_loss(0.0) == 0
    clock.advance(2)
    assert policy.on_loss(0.01) == 1
