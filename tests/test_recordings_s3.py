"""Recordings on an S3 API: a real S3 endpoint on loopback (moto's server mode), reached by boto3 over
HTTP exactly as AWS S3 or MinIO would be (path-style addressing, multipart uploads, presigned URLs).
Every upload is verified by reading the object back."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from moto.server import ThreadedMotoServer

from media_probe import decode_errors, probe
from recorder.storage import S3Options, S3Storage, put_file
from signaling.app import SERVICES
from support import Api, FakeClock, free_port
from test_recordings import record, wait_state

BUCKET = "tally-media"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


async def test_a_large_file_goes_up_in_parts_and_reads_back_identical(s3_endpoint: str, s3: Any, tmp_path: Path) -> None:
    storage = S3Storage(BUCKET, "unit", S3Options(endpoint_url=s3_endpoint, region="us-east-1", path_style=True, part_size=5 * MiB))
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(12 * MiB + 123))
    size = await put_file(storage, "a/big.bin", source, "application/octet-stream")
    assert size == source.stat().st_size
    head = s3.head_object(Bucket=BUCKET, Key="unit/a/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MiB
    assert head["ContentType"] == "application/octet-stream"
    body = s3.get_object(Bucket=BUCKET, Key="unit/a/big.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(source.read_bytes()).digest()
    assert await storage.size("a/big.bin") == size and await storage.size("a/none.bin") is None
    # A presigned URL works for a plain HTTP client, with ranges.
    url = storage.presigned_url("a/big.bin", 60)
    assert url is not None
    async with aiohttp.ClientSession() as http, http.get(url, headers={"Range": "bytes=0-9"}) as response:
        assert response.status == 206 and await response.read() == body[:10]
    # An upload a crash left unfinished is found and aborted.
    upload = storage.open_upload("a/crashed.mp4", "video/mp4")
    await upload.write(os.urandom(6 * MiB))  # one part sent, never completed
    assert len(s3.list_multipart_uploads(Bucket=BUCKET, Prefix="unit/a/").get("Uploads", [])) == 1
    assert await storage.abort_stale_uploads("a") == 1
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix="unit/a/").get("Uploads", []) == []
    await storage.delete("a/big.bin")
    await storage.delete("a/big.bin")  # deleting what is gone is fine
    assert await storage.size("a/big.bin") is None
    await storage.close()


@pytest.fixture
async def rec_s3(app_factory: Callable[..., web.Application], clock: FakeClock, s3_endpoint: str) -> AsyncIterator[Api]:
    app = app_factory(
        webrtc_host_addresses=["127.0.0.1"],
        publisher_timeout=3.0,
        storage_url=f"s3://{BUCKET}/site",
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        s3_path_style=True,
    )
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_recording_is_uploaded_to_s3_and_plays_from_a_presigned_url(rec_s3: Api, s3: Any, tmp_path: Path) -> None:
    name, token, item, published = await record(rec_s3, "h264", 5.0)
    ready = await wait_state(rec_s3, item["id"], "ready")
    prefix = f"site/recordings/{name}/{item['id']}"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])}
    assert keys == {f"{prefix}/recording.mp4", f"{prefix}/thumbnail.jpg"}  # the live copy is gone once final
    head = s3.head_object(Bucket=BUCKET, Key=f"{prefix}/recording.mp4")
    assert "-" in head["ETag"] and head["ContentLength"] == ready["size"]  # a multipart upload
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", []) == []
    url = ready["playback_url"]
    assert url.startswith(f"http://127.0.0.1:") and "X-Amz-Signature" in url
    target = tmp_path / "r.mp4"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        target.write_bytes(await response.read())
    assert target.read_bytes() == s3.get_object(Bucket=BUCKET, Key=f"{prefix}/recording.mp4")["Body"].read()
    info = probe(target)
    assert info.codec("video") == "h264" and info.codec("audio") == "opus"
    assert published - 1.2 < info.duration <= published + 0.2
    assert decode_errors(target) == ""
    # The API's media link redirects to the bucket.
    async with rec_s3.client.get(f"/api/recordings/{item['id']}/media", allow_redirects=False) as response:
        assert response.status == 302 and "X-Amz-Signature" in response.headers["Location"]
    status, _, _ = await rec_s3.call("DELETE", f"/api/recordings/{item['id']}", token=token)
    assert status == 204
    await asyncio.sleep(0)
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("KeyCount", 0) == 0


async def test_an_unfinished_upload_is_taken_whole_parts_and_all(s3_endpoint: str, s3: Any, tmp_path: Path) -> None:
    """A dead recorder's live copy: the parts it sent become the object, read back to a local file (the
    node finishing the recording works from it); what it had not sent yet is not there."""
    storage = S3Storage(BUCKET, "adopt", S3Options(endpoint_url=s3_endpoint, region="us-east-1", path_style=True,
                                                   part_size=5 * MiB))
    data = os.urandom(11 * MiB)
    upload = storage.open_upload("rec/live.mp4", "video/mp4")
    await upload.write(data)  # two parts sent, 1 MiB still held by the (dead) writer
    written = await storage.last_written("rec/live.mp4")
    assert written is not None and abs(written - time.time()) < 60  # (its clock and ours)
    assert await storage.last_written("rec/none.mp4") is None
    into = tmp_path / "spool.mp4"
    assert await storage.take_unfinished("rec/live.mp4", into)
    assert into.read_bytes() == data[:10 * MiB]
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix="adopt/").get("Uploads", []) == []
    assert not await storage.take_unfinished("rec/none.mp4", tmp_path / "none.mp4")
    again = tmp_path / "again.mp4"  # finished meanwhile (by its node, or the first taker): taken as it is
    assert await storage.take_unfinished("rec/live.mp4", again) and again.read_bytes() == data[:10 * MiB]
    assert await storage.last_written("rec/live.mp4") is not None
    empty = storage.open_upload("rec/empty.mp4", "video/mp4")
    await empty.write(os.urandom(MiB))  # nothing sent: no multipart upload exists yet
    assert not await storage.take_unfinished("rec/empty.mp4", tmp_path / "empty.mp4")
    await storage.close()
