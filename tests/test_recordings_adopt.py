"""A node that dies while recording and never comes back: another node of the cluster finishes the
recording from the live copy the dead one had been sending to the storage.

Two media processes on one PostgreSQL database, a private Redis and one shared storage (a directory
here, as a shared volume; S3's unfinished multipart upload takes the same path in `take_unfinished`),
each with its own spool. The node recording the stream is killed with SIGKILL and not started again.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from media_probe import decode_errors, probe
from redis_server import redis_server
from server_process import serve
from test_chat_redis import account
from test_recordings import rec  # noqa: F401 - a fixture
from webrtc_peer import Peer


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_the_recording_of_a_node_that_never_comes_back_is_finished_by_another(
    tmp_path: Path, database_url: str,
) -> None:
    shared = tmp_path / "storage"
    with redis_server(tmp_path) as redis, ExitStack() as stack:
        common = {"DATABASE_URL": database_url, "BUS_URL": redis.url, "JWT_SECRET": secrets.token_hex(32),
                  "STORAGE_URL": f"file://{shared}", "RECORDING_ADOPT_AFTER": "2", "RECORDING_FRAGMENT_SECONDS": "1.0",
                  "WEBRTC_HOST_ADDRESSES": "127.0.0.1"}
        nodes = {}
        for i, name in enumerate(("node-a", "node-b")):
            (tmp_path / name).mkdir()
            nodes[name] = stack.enter_context(serve(tmp_path / name, ("serve",), NODE_ID=name, **common,
                                                    **({} if i == 0 else {"AUTO_MIGRATE": "false"})))
        async with aiohttp.ClientSession() as http:
            first = nodes["node-a"].url
            token = await account(http, first, "caster")
            auth = {"Authorization": f"Bearer {token}"}
            async with http.patch(f"{first}/api/channels/caster", json={"record_streams": True}, headers=auth) as r:
                assert r.status == 200
            async with http.get(f"{first}/api/me/stream-key", headers=auth) as r:
                key = (await r.json())["key"]
            peer = Peer.publisher("h264", audio=True)
            try:
                async with http.post(f"{first}/whip/caster", data=(await peer.offer()).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"}) as r:
                    assert r.status == 201, await r.text()
                    await peer.answer(await r.text())
                    last = r.headers["Location"].rsplit("/", 1)[1]  # {node}.{session} through a door, else {session}
                    origin = last.split(".")[0] if "." in last else "node-a"
                started = time.monotonic()
                await asyncio.sleep(8.0)
                dead, survivor = nodes[origin], nodes["node-b" if origin == "node-a" else "node-a"]
                dead.process.kill()  # SIGKILL, and it is never started again
                dead.process.wait()
                dead.killed = True
                published = time.monotonic() - started
            finally:
                await peer.close()
            assert list((tmp_path / origin / "spool").glob("*/spool.mp4")), "the dead node left its spool"

            deadline = time.monotonic() + 40
            while True:
                async with http.get(f"{survivor.url}/api/channels/caster/recordings") as r:
                    items: list[dict[str, Any]] = (await r.json())["items"]
                if items and items[0]["state"] not in ("recording", "processing"):
                    break
                assert time.monotonic() < deadline, items
                await asyncio.sleep(0.5)
            ready = items[0]
            assert len(items) == 1 and ready["state"] == "ready" and ready["ended_at"] is not None, ready
            target = tmp_path / "adopted.mp4"
            async with http.get(ready["playback_url"]) as r:
                assert r.status == 200
                target.write_bytes(await r.read())

            # Had it come back after all, it lets go of its spool and leaves the finished recording be.
            back = stack.enter_context(serve(tmp_path / origin, ("serve",), NODE_ID=origin, AUTO_MIGRATE="false",
                                             **common))
            deadline = time.monotonic() + 15
            while list((tmp_path / origin / "spool").glob("*/spool.mp4")):
                assert time.monotonic() < deadline, "the spool of an adopted recording stayed"
                await asyncio.sleep(0.2)
            async with http.get(f"{back.url}/api/channels/caster/recordings") as r:
                assert [(i["id"], i["state"]) for i in (await r.json())["items"]] == [(ready["id"], "ready")]
    info = probe(target)
    assert info.codec("video") == "h264" and info.codec("audio") == "opus"
    # The live copy lags the spool by up to one push (2 s) and a fragment (1 s), after the first keyframe.
    assert published - 5.0 < info.duration <= published + 0.2, (info.duration, published)
    assert decode_errors(target) == ""
    assert not list(shared.rglob("*.uploading")) and not list(shared.rglob("live.mp4"))  # nothing left behind
    log = (tmp_path / ("node-b" if origin == "node-a" else "node-a") / "server.log").read_text()
    assert f"its node {origin} is gone; finishing it here" in log and "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_only_a_copy_nobody_writes_to_is_adopted_and_only_once(rec: Any) -> None:
    """A node missing from the registry may still be recording (cut off from Redis alone): while its
    live copy changes, nobody takes it. No copy at all (a storage the nodes do not share): it waits for
    its node. A copy that stays as it is for RECORDING_ADOPT_AFTER is taken, by one node, once."""
    from sqlalchemy import select

    from cluster.memory import MemoryRegistry
    from signaling.db.models import Channel, Recording as RecordingRow
    from signaling.recordings.adoption import RecordingAdopter

    after = 0.3
    recordings = rec.services.recordings
    adopter = RecordingAdopter(recordings, MemoryRegistry(), after)  # a registry where nobody lives
    name, _ = await rec.user()
    async with rec.services.db.session() as session:
        channel = (await session.execute(select(Channel).where(Channel.name == name))).scalar_one()
        row = RecordingRow(channel_id=channel.id, stream_id="s" * 16, node="gone-node", state="recording")
        session.add(row)
        await session.commit()
        row_id = row.id
    assert await recordings.unfinished_elsewhere() == [(row_id, name, "gone-node")]
    assert await adopter.look() == 0
    await asyncio.sleep(after + 0.1)
    assert await adopter.look() == 0  # missing long enough, but no copy: left for its node

    copy = recordings.storage.local_path(f"recordings/{name}/{row_id}/live.mp4")
    assert copy is not None
    partial = copy.with_name("live.mp4.uploading")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"not media")  # (what it holds is finalize's concern; failing is a finish too)
    assert await adopter.look() == 0  # its copy just seen
    await asyncio.sleep(after + 0.1)
    partial.write_bytes(b"not media, and more")
    os.utime(partial, (time.time() + 5, time.time() + 5))  # written again (a coarse file clock moves too)
    assert await adopter.look() == 0  # it changed: its node lives
    await asyncio.sleep(after + 0.1)
    assert await adopter.look() == 1  # unchanged for `after`: taken
    assert not await recordings.adopt(row_id, name, "gone-node")  # and by nobody else
    async with rec.services.db.session() as session:
        taken = await session.get(RecordingRow, row_id)
        assert taken is not None and taken.node == rec.services.settings.resolved_node_id
        assert taken.state == "failed" and "nothing was recorded" in taken.error
    assert await recordings.unfinished_elsewhere() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_node_stopped_before_it_could_announce_itself_stops_at_once(rec: Any) -> None:
    """A node in a cluster recovers its recordings once the registry took its announcement; stopped
    before that (or a process that never announces), its shutdown does not wait for it."""
    recordings = rec.services.recordings
    recordings.announced = asyncio.Event()  # never set here
    recovering = asyncio.create_task(recordings.recover())
    await asyncio.sleep(0.2)
    assert not recovering.done()  # waiting for the announcement
    began = time.monotonic()
    await asyncio.wait_for(recordings.close(), 5)
    assert await asyncio.wait_for(recovering, 1) == 0 and time.monotonic() - began < 1
