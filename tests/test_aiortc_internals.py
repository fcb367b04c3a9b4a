"""The SFU's reliance on aiortc/aioice internals fails loudly, not subtly, when they change; RTX bytes."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport

from sfu import aiortc_internals as internals
from sfu import rtx
from sfu.output import TOO_LARGE, TRANSPORT_CLOSED


def test_the_pinned_versions_have_every_private_name_used() -> None:
    internals.check()


def test_a_missing_private_name_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCDtlsTransport, "_handle_rtp_data")
    with pytest.raises(internals.InternalsChanged, match="RTCDtlsTransport._handle_rtp_data is gone"):
        internals.check()


def test_another_aiortc_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals.aiortc, "__version__", "9.9.9")
    with pytest.raises(internals.InternalsChanged, match="aiortc is 9.9.9"):
        internals.check()


def _packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, padding: int = 0) -> bytes:
    first = 0x80 | (0x20 if padding else 0)
    pad = bytes(padding - 1) + bytes([padding]) if padding else b""
    return struct.pack("!BBHII", first, pt, seq, ts, ssrc) + payload + pad


def test_rtx_wraps_and_unwraps_to_the_same_packet() -> None:
    original = _packet(96, 1000, 90_000, 0x1111, b"\x65frame-data")
    wrapped = rtx.wrap(original, 97, 0x2222, 7)
    assert struct.unpack_from("!BBHII", wrapped) == (0x80, 97, 7, 90_000, 0x2222)
    assert wrapped[12:14] == struct.pack("!H", 1000)  # the original sequence number leads the payload
    assert rtx.unwrap(bytes(wrapped), 96, 0x1111) == original


def test_padding_only_rtx_probes_are_dropped() -> None:
    assert rtx.unwrap(_packet(97, 5, 0, 0x2222, b"", padding=200), 96, 0x1111) is None
    assert rtx.unwrap(_packet(97, 5, 0, 0x2222, b"\x03\xe8", padding=4), 96, 0x1111) is None
    assert rtx.unwrap(b"\x80\x61", 96, 0x1111) is None  # truncated


async def test_data_channel_text_goes_out_in_the_call_in_order_and_whole() -> None:
    """`send_texts` flushes without a task per message, one at a time or several at once; the far side
    gets every message, in order, intact (one larger than an SCTP chunk, and an empty one, which takes
    aiortc's own path, in a batch)."""
    import asyncio

    from aiortc import RTCConfiguration, RTCPeerConnection

    from webrtc_peer import LOOPBACK

    offerer, answerer = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
    got: list[str] = []
    done = asyncio.get_running_loop().create_future()
    texts = [f"message {i} " + "é" * (i % 7) for i in range(300)] + ["x" * 5000, ""]
    try:
        sending = offerer.createDataChannel("chat")

        @answerer.on("datachannel")
        def on_channel(channel: Any) -> None:
            @channel.on("message")
            def on_message(text: str) -> None:
                got.append(text)
                if len(got) == len(texts):
                    done.set_result(None)

        opened = asyncio.get_running_loop().create_future()
        sending.on("open", lambda: opened.set_result(None))
        internals.plan_gathering(offerer, LOOPBACK)
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        internals.plan_gathering(answerer, LOOPBACK)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        await asyncio.wait_for(opened, 10)
        await asyncio.sleep(0.2)  # let the association's own start-up tasks finish

        # A flush that fails (the DTLS transport closed under a channel still "open") does not reach
        # the sender: a chat fan-out must go on to the other clients.
        original_flush = sending.transport._data_channel_flush

        async def failing_flush() -> None:
            raise ConnectionError("Cannot send encrypted data, not connected")

        sending.transport._data_channel_flush = failing_flush
        internals.send_texts(sending, [b"lost"])
        sending.transport._data_channel_flush = original_flush
        sending.transport._data_channel_queue.clear()
        sending._addBufferedAmount(-len("lost"))

        tasks_before = len(asyncio.all_tasks())
        encoded = [text.encode() for text in texts]
        for data in encoded[:200]:
            internals.send_texts(sending, [data])
        internals.send_texts(sending, encoded[200:300])
        assert len(asyncio.all_tasks()) == tasks_before  # aiortc's own send would have left 300 flush tasks
        internals.send_texts(sending, encoded[300:])
        await asyncio.wait_for(done, 10)
        assert got == texts
        assert sending.bufferedAmount == 0
    finally:
        await offerer.close()
        await answerer.close()


async def test_rtp_output_protects_and_sends_only_once_connected_and_keeps_order_behind_a_queue() -> None:
    """The output's own libsrtp call and direct socket send: nothing goes out (and nothing crashes)
    before ICE has a pair and DTLS has keys; then the far side unprotects exactly what was written,
    straight from the socket while the transport's queue is empty, behind that queue when it is not,
    and to the new address when ICE nominates another pair."""
    import asyncio
    import os
    import socket
    from types import SimpleNamespace

    from pylibsrtp import Policy, Session

    key = os.urandom(30)

    def session(direction: int) -> Session:
        policy = Policy(key=key, ssrc_type=direction)
        policy.allow_repeat_tx = True
        return Session(policy)

    loop = asyncio.get_running_loop()
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.settimeout(5)
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    through_transport = []
    sendto = transport.sendto

    def counted(data: Any, addr: Any = None) -> None:
        through_transport.append(data)
        sendto(data, addr)

    transport.sendto = counted  # type: ignore[method-assign]
    try:
        connection = SimpleNamespace(_nominated={})
        dtls = SimpleNamespace(_tx_srtp=None, transport=SimpleNamespace(_connection=connection))
        output = internals.RtpOutput(SimpleNamespace(transport=dtls))  # type: ignore[arg-type]
        packets = [_packet(111, seq, seq * 960, 0x1234, bytes([seq]) * 80) for seq in range(1, 5)]

        assert output.send(packets[0]) == -1  # no nominated pair yet
        pair = SimpleNamespace(protocol=SimpleNamespace(transport=transport), remote_addr=receiver.getsockname())
        connection._nominated[1] = pair
        assert output.send(packets[0]) == -1  # no SRTP keys yet
        dtls._tx_srtp = session(Policy.SSRC_ANY_OUTBOUND)
        inbound = session(Policy.SSRC_ANY_INBOUND)

        assert output.send(bytearray(packets[0])) == 0
        assert inbound.unprotect(receiver.recv(2048)) == packets[0]
        assert through_transport == []  # straight to the socket
        full = _packet(96, 9, 900, 0x1234, bytes(1490 - 12))  # fills a 1,500-byte datagram once protected
        assert output.send(full) == 0
        assert inbound.unprotect(receiver.recv(4096)) == full  # forwarded whole, trailer and all
        assert output.send(bytes(internals.MAX_RTP_BYTES + 1)) == TOO_LARGE  # nothing sent, and said why
        queued = b"queued before"
        transport._buffer.append((queued, receiver.getsockname()))  # as asyncio leaves a datagram the socket refused
        transport._buffer_size += len(queued)
        assert output.send(packets[1]) > 0
        assert len(through_transport) == 1
        transport._sendto_ready()  # the socket is writable again: the queue drains in order
        assert receiver.recv(2048) == queued
        assert inbound.unprotect(receiver.recv(2048)) == packets[1]
        connection._nominated[1] = SimpleNamespace(protocol=pair.protocol, remote_addr=other.getsockname())
        assert output.send(packets[2]) == 0
        assert inbound.unprotect(other.recv(2048)) == packets[2]
        assert len(through_transport) == 1

        transport.close()
        assert output.send(packets[3]) == TRANSPORT_CLOSED
    finally:
        transport.close()
        receiver.close()
        other.close()
