"""RTMP behind a TCP load balancer: the PROXY header tells the encoder's address.

The balancer is Debian's nginx (its stream module, `proxy_protocol on`, version 1 of the header) and the
encoder FFmpeg; version 2 is checked against the bytes the specification gives. Only the balancer's
address is believed, and from it the header is required.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
from pathlib import Path

import pytest
from nginx_process import nginx, nginx_check
from support import free_port
from test_rtmp_session import Collected, ffmpeg

from sfu.rtmp.proxy_header import V2_SIGNATURE, ProxyHeaderError, Source, parse
from sfu.rtmp.session import Limits, Publisher, RtmpServer

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")  # Debian's libnginx-mod-stream
BALANCER = "127.0.0.9"  # the address nginx connects from (proxy_bind): the one trusted


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + len(body).to_bytes(2, "big") + body


TCP4 = bytes([203, 0, 113, 7, 10, 0, 0, 1]) + (5555).to_bytes(2, "big") + (1935).to_bytes(2, "big")
MAPPED = bytes(10) + b"\xff\xff" + bytes([198, 51, 100, 9]) + bytes(15) + b"\x01" + (4242).to_bytes(2, "big") \
    + (1935).to_bytes(2, "big")


@pytest.mark.parametrize(("header", "source"), [
    (b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 1935\r\n", Source("203.0.113.7", 5555)),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 1935\r\n", Source("2001:db8::7", 5555)),
    (b"PROXY UNKNOWN\r\n", Source(None)),
    (v2(1, 0x11, TCP4), Source("203.0.113.7", 5555)),
    (v2(1, 0x11, TCP4 + b"\x04\x00\x03abc"), Source("203.0.113.7", 5555)),  # with a TLV (skipped)
    (v2(1, 0x21, MAPPED), Source("198.51.100.9", 4242)),  # IPv4-mapped: one encoder, one address
    (v2(0, 0x00, b""), Source(None)),  # LOCAL: the balancer's own health check
    (v2(1, 0x12, TCP4), Source(None)),  # UDP: the connection's own address, as the specification says
])
def test_headers_of_both_versions_are_read_whole_and_byte_by_byte(header: bytes, source: Source) -> None:
    rtmp = b"\x03" + bytes(20)
    assert parse(header + rtmp) == (source, len(header))
    for cut in range(len(header)):
        assert parse(header[:cut]) is None  # a header split over reads waits for the rest


@pytest.mark.parametrize("bad", [
    b"\x03\x00\x00\x00",  # RTMP straight away
    b"GET / HTTP/1.1\r\n",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
    b"PROXY TCP4 one two 1 2\r\n",
    b"PROXY TCP4 abcd 5.6.7.8 1 2\r\n",  # four characters are no address (four bytes would be, in v2)
    b"PROXY TCP4 " + b"1" * 120,  # no end within the specification's 107 bytes
    V2_SIGNATURE + b"\x31\x11\x00\x0c" + TCP4,  # version 3
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + TCP4,  # command 2
    V2_SIGNATURE + b"\x21\x11\xff\xff",  # 64 KiB of addresses announced
    b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n",  # not ASCII
    b"PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n",  # a scope: one address in several spellings
    v2(1, 0x15, TCP4),  # no such family
    v2(1, 0x11, TCP4[:6]),  # too short for its family
])
def test_anything_else_is_refused(bad: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(bad)


@pytest.fixture
def stream_module() -> Path:
    assert STREAM_MODULE.exists(), "install libnginx-mod-stream (infra/scripts/install-system-deps.sh test)"
    assert shutil.which("ffmpeg"), "install ffmpeg"
    return STREAM_MODULE


async def test_encoders_behind_nginx_count_by_their_own_address_and_only_the_balancer_is_believed(
    tmp_path: Path, stream_module: Path,
) -> None:
    seen: list[str] = []

    async def authorize(app: str, key: str, address: str) -> Publisher:
        seen.append(address)
        return Collected()

    server = RtmpServer(authorize, Limits(max_per_address=1, proxy_from=(ipaddress.ip_network(BALANCER),)))
    port = await server.start("127.0.0.1", 0)
    balanced, health = free_port(), free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
load_module {stream_module};
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log info;
events {{}}
stream {{
    server {{
        listen 127.0.0.1:{balanced};
        proxy_pass 127.0.0.1:{port};
        proxy_bind {BALANCER};
        proxy_protocol on;
    }}
}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    server {{ listen 127.0.0.1:{health}; return 204; }}
}}
""")
    nginx_check(conf)
    try:
        with nginx(conf, f"http://127.0.0.1:{health}/"):
            # FFmpeg through nginx: the server sees nginx's address, and is told the encoder's.
            through = asyncio.create_task(ffmpeg(f"rtmp://127.0.0.1:{balanced}/live/key", seconds=4))
            await until(lambda: len(server.connections) == 1 and next(iter(server.connections)).publisher is not None)
            (connection,) = server.connections
            assert seen == ["127.0.0.1"] and connection.address == "127.0.0.1", (seen, connection.peer)

            # The same encoder's address again, straight: one connection per address here, so refused.
            code, log = await ffmpeg(f"rtmp://127.0.0.1:{port}/live/key", seconds=1)
            assert code != 0 and server.refused == 1, log[-1500:]
            code, log = await through
            assert code == 0, log[-1500:]

            # From the balancer's address, RTMP without a header is closed; from anyone else, a header is
            # not believed (it is taken for RTMP, and refused as such).
            assert await closed_after(BALANCER, port, b"\x03" + bytes(1536))
            assert await closed_after("127.0.0.1", port, b"PROXY TCP4 198.51.100.1 10.0.0.1 1 2\r\n")
            assert seen == ["127.0.0.1"]
    finally:
        await server.close()
    await until(lambda: not server.connections)


async def until(condition: object, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def closed_after(source: str, port: int, data: bytes) -> bool:
    """Connect from `source`, send `data`: does the server close the connection within 3 s?"""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(3):
            while await reader.read(65536):
                pass
        return True
    except TimeoutError:
        return False
    finally:
        writer.close()


@pytest.mark.parametrize(("value", "said"), [
    ("10.0.0.7/8", "each is an address or a network"),
    ("0.0.0.0/0", "trusting every address"),
    ("::/0", "trusting every address"),
    ("balancer.example", "each is an address or a network"),
])
def test_the_setting_names_balancers_only(value: str, said: str) -> None:
    from pydantic import ValidationError

    from signaling.settings import Settings

    with pytest.raises(ValidationError, match=said):
        Settings(rtmp_proxy_from=value)
    with pytest.raises(ValidationError, match="RTMP_PORT"):
        Settings(rtmp_proxy_from="10.0.0.7", rtmp_port=0)
    assert [str(n) for n in Settings(rtmp_proxy_from="10.0.0.7, fd00::/8").rtmp_proxy_networks] == ["10.0.0.7/32", "fd00::/8"]


async def test_a_header_split_over_reads_with_rtmp_behind_it_is_answered(caplog: pytest.LogCaptureFixture) -> None:
    """The header in two pieces, the RTMP handshake in the same read as its end: the server answers the
    handshake (S0 S1 S2) and counts the connection by the header's address."""
    async def authorize(app: str, key: str, address: str) -> Publisher:
        return Collected()

    server = RtmpServer(authorize, Limits(proxy_from=(ipaddress.ip_network(BALANCER),)))
    port = await server.start("127.0.0.1", 0)
    sock = socket.socket()
    sock.bind((BALANCER, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        header = v2(1, 0x11, TCP4)
        writer.write(header[:7])
        await writer.drain()
        await asyncio.sleep(0.1)
        (connection,) = server.connections
        assert connection.address == ""  # counted in all, by no address yet
        writer.write(header[7:] + b"\x03" + bytes(1536))
        answer = await asyncio.wait_for(reader.readexactly(1 + 2 * 1536), 5)
        assert answer[0] == 3 and connection.address == "203.0.113.7" and connection.peer == "203.0.113.7:5555"
    finally:
        writer.close()
        await server.close()
    with caplog.at_level("WARNING", "sfu.rtmp.session"):
        server = RtmpServer(authorize, Limits(proxy_from=(ipaddress.ip_network(BALANCER),)))
        port = await server.start("127.0.0.1", 0)
        try:
            assert await closed_after(BALANCER, port, b"\x03" + bytes(1536))
        finally:
            await server.close()
    assert "must send one" in caplog.text  # an operator who forgot `proxy_protocol on` is told why
