"""What the front door's hop costs: WHEP setup straight to one `tally serve` against the same through a
`tally serve --media off` front door and a `tally node` (the SDP exchange relayed over Redis).

    .venv/bin/python loadtest/cluster_hop.py --viewers 40 --rounds 3

Each round runs both setups one after the other on this machine (a fresh PostgreSQL database for each, so only
the hop differs; the cluster on a private redis-server). In each, one publisher (loadtest/sfu_forwarding.py's,
720p H.264 + Opus, another process) and then `--viewers` lean viewers joining one at a time: the time
from the WHEP POST to its 201 and to the first RTP packet, and the CPU each server process spent per
viewer. Medians over the rounds, and the ratio cluster / direct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(Path(__file__).resolve().parent)]

from harness import Running, cpu_seconds, http, percentile, wait_ready  # noqa: E402
from pg_databases import fresh_database  # noqa: E402
from signaling.auth.sealing import new_key  # noqa: E402

SECRETS_KEYS = new_key()  # the processes of a run share a database: they seal with one key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path, url: str | None) -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-m", "signaling.cli", *args], cwd=REPO, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        if url is not None:
            wait_ready(url)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def base_env(data: Path, port: int, database_url: str, **more: str) -> dict[str, str]:
    return {**os.environ, "DATA_DIR": str(data), "PORT": str(port), "HOST": "127.0.0.1", "DATABASE_URL": database_url,
            "WEBRTC_HOST_ADDRESSES": "127.0.0.1", "LOG_LEVEL": "WARNING", "PUBLIC_URL": "",
            "RATE_WHEP_PER_MINUTE": "100000", "RATE_REGISTER_PER_HOUR": "1000", "SECRETS_KEYS": SECRETS_KEYS, **more}


@contextmanager
def direct(stack_dir: Path, database_url: str) -> Iterator[tuple[str, list[int]]]:
    port = free_port()
    env = base_env(stack_dir, port, database_url, BUS_URL="memory://", JWT_SECRET=secrets.token_hex(32))
    with process(["serve"], env, stack_dir / "serve.log", f"http://127.0.0.1:{port}") as pid:
        yield f"http://127.0.0.1:{port}", [pid]


@contextmanager
def cluster(stack_dir: Path, database_url: str) -> Iterator[tuple[str, list[int]]]:
    from redis_server import RedisServer

    redis = RedisServer(stack_dir)
    redis.start()
    try:
        secret = secrets.token_hex(32)
        door_port, node_port = free_port(), free_port()
        common = {"BUS_URL": redis.url, "JWT_SECRET": secret}
        with process(["node"], base_env(stack_dir, node_port, database_url, NODE_ID="bench-node", **common),
                     stack_dir / "node.log", f"http://127.0.0.1:{node_port}") as node_pid, \
                process(["serve", "--media", "off"], base_env(stack_dir, door_port, database_url, NODE_ID="bench-door",
                                                              AUTO_MIGRATE="false", **common),
                        stack_dir / "door.log", f"http://127.0.0.1:{door_port}") as door_pid:
            yield f"http://127.0.0.1:{door_port}", [door_pid, node_pid]
    finally:
        redis.stop()


async def viewers(url: str, count: int) -> tuple[list[float], list[float]]:
    """Join `count` lean viewers one at a time: seconds to the 201, seconds to the first packet."""
    from sfu_forwarding import join

    answered, first_packet = [], []
    for _ in range(count):
        started = time.monotonic()
        viewer = await join(url, "bench")
        assert viewer is not None, "WHEP refused a viewer"
        answered.append(time.monotonic() - started)
        while viewer.packets == 0:
            assert time.monotonic() - started < 10, "no media within 10 s"
            await asyncio.sleep(0.002)
        first_packet.append(time.monotonic() - started)
        http("DELETE", url + viewer.location)
        await viewer.pc.close()
    return answered, first_packet


def run(setup: str, count: int) -> dict[str, float]:
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database("tally_bench"))  # the same accounts in every run
        data = Path(tempfile.mkdtemp(prefix=f"tally-hop-{setup}-"))
        url, pids = stack.enter_context((direct if setup == "direct" else cluster)(data, database_url))
        key = Running(url, pids[0], data).stream_key("bench")
        publisher = subprocess.Popen([sys.executable, str(REPO / "loadtest" / "sfu_forwarding.py"), "publish", url,
                                      "bench", key], stdout=subprocess.PIPE, text=True)
        try:
            assert publisher.stdout is not None and publisher.stdout.readline().strip() == "PUBLISHING"
            time.sleep(2)  # the stream is live and its first keyframe is out
            before = [cpu_seconds(pid) for pid in pids]
            answered, first = asyncio.run(viewers(url, count))
            spent = [cpu_seconds(pid) - b for pid, b in zip(pids, before)]
        finally:
            publisher.send_signal(signal.SIGTERM)
            publisher.wait(timeout=20)
    result = {"answer_ms": statistics.median(answered) * 1000, "answer_p90_ms": percentile(answered, 0.9) * 1000,
              "first_packet_ms": statistics.median(first) * 1000, "cpu_ms_per_viewer": sum(spent) / count * 1000}
    if setup == "cluster":
        result["door_cpu_ms_per_viewer"] = spent[0] / count * 1000
        result["node_cpu_ms_per_viewer"] = spent[1] / count * 1000
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"direct": [], "cluster": []}
    for n in range(args.rounds):
        for setup in ("direct", "cluster") if n % 2 == 0 else ("cluster", "direct"):
            figures = run(setup, args.viewers)
            results[setup].append(figures)
            print(f"round {n + 1} {setup}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), flush=True)
    medians = {setup: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]} for setup, rounds in results.items()}
    print("MEDIANS " + json.dumps({s: {k: round(v, 1) for k, v in m.items()} for s, m in medians.items()}))
    for key in ("answer_ms", "first_packet_ms", "cpu_ms_per_viewer"):
        print(f"RATIO cluster/direct {key}: {medians['cluster'][key] / medians['direct'][key]:.2f}")


if __name__ == "__main__":
    main()
