"""The Tallylight signaling service: HTTP API, WHIP/WHEP, WebSocket, accounts and the web app."""
