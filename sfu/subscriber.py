"""A WHEP subscriber: one outgoing connection fed by the room's feeds through its down tracks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiortc import MediaStreamTrack, RTCRtpSender, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError

from sfu import aiortc_internals as internals
from sfu.downtrack import DownTrack
from sfu.errors import BadOffer, UnsupportedMedia
from sfu.feed import Feed
from sfu.layers import LayerPolicy
from sfu.negotiation import parse_offer, payload_maps, preferences_for
from sfu.session import Session


class IdleTrack(MediaStreamTrack):
    """Stands in the sender so aiortc signals a track; it never yields, so nothing is ever encoded."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> None:  # type: ignore[override]
        await asyncio.Future()


class Subscriber(Session):
    kind = "subscribe"

    def __init__(self, room: str, user: str | None, clock: Callable[[], float], client: str = "",
                 relay: bool = False) -> None:
        super().__init__(room, user, clock, client)
        self.relay = relay  # another node's relay, not a viewer: it always takes the source, whatever its loss
        self.relayed_viewers = 0  # how many watch through it, as it last said
        self.downtracks: list[DownTrack] = []
        self._senders: list[tuple[RTCRtpSender, DownTrack]] = []
        self.last_feedback_at = self.created_at
        self.layer_policy = LayerPolicy(clock)
        # Set by the node: move this viewer's video one layer down (-1) or up (+1).
        self.on_layer_step: Callable[[Subscriber, int], None] = lambda subscriber, step: None
        self.layer_pinned = False  # the viewer chose its layer: the loss policy leaves it there
        self.layer_chosen_at = float("-inf")  # when the viewer last chose a layer

    async def negotiate(self, offer: str, feeds: dict[str, Feed], gathering: internals.HostGathering) -> str:
        checked = parse_offer(offer, publishing=False)
        offered = {m.kind for m in checked.media}
        pc = self.pc
        for kind, feed in feeds.items():
            if kind not in offered:
                continue  # an audio-only (or video-only) player gets just that
            transceiver = pc.addTransceiver(IdleTrack(kind), direction="sendonly")
            transceiver.setCodecPreferences(preferences_for(feed.format))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(checked.sdp, "offer"))
        except OperationError:
            wanted = ", ".join(f.format.codec for f in feeds.values())
            raise UnsupportedMedia(f"the player cannot receive this stream's codecs ({wanted})") from None
        except (ValueError, InternalError, InvalidAccessError, InvalidStateError) as exc:
            raise BadOffer(str(exc)) from None
        gathering.apply(pc)
        internals.guard_transports(pc, gathering.guard)
        await pc.setLocalDescription(await pc.createAnswer())
        maps = payload_maps(pc.localDescription.sdp)
        for transceiver in pc.getTransceivers():
            track = transceiver.sender.track
            mapping = maps.get(transceiver.mid or "")
            if not isinstance(track, IdleTrack) or mapping is None:
                continue
            ssrc, rtx_ssrc = internals.sender_ssrcs(transceiver.sender)
            down = DownTrack(feeds[track.kind], mapping, ssrc, rtx_ssrc, internals.RtpOutput(transceiver.sender), self._clock)
            on_loss = self._on_video_loss if track.kind == "video" else None
            internals.intercept_feedback(transceiver.sender, down.on_nack, down.on_keyframe_request,
                                         self._feedback_handler(down), on_loss)
            self.downtracks.append(down)
            self._senders.append((transceiver.sender, down))
        if not self.downtracks:
            raise UnsupportedMedia("the offer receives none of the stream's tracks")
        return checked.answer(pc.localDescription.sdp)

    @property
    def video(self) -> DownTrack | None:
        return next((d for d in self.downtracks if d.feed.kind == "video"), None)

    def _on_video_loss(self, fraction: float) -> None:
        if self.relay:
            return  # the relay's viewers each choose their own layer on its node
        step = self.layer_policy.on_loss(fraction)
        if step:
            self.on_layer_step(self, step)

    def _feedback_handler(self, down: DownTrack) -> Callable[[float | None], None]:
        def on_report(rtt: float | None) -> None:
            self.last_feedback_at = self._clock()
            if rtt is not None:
                down.rtt = rtt

        return on_report

    def start(self) -> None:
        """Connected: join the feeds."""
        self.connected = True
        self.last_feedback_at = self._clock()
        for down in self.downtracks:
            if down not in down.feed.downtracks:
                down.feed.downtracks.append(down)
            down.start()

    def leave(self) -> None:
        for down in self.downtracks:
            down.cancel_switch()
            if down in down.feed.downtracks:
                down.feed.downtracks.remove(down)

    def sync_sender_reports(self) -> None:
        for sender, down in self._senders:
            internals.set_sender_report(sender, *down.sender_report())
