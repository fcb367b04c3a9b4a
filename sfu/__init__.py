"""The media plane: WebRTC peers, RTP forwarding, keyframe and NACK logic, rooms.

Imports nothing of ours. The packet path works on RTP bytes and never decodes or encodes media.
"""
