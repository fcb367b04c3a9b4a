"""A real WebRTC peer for tests (aiortc on loopback): publishes pre-encoded video, or watches and counts
decoded frames. It plays the role a browser or OBS plays; nothing of the server is mocked."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer

from media_clips import EncodedAudioTrack, EncodedVideoTrack, encode_audio, encode_video
from sfu import aiortc_internals as internals

LOOPBACK = internals.IcePlan(("127.0.0.1",))
_CLIPS: dict[str, list[bytes]] = {}


def clip(codec: str) -> list[bytes]:
    if codec not in _CLIPS:
        _CLIPS[codec] = encode_video(codec, frames=60, gop=15)
    return _CLIPS[codec]


class Peer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames = 0
        self.audio_samples = 0  # decoded audio received (48 kHz)
        self.sizes: dict[tuple[int, int], int] = {}  # decoded pictures by size
        self.last_size: tuple[int, int] | None = None
        self.first_frame_at: float | None = None
        self._readers: list[asyncio.Task[None]] = []

    @classmethod
    def publisher(cls, codec: str = "h264", audio: bool = False) -> Peer:
        peer = cls()
        transceiver = peer.pc.addTransceiver(EncodedVideoTrack(clip(codec)), direction="sendonly")
        wanted = {f"video/{codec}".lower(), "video/rtx"}
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in wanted])
        if audio:  # a tone, pre-encoded like the video: aiortc only packetises it
            if "opus" not in _CLIPS:
                _CLIPS["opus"] = encode_audio(seconds=2.0)
            peer.pc.addTransceiver(EncodedAudioTrack(_CLIPS["opus"]), direction="sendonly")
        return peer

    @classmethod
    def viewer(cls) -> Peer:
        peer = cls()
        video = peer.pc.addTransceiver("video", direction="recvonly")
        peer.pc.addTransceiver("audio", direction="recvonly")
        # A packet the server can never supply (lost upstream just before a keyframe: the SFU, like
        # libwebrtc, stops asking for it) leaves a hole. Browsers drop the broken frame and go on from
        # the keyframe; aiortc's video jitter buffer waits until 512 packets pile up behind the hole
        # (5-15 s of these clips), then gives up and asks for a keyframe. With 128 it does the same
        # after about a second, which is closer to what a viewer sees.
        video.receiver._RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=128, is_video=True)

        @peer.pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":
                peer._readers.append(asyncio.ensure_future(peer._read(track)))
            else:
                peer._readers.append(asyncio.ensure_future(peer._listen(track)))

        return peer

    async def _read(self, track: Any) -> None:
        while True:
            try:
                picture = await track.recv()
            except Exception:
                return
            self.frames += 1
            size = (picture.width, picture.height)
            self.sizes[size] = self.sizes.get(size, 0) + 1
            self.last_size = size
            if self.first_frame_at is None:
                self.first_frame_at = time.monotonic()

    async def _listen(self, track: Any) -> None:
        while True:
            try:
                sound = await track.recv()
            except Exception:
                return
            self.audio_samples += sound.samples

    async def offer(self) -> str:
        internals.plan_gathering(self.pc, LOOPBACK)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def wait_frames(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.frames < count:
            assert time.monotonic() < deadline, f"only {self.frames} frames decoded"
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        await self.pc.close()
