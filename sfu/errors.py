"""What the media plane refuses, for the signaling edge to turn into HTTP statuses.

    SfuError
    ├── BadOffer           malformed SDP, missing ICE/DTLS attributes, wrong direction   -> 400
    ├── UnsupportedMedia   well-formed, but no codec or track we can forward              -> 422
    ├── NotLive            nothing is being published in the room                        -> 409
    ├── AlreadyPublishing  another publisher holds the room                              -> 409
    ├── NodeFull           the node has its maximum of viewers, or of sessions connecting -> 503
    ├── TooManyPending     this client has its maximum of sessions still connecting      -> 429
    ├── TooManyCandidates  a session was sent more trickled candidates than it takes     -> 422
    ├── UnknownSession     no such session (ended, or never existed)                     -> 404
    └── UnknownLayer       no such layer (rendition) of the room's video                 -> 404
"""

from __future__ import annotations


class SfuError(Exception):
    pass


class BadOffer(SfuError):
    pass


class UnsupportedMedia(SfuError):
    pass


class NotLive(SfuError):
    pass


class AlreadyPublishing(SfuError):
    pass


class NodeFull(SfuError):
    pass


class TooManyPending(SfuError):
    pass


class TooManyCandidates(SfuError):
    pass


class UnknownSession(SfuError):
    pass


class UnknownLayer(SfuError):
    """No such layer (rendition) of the room's video."""
