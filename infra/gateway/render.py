"""Writes a runnable nginx gateway configuration from gateway.conf.template.

    python infra/gateway/render.py --upstream 10.0.0.5:8080 --upstream 10.0.0.6:8080 \
        --cert /etc/tallylight/tls/fullchain.pem --key /etc/tallylight/tls/privkey.pem \
        --prefix /var/lib/tallylight-gateway [--edge 127.0.0.1:8081] [--server-name live.example.com]

creates the prefix folder with nginx.conf in it; start the gateway with
    nginx -p <prefix> -c <prefix>/nginx.conf -g 'daemon off;'
The signaling instances behind it run with TRUST_FORWARDED_FOR=true and PUBLIC_URL=https://<name>.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).with_name("gateway.conf.template")
ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
RATE = re.compile(r"^\d+r/[sm]$")


@dataclass(frozen=True)
class Limits:
    """Per client address; the app's own limits (RATE_*) still apply behind these."""

    signin_rate: str = "10r/m"
    signin_burst: int = 5
    signup_rate: str = "5r/m"
    signup_burst: int = 3
    whip_rate: str = "30r/m"
    whip_burst: int = 10
    whep_rate: str = "10r/s"
    whep_burst: int = 50
    # Every chat WebSocket and HTTP/2 stream counts: a venue or carrier NAT puts hundreds behind one address.
    connections_per_client: int = 1000


def _servers(addresses: list[str]) -> str:
    for address in addresses:
        if not ADDRESS.match(address):
            raise ValueError(f"{address!r} is not host:port")
    return "\n".join(f"        server {address} max_fails=2 fail_timeout=5s;" for address in addresses)


def render(upstreams: list[str], cert: Path, key: Path, prefix: Path, listen: str = "443", http_listen: str = "80",
           edge: str = "", server_name: str = "_", workers: str = "auto", user: str = "",
           limits: Limits = Limits()) -> Path:
    """`edge`: host:port of the HLS/DASH cache (infra/cdn/) that /hls/ and /dash/ go to (the instances
    themselves when empty). `user`: who nginx started by root runs its workers as."""
    if not upstreams:
        raise ValueError("give at least one signaling instance (--upstream host:port)")
    for rate in (limits.signin_rate, limits.signup_rate, limits.whip_rate, limits.whep_rate):
        if not RATE.match(rate):
            raise ValueError(f"{rate!r} is not a rate like 10r/m or 5r/s")
    prefix.mkdir(parents=True, exist_ok=True)
    port = listen.rsplit(":", 1)[-1]
    fields = {
        "upstreams": _servers(upstreams),
        "media_upstreams": _servers([edge] if edge else upstreams),
        "cert": str(cert.resolve()),
        "key": str(key.resolve()),
        "listen": listen,
        "http_listen": http_listen,
        "https_port": "" if port == "443" else f":{port}",
        "server_name": server_name,
        "prefix": str(prefix.resolve()),
        "workers": workers,
        "user": f"user {user};" if user and os.geteuid() == 0 else "",
        **{name: str(value) for name, value in vars(limits).items()},
    }
    text = TEMPLATE.read_text()
    for name, value in fields.items():
        text = text.replace("{{" + name + "}}", value)
    left = re.findall(r"\{\{\w+\}\}", text)
    assert not left, f"fields the template has and render does not fill: {left}"
    target = prefix / "nginx.conf"
    target.write_text(text)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", action="append", required=True, help="host:port of a signaling instance (repeat)")
    parser.add_argument("--cert", type=Path, required=True, help="PEM certificate chain")
    parser.add_argument("--key", type=Path, required=True, help="PEM private key")
    parser.add_argument("--prefix", type=Path, required=True, help="folder for the config, logs, temporary files")
    parser.add_argument("--listen", default="443", help="address:port or port for HTTPS")
    parser.add_argument("--http-listen", default="80", help="address:port or port that redirects to HTTPS")
    parser.add_argument("--edge", default="", help="host:port of the HLS/DASH cache (infra/cdn/)")
    parser.add_argument("--server-name", default="_")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--user", default="", help="worker user when started as root (it must own the prefix)")
    args = parser.parse_args()
    print(render(args.upstream, args.cert, args.key, args.prefix, args.listen, args.http_listen, args.edge,
                 args.server_name, args.workers, args.user))


if __name__ == "__main__":
    main()
