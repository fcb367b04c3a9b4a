"""Writes a runnable nginx edge configuration from edge.conf.template.

    python infra/cdn/render.py --origin 10.0.0.5:8080 --listen 80 --prefix /var/cache/tallylight-edge

creates the prefix folder with nginx.conf in it; start the edge with
    nginx -p <prefix> -c <prefix>/nginx.conf -g 'daemon off;'
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

TEMPLATE = Path(__file__).with_name("edge.conf.template")


def render(origin: str | list[str], listen: str, prefix: Path, workers: str = "auto", cache_size: str = "2g",
           user: str = "", trust_forwarded_from: str = "") -> Path:
    """`origin`: host:port of the origin, or a list of them (several signaling instances, balanced).
    `user`: who nginx started by root runs its workers as (nginx's default, nobody, when empty); that
    user must be able to write to `prefix`. `trust_forwarded_from`: the address (or CIDR) of a proxy in
    front (the gateway, infra/gateway/) whose X-Forwarded-For names the client, which is then passed on
    to the origin as the client's address."""
    origins = [origin] if isinstance(origin, str) else origin
    prefix.mkdir(parents=True, exist_ok=True)
    user = f"user {user};" if user and os.geteuid() == 0 else ""
    text = TEMPLATE.read_text()
    if trust_forwarded_from:
        ipaddress.ip_network(trust_forwarded_from, strict=False)  # ValueError for anything but an address or CIDR
    real_ip = (f"    set_real_ip_from {trust_forwarded_from};\n    real_ip_header X-Forwarded-For;"
               if trust_forwarded_from else "")
    for key, value in {"real_ip": real_ip, "origin": ";\n        server ".join(origins), "listen": listen, "prefix": str(prefix.resolve()), "workers": workers,
                       "cache_size": cache_size, "user": user}.items():
        text = text.replace("{{" + key + "}}", value)
    target = prefix / "nginx.conf"
    target.write_text(text)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--origin", action="append", required=True,
                        help="host:port of a Tallylight origin (repeat for several signaling instances)")
    parser.add_argument("--listen", default="8081", help="address:port or port the edge listens on")
    parser.add_argument("--prefix", type=Path, required=True, help="folder for the config, cache, logs")
    parser.add_argument("--trust-forwarded-from", default="",
                        help="address or CIDR of the proxy in front (the gateway) whose X-Forwarded-For to believe")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--cache-size", default="2g")
    parser.add_argument("--user", default="", help="worker user when started as root (it must own the prefix)")
    args = parser.parse_args()
    print(render(args.origin, args.listen, args.prefix, args.workers, args.cache_size, args.user,
                 args.trust_forwarded_from))


if __name__ == "__main__":
    main()
