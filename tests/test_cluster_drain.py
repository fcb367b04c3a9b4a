"""A rolling restart loses no viewer: a node stopped with SIGTERM hands its sessions over.

A front door and three `tally node`s on their own loopback addresses, each taking one viewer
(`MAX_VIEWERS_PER_NODE=1`), PostgreSQL and a private Redis, as separate processes. The publisher and
the viewers are aiortc peers that reconnect when their session ends, as the studio and the watch page
do. First a node carrying a relay is stopped and started again, then the origin itself.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import pytest

from http_client import Client
from redis_server import redis_server
from server_process import ServerProcess, serve
from test_cluster_failover import connect
from webrtc_peer import Peer

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]

ADDRESSES = {"node-1": "127.0.0.2", "node-2": "127.0.0.3", "node-3": "127.0.0.4"}


class Player:
    """Watches through the front door and, like the watch page, starts a new session when its own ends."""

    def __init__(self, door: Client) -> None:
        self._door = door
        self.peer = Peer.viewer()
        self.node = ""
        self.sessions = 0

    async def start(self, deadline: float) -> None:
        self.node = await connect(self._door, self.peer, "/whep/caster", None, deadline)
        self.sessions += 1

    async def follow(self, deadline: float) -> bool:
        """If its session ended, watch again (on whichever node the door chooses); True if it did."""
        if self.peer.pc.connectionState not in ("closed", "failed"):
            return False
        await self.peer.close()
        self.peer = Peer.viewer()
        await self.start(deadline)
        return True


async def test_a_rolling_restart_of_the_nodes_loses_no_viewer(tmp_path: Path, database_url: str) -> None:
    with redis_server(tmp_path) as redis, ExitStack() as stack:
        common = {"BUS_URL": redis.url, "DATABASE_URL": database_url, "AUTO_MIGRATE": "false",
                  "JWT_SECRET": secrets.token_hex(32), "LOG_LEVEL": "INFO", "MAX_VIEWERS_PER_NODE": "1"}

        def start_node(name: str) -> ServerProcess:
            home = tmp_path / f"{name}-{time.monotonic_ns()}"
            home.mkdir()
            return stack.enter_context(serve(home, ("node",), NODE_ID=name, WEBRTC_HOST_ADDRESSES=ADDRESSES[name],
                                              **common))

        (tmp_path / "door").mkdir()
        nodes = {name: start_node(name) for name in ADDRESSES}
        door_process = stack.enter_context(serve(tmp_path / "door", ("serve", "--media", "off"), NODE_ID="door",
                                                 **common))
        async with aiohttp.ClientSession() as http:
            door = Client(http, door_process.url)
            await door.admin("boss")
            key = await door.broadcaster("caster")
            publisher = Peer.publisher("h264", audio=True)
            players = [Player(door), Player(door)]
            peers = [publisher]
            try:
                origin = await connect(door, publisher, "/whip/caster", key, time.monotonic() + 15)
                for player in players:
                    await player.start(time.monotonic() + 15)
                    await player.peer.wait_frames(10)
                assert players[0].node == origin and players[1].node != origin

                # A node with a relay stops: its viewer is placed on the third node (relayed there).
                relay_node = players[1].node
                stopped = time.monotonic()
                nodes[relay_node].process.send_signal(signal.SIGTERM)
                await _until_moved(players[1], stopped)
                assert players[1].node not in (origin, relay_node)
                await players[1].peer.wait_frames(5, timeout=max(0.1, stopped + 5 - time.monotonic()))
                print(f"DRAIN relay node {relay_node}: its viewer decoding again after {time.monotonic() - stopped:.2f} s")
                assert nodes[relay_node].process.wait(timeout=15) == 0
                nodes[relay_node] = start_node(relay_node)  # and it comes back

                # The origin stops: its viewer moves to the node that came back (relayed there); the
                # publisher moves to a node relaying the stream; the viewer on the third node keeps its
                # session throughout.
                stay = players[1]
                sessions, frames = stay.sessions, stay.peer.frames
                stopped = time.monotonic()
                nodes[origin].process.send_signal(signal.SIGTERM)
                deadline = stopped + 8
                republished = False
                while time.monotonic() < deadline and not (republished and players[0].peer.frames > 5):
                    await players[0].follow(deadline)
                    if publisher.pc.connectionState in ("closed", "failed") and not republished:
                        await publisher.close()
                        publisher = Peer.publisher("h264", audio=True)
                        peers.append(publisher)
                        # to a node relaying the stream (whose viewer stays); the other relay follows it
                        assert await connect(door, publisher, "/whip/caster", key, deadline) in (stay.node, relay_node)
                        republished = True
                    await asyncio.sleep(0.05)
                assert republished, "the publisher's connection was never handed over"
                await players[0].peer.wait_frames(5, timeout=max(0.1, deadline - time.monotonic()))
                await stay.peer.wait_frames(frames + 30, timeout=max(0.1, deadline - time.monotonic()))
                print(f"DRAIN origin {origin}: every viewer decoding after {time.monotonic() - stopped:.2f} s")
                assert stay.sessions == sessions  # never reconnected
                assert players[0].node == relay_node
                assert nodes[origin].process.wait(timeout=15) == 0
            finally:
                for peer in (*peers, *(p.peer for p in players)):
                    await peer.close()
    logs = "".join(path.read_text() for path in tmp_path.glob("*/server.log"))
    assert "Traceback" not in logs, logs[-5000:]


async def _until_moved(player: Player, since: float) -> None:
    while not await player.follow(since + 5):
        assert time.monotonic() < since + 5, "the viewer's session was not handed over"
        await asyncio.sleep(0.05)
