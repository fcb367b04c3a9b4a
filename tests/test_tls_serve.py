"""`tally serve` terminating TLS itself (TLS_CERT, TLS_KEY): HTTPS, WSS chat and HSTS from the real
process, for a single host without a gateway in front."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from server_process import serve
from signaling.settings import Settings
from tls_files import handshake, self_signed

PASSWORD = "correct horse battery"


async def test_https_and_wss_from_the_process_itself(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trusted = ssl.create_default_context(cafile=str(cert))
    with serve(tmp_path, TLS_CERT=str(cert), TLS_KEY=str(key)) as server:
        assert server.url.startswith("https://")
        async with aiohttp.ClientSession(base_url=server.url, connector=aiohttp.TCPConnector(ssl=trusted)) as http:
            async with http.post("/api/auth/register", json={"username": "tls", "email": "tls@example.com",
                                                             "password": PASSWORD}) as response:
                assert response.status == 201, await response.text()
                assert response.headers["Strict-Transport-Security"].startswith("max-age=63072000")
            async with http.post("/api/auth/login", json={"username": "tls", "password": PASSWORD}) as response:
                assert response.status == 200, await response.text()
                token = (await response.json())["access_token"]
            async with http.get("/api/ice-servers") as response:
                assert response.status == 200 and "Strict-Transport-Security" in response.headers
            async with http.ws_connect("/ws?channel=tls") as ws:  # WSS
                assert json.loads((await ws.receive(timeout=5)).data)["type"] == "welcome"
                await ws.send_str(json.dumps({"type": "auth", "token": token}))
                await ws.send_str(json.dumps({"type": "send", "text": "over TLS", "nonce": "n1"}))
                while True:
                    frame = json.loads((await ws.receive(timeout=5)).data)
                    if frame.get("nonce") == "n1":
                        assert frame["type"] == "ack", frame
                        break
        host, port = server.url.removeprefix("https://").split(":")
        assert handshake(host, int(port), ssl.TLSVersion.TLSv1_1) is None  # TLS 1.2 and later only
        assert handshake(host, int(port), ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
        assert handshake(host, int(port), ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        # Plain HTTP to the TLS port gets no answer; a client that checks certificates refuses ours.
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(server.url.replace("https://", "http://") + "/readyz") as response:
                    await response.read()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with plain.get(server.url + "/readyz") as response:
                    await response.read()


def test_tls_settings_are_checked_at_start(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with pytest.raises(ValidationError, match="TLS_CERT and TLS_KEY go together"):
        Settings(data_dir=tmp_path, tls_cert=cert)
    with pytest.raises(ValidationError, match="cannot be loaded"):
        Settings(data_dir=tmp_path, tls_cert=cert, tls_key=tmp_path / "missing.pem")
    (tmp_path / "other").mkdir()
    other_cert, _ = self_signed(tmp_path / "other")
    with pytest.raises(ValidationError, match="cannot be loaded"):
        Settings(data_dir=tmp_path, tls_cert=other_cert, tls_key=key)  # a key that does not fit
    settings = Settings(data_dir=tmp_path, tls_cert=cert, tls_key=key, port=8443)
    assert settings.resolved_public_url == "https://127.0.0.1:8443"
