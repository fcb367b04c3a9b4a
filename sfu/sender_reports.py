"""What a subscriber's RTCP sender report says, derived from the publisher's (RFC 3550 section 6.4.1).

Players align audio and video by the NTP time each stream's sender reports pin to an RTP timestamp.
The SFU rewrites timestamps per subscriber, so it must send reports that pin the publisher's NTP
clock to the subscriber's timestamps: the publisher's mapping, extrapolated to now at the clock rate,
pushed through the subscriber's timestamp offset.
"""

from __future__ import annotations

from dataclasses import dataclass

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)


def ntp_to_seconds(ntp: int) -> float:
    return (ntp >> 32) + (ntp & 0xFFFFFFFF) / (1 << 32)


def seconds_to_ntp(seconds: float) -> int:
    whole = int(seconds)
    return (whole << 32) | int((seconds - whole) * (1 << 32))


@dataclass(frozen=True, slots=True)
class ClockMapping:
    """One publisher sender report: NTP time (seconds since 1900) and the RTP timestamp at that time,
    with the local arrival time so the mapping can be carried forward."""

    ntp_seconds: float
    rtp_timestamp: int
    clock_rate: int
    received_at: float  # local monotonic seconds

    def at(self, now: float) -> tuple[float, int]:
        """(NTP seconds, source RTP timestamp) for local time `now`."""
        elapsed = now - self.received_at
        return self.ntp_seconds + elapsed, (self.rtp_timestamp + round(elapsed * self.clock_rate)) & 0xFFFFFFFF
