"""Live chat: one JSON protocol on WebRTC data channels and on the WebSocket, fanned out over the bus."""
