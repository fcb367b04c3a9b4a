"""Where recordings, thumbnails and (later) HLS segments are kept: local files or any S3 API.

`open_storage("file:///srv/media")` or `open_storage("s3://bucket/prefix", S3Options(...))`. Keys are
relative paths like `recordings/alice/42/recording.mp4`. Uploads are streamed: an `Upload` holds at
most one part in memory and sends parts as they fill (S3 multipart), so a file of any size is
uploaded without being read whole, and a recording can be uploaded while it is being written.
boto3 blocks, so every S3 call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024  # S3 wants at least 5 MiB for every part but the last
READ_CHUNK = 1024 * 1024


class StorageError(RuntimeError):
    """The storage refused or failed an operation (after the client's own retries)."""


class Upload(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def complete(self) -> int:
        """Make the object visible under its key; its size in bytes."""

    async def abort(self) -> None: ...


class Storage(Protocol):
    description: str  # for logs and /readyz, without credentials

    def open_upload(self, key: str, content_type: str) -> Upload: ...

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing one is not an error."""

    async def size(self, key: str) -> int | None:
        """The object's size, None when it does not exist."""

    async def read(self, key: str) -> bytes: ...

    def presigned_url(self, key: str, expires: int) -> str | None:
        """A URL a browser can GET (with ranges) directly, or None: serve it through `local_path`."""

    def local_path(self, key: str) -> Path | None: ...

    async def abort_stale_uploads(self, prefix: str) -> int:
        """Abort unfinished uploads under `prefix` (a crashed recorder's); how many."""

    async def last_written(self, key: str) -> float | None:
        """When `key` was last written to (Unix time): its unfinished upload's newest part, else the
        object itself; None when there is neither."""

    async def take_unfinished(self, key: str, into: Path) -> bool:
        """Write what an unfinished upload of `key` holds so far (a dead recorder's live copy), else the
        finished object, to the local file `into`; False when there is neither."""

    async def close(self) -> None: ...


async def put_file(storage: Storage, key: str, path: Path, content_type: str) -> int:
    """Upload a local file, streamed in parts (never read whole); its size."""
    upload = storage.open_upload(key, content_type)
    try:
        async for chunk in _chunks(path):
            await upload.write(chunk)
        return await upload.complete()
    except BaseException:
        await upload.abort()
        raise


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, PART_SIZE):
            yield chunk
    finally:
        handle.close()


def _safe_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a storage key: {key!r}")
    return key


# --- file:// ---------------------------------------------------------------------------------------


class FileStorage:
    """Objects are files under `root`; an upload is written beside its key and renamed when complete,
    so a half-written object is never visible."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"file://{root}"

    def _path(self, key: str) -> Path:
        return self.root / _safe_key(key)

    def open_upload(self, key: str, content_type: str) -> Upload:
        return _FileUpload(self._path(key))

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        upload = self.open_upload(key, content_type)
        await upload.write(data)
        await upload.complete()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            return None

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    def presigned_url(self, key: str, expires: int) -> str | None:
        return None

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def last_written(self, key: str) -> float | None:
        path = self._path(key)

        def newest() -> float | None:
            for candidate in (path.with_name(path.name + ".uploading"), path):
                try:
                    return candidate.stat().st_mtime
                except FileNotFoundError:
                    continue
            return None

        return await asyncio.to_thread(newest)

    async def take_unfinished(self, key: str, into: Path) -> bool:
        path = self._path(key)

        def copy() -> bool:
            for candidate in (path.with_name(path.name + ".uploading"), path):
                try:
                    shutil.copyfile(candidate, into)
                except FileNotFoundError:
                    continue
                return True
            return False

        return await asyncio.to_thread(copy)

    async def abort_stale_uploads(self, prefix: str) -> int:
        folder = self.root / _safe_key(prefix)
        stale = await asyncio.to_thread(lambda: list(folder.rglob("*.uploading")) if folder.is_dir() else [])
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    async def close(self) -> None:
        return None


class _FileUpload:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._partial = path.with_name(path.name + ".uploading")
        self._handle: Any = None
        self._size = 0

    async def write(self, data: bytes) -> None:
        if self._handle is None:
            await asyncio.to_thread(self._path.parent.mkdir, parents=True, exist_ok=True)
            self._handle = await asyncio.to_thread(open, self._partial, "wb")
        await asyncio.to_thread(self._handle.write, data)
        self._size += len(data)

    async def complete(self) -> int:
        if self._handle is None:
            await self.write(b"")
        handle, self._handle = self._handle, None

        def finish() -> None:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(self._partial, self._path)

        await asyncio.to_thread(finish)
        return self._size

    async def abort(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()
        self._partial.unlink(missing_ok=True)


# --- s3:// -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class S3Options:
    endpoint_url: str | None = None  # None: AWS; http://127.0.0.1:9000 for MinIO
    region: str | None = None
    path_style: bool = False  # MinIO and most self-hosted endpoints want path-style addressing
    part_size: int = PART_SIZE


class S3Storage:
    """Any S3 API. Credentials come from boto3's usual chain (environment, shared files, instance role)."""

    def __init__(self, bucket: str, prefix: str, options: S3Options) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = max(options.part_size, 5 * 1024 * 1024)
        self.description = f"s3://{bucket}/{self.prefix}" + (f" at {options.endpoint_url}" if options.endpoint_url else "")
        config = Config(
            s3={"addressing_style": "path" if options.path_style else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
            signature_version="s3v4",
        )
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=options.endpoint_url, region_name=options.region, config=config
        )

    def _key(self, key: str) -> str:
        key = _safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _call(self, name: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(getattr(self.client, name), Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"S3 {name} failed: {exc}") from exc

    def open_upload(self, key: str, content_type: str) -> Upload:
        return _S3Upload(self, self._key(key), content_type)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        await self._call("put_object", Key=self._key(key), Body=data, ContentType=content_type)

    async def delete(self, key: str) -> None:
        await self._call("delete_object", Key=self._key(key))

    async def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"S3 head_object failed: {exc}") from exc
        return int(head["ContentLength"])

    async def read(self, key: str) -> bytes:
        response = await self._call("get_object", Key=self._key(key))
        return await asyncio.to_thread(response["Body"].read)

    def presigned_url(self, key: str, expires: int) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires
        )
        return url

    def local_path(self, key: str) -> Path | None:
        return None

    async def _unfinished(self, full: str) -> tuple[str, list[dict[str, Any]]] | None:
        """The newest unfinished upload of the key `full`: its id and its parts."""
        listing = await self._call("list_multipart_uploads", Prefix=full)
        uploads = sorted((u for u in listing.get("Uploads", []) if u["Key"] == full), key=lambda u: u["Initiated"])
        if not uploads:
            return None
        upload_id = uploads[-1]["UploadId"]
        parts: list[dict[str, Any]] = []
        marker = 0
        while True:
            page = await self._call("list_parts", Key=full, UploadId=upload_id, PartNumberMarker=marker)
            parts += page.get("Parts", [])
            if not page.get("IsTruncated") or len(parts) >= 10_000:
                return upload_id, parts
            marker = int(page["NextPartNumberMarker"])

    async def last_written(self, key: str) -> float | None:
        full = self._key(key)
        unfinished = await self._unfinished(full)
        if unfinished is not None and unfinished[1]:
            return max(p["LastModified"] for p in unfinished[1]).timestamp()  # type: ignore[no-any-return]
        try:
            head = await self._call("head_object", Key=full)
        except StorageError:
            return None
        return head["LastModified"].timestamp()  # type: ignore[no-any-return]

    async def take_unfinished(self, key: str, into: Path) -> bool:
        # The parts sent so far become the object (each but the last is a whole part), then it is read.
        full = self._key(key)
        unfinished = await self._unfinished(full)
        if unfinished is not None:
            upload_id, parts = unfinished
            if parts:
                await self._call("complete_multipart_upload", Key=full, UploadId=upload_id, MultipartUpload={
                    "Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]})
            else:
                await self._call("abort_multipart_upload", Key=full, UploadId=upload_id)
        if await self.size(key) is None:
            return False
        response = await self._call("get_object", Key=full)

        def save() -> None:
            with into.open("wb") as out:
                for chunk in response["Body"].iter_chunks(1024 * 1024):
                    out.write(chunk)

        await asyncio.to_thread(save)
        return True

    async def abort_stale_uploads(self, prefix: str) -> int:
        listing = await self._call("list_multipart_uploads", Prefix=self._key(prefix))
        uploads = listing.get("Uploads", [])
        for upload in uploads:
            await self._call("abort_multipart_upload", Key=upload["Key"], UploadId=upload["UploadId"])
        return len(uploads)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


class _S3Upload:
    """A multipart upload fed in chunks: at most one part is held in memory."""

    def __init__(self, storage: S3Storage, key: str, content_type: str) -> None:
        self._s3 = storage
        self._key = key
        self._content_type = content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._size = 0

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self._size += len(data)
        while len(self._buffer) >= self._s3.part_size:
            part = bytes(self._buffer[: self._s3.part_size])
            del self._buffer[: self._s3.part_size]
            await self._send(part)

    async def _send(self, part: bytes) -> None:
        if self._upload_id is None:
            created = await self._s3._call("create_multipart_upload", Key=self._key, ContentType=self._content_type)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        sent = await self._s3._call("upload_part", Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=part)
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def complete(self) -> int:
        if self._buffer or not self._parts:
            part, self._buffer = bytes(self._buffer), bytearray()
            await self._send(part)
        await self._s3._call(
            "complete_multipart_upload",
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None
        return self._size

    async def abort(self) -> None:
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                await self._s3._call("abort_multipart_upload", Key=self._key, UploadId=upload_id)
            except StorageError as exc:
                log.warning("could not abort the upload of %s: %s", self._key, exc)


def open_storage(url: str, s3: S3Options | None = None) -> Storage:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        root = Path(parsed.netloc + parsed.path) if parsed.netloc else Path(parsed.path)
        return FileStorage(root)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError("STORAGE_URL s3://bucket[/prefix] needs a bucket")
        return S3Storage(parsed.netloc, parsed.path, s3 or S3Options())
    raise ValueError(f"STORAGE_URL must be file://… or s3://…, not {url!r}")

