"""Where a down track's packets go, and why one could not go (counted per reason on /metrics)."""

from __future__ import annotations

from typing import Protocol

# What `Output.send` returns when a packet was not sent: a negative code, an index into DROP_REASONS.
NOT_CONNECTED = -1  # no nominated ICE pair or no SRTP keys yet
TOO_LARGE = -2  # larger than the output's buffer (a full datagram plus the SRTP trailer)
SRTP_FAILED = -3  # libsrtp refused to protect it
SOCKET_REFUSED = -4  # the network refused the datagram (as asyncio's own transport: it is lost)
TRANSPORT_CLOSED = -5  # the transport is closing

DROP_REASONS = ("", "not_connected", "too_large", "srtp_error", "socket_error", "transport_closed")


class Output(Protocol):
    def send(self, packet: bytes | bytearray) -> int:
        """Send; the socket's pending write bytes afterwards, or a negative code (nothing sent)."""
