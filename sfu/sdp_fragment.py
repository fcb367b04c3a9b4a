"""Trickle ICE SDP fragments (RFC 8840 section 9), as WHIP/WHEP PATCH bodies carry them (RFC 9725 4.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sfu.errors import BadOffer

MAX_CANDIDATES = 64


@dataclass(frozen=True, slots=True)
class Candidate:
    mid: str | None
    sdp: str  # the value after "a=candidate:"


@dataclass(frozen=True, slots=True)
class SdpFragment:
    ufrag: str | None
    pwd: str | None
    candidates: list[Candidate] = field(default_factory=list)
    end_of_candidates: bool = False

    @property
    def restarts_ice(self) -> bool:
        return self.ufrag is not None or self.pwd is not None


def parse_fragment(text: str) -> SdpFragment:
    ufrag = pwd = None
    candidates: list[Candidate] = []
    end = False
    mid: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("a=ice-ufrag:"):
            ufrag = line[len("a=ice-ufrag:") :]
        elif line.startswith("a=ice-pwd:"):
            pwd = line[len("a=ice-pwd:") :]
        elif line.startswith("m="):
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        elif line.startswith("a=candidate:"):
            value = line[len("a=candidate:") :]
            if len(value.split()) < 8:
                raise BadOffer(f"malformed candidate line: {line[:120]!r}")
            candidates.append(Candidate(mid, value))
        elif line == "a=end-of-candidates":
            end = True
        elif line.startswith(("a=", "v=", "o=", "s=", "t=", "c=")):
            continue  # group, ice-options and the like: nothing to do
        else:
            raise BadOffer(f"not an SDP fragment line: {line[:120]!r}")
    if len(candidates) > MAX_CANDIDATES:
        raise BadOffer(f"at most {MAX_CANDIDATES} candidates per PATCH")
    if (ufrag is None) != (pwd is None):
        raise BadOffer("an ICE restart needs both a=ice-ufrag and a=ice-pwd")
    return SdpFragment(ufrag, pwd, candidates, end)


def build_fragment(ufrag: str, pwd: str, mids: list[str], candidates: list[str]) -> str:
    """The answer to an ICE restart: our new credentials and all our candidates, per media section."""
    lines = [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}"]
    for mid in mids:
        lines.append("m=audio 9 RTP/AVP 0")
        lines.append(f"a=mid:{mid}")
        lines.extend(f"a=candidate:{c}" for c in candidates)
        lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"
