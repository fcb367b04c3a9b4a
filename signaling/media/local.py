"""The media plane of one process: its own SFU node, called directly."""

from __future__ import annotations

from sfu.node import SfuNode
from sfu.sdp_fragment import parse_fragment
from signaling.auth.roles import Principal
from signaling.media.plane import Layers, MediaPlane, SessionState, Ticket


class LocalPlane(MediaPlane):
    def __init__(self, node: SfuNode) -> None:
        self.node = node
        self.takeover_after = node.settings.takeover_after

    async def publish(self, channel: str, offer: str, owner: str, client: str) -> Ticket:
        session, answer = await self.node.publish(channel, offer, owner, client)
        return Ticket(session.id, session.etag, answer)

    async def subscribe(self, channel: str, offer: str, viewer: Principal | None, client: str,
                        relay: bool = False) -> Ticket:
        """`relay`: the offer is another node's relay of the stream, not a viewer's."""
        session, answer = await self.node.subscribe(channel, offer, viewer.username if viewer else None, client, relay)
        session.tag = viewer  # who chats on this session's `chat` data channel
        return Ticket(session.id, session.etag, answer)

    async def state(self, channel: str, session: str) -> SessionState:
        found = self.node.session(session, channel)
        return SessionState("publish" if found.kind == "publish" else "subscribe", found.etag)

    async def trickle(self, channel: str, session: str, fragment: str) -> None:
        self.node.session(session, channel)
        await self.node.trickle(session, parse_fragment(fragment))

    async def restart_ice(self, channel: str, session: str, fragment: str) -> tuple[str, str]:
        found = self.node.session(session, channel)
        answer = await self.node.restart_ice(session, parse_fragment(fragment))
        return answer, found.etag

    async def end(self, channel: str, session: str) -> None:
        self.node.session(session, channel)
        await self.node.end(session)

    async def layers(self, channel: str, session: str) -> Layers:
        self.node.session(session, channel)
        choices, current, auto = self.node.layers(session)
        return Layers(tuple(choices), current, auto)

    async def choose_layer(self, channel: str, session: str, layer: str) -> Layers:
        self.node.session(session, channel)
        self.node.choose_layer(session, layer)
        return await self.layers(channel, session)

    async def end_quietly(self, session: str) -> None:
        """End `session` if it is still there (a negotiation nobody waits for any more)."""
        if session in self.node.sessions:
            await self.node.end(session, "its front door gave up waiting")
