"""What a relay costs: the same audience served by one node, then split over two nodes with a relay.

    .venv/bin/python loadtest/relay_cost.py --viewers 100 --rounds 3

A front door (`tally serve --media off`), two `tally node`s and a private redis-server, a fresh
PostgreSQL database per run. One publisher (loadtest/sfu_forwarding.py's: 720p H.264 at ~1.4 Mbit/s
plus Opus, another process) and `--viewers` lean viewers joining through the door (one more process).

- "one node": MAX_VIEWERS_PER_NODE is the whole audience, so every viewer is on the origin.
- "split": MAX_VIEWERS_PER_NODE is half of it, so the second half is placed on the other node, which
  relays the stream from the origin.

Figures per run, measured over `--seconds` once every viewer has pictures: CPU of each node process
(and of both together) per second, loss seen by the viewers, and in the split runs the delay the hop
adds: each video packet's arrival at the relayed viewers against the same packet's (same payload)
arrival at the viewers on the origin, all in the one client process and its one clock. The node's
idle CPU (the publisher only, no viewer) is measured before viewers join, so the split runs also give
the relay's own cost on both sides. Medians over the rounds, and the ratio split / one node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(Path(__file__).resolve().parent)]

from cluster_hop import base_env, free_port, process  # noqa: E402
from harness import Running, cpu_seconds, http, percentile  # noqa: E402
from pg_databases import fresh_database  # noqa: E402

NODES = ("relay-a", "relay-b")


@contextmanager
def stack(data: Path, database_url: str, max_viewers: int) -> Iterator[tuple[str, dict[str, int]]]:
    """Door URL and the node processes' pids by node id."""
    from redis_server import RedisServer

    redis = RedisServer(data)
    redis.start()
    try:
        common = {"BUS_URL": redis.url, "JWT_SECRET": secrets.token_hex(32), "MAX_VIEWERS_PER_NODE": str(max_viewers),
                  "MAX_PENDING_SESSIONS": "1000", "MAX_PENDING_PER_CLIENT": "1000", "RELAY_LINGER_SECONDS": "30"}
        with ExitStack() as nodes:
            pids = {}
            for node_id in NODES:
                port, home = free_port(), data / node_id
                home.mkdir()
                pids[node_id] = nodes.enter_context(process(
                    ["node"], base_env(home, port, database_url, NODE_ID=node_id, **common),
                    data / f"{node_id}.log", f"http://127.0.0.1:{port}"))
            door_port = free_port()
            nodes.enter_context(process(["serve", "--media", "off"],
                                        base_env(data, door_port, database_url, NODE_ID="relay-door", AUTO_MIGRATE="false",
                                                 **common),
                                        data / "door.log", f"http://127.0.0.1:{door_port}"))
            yield f"http://127.0.0.1:{door_port}", pids
    finally:
        redis.stop()


def node_of(location: str) -> str:
    return location.rsplit("/", 1)[1].split(".", 1)[0]


async def watch(url: str, count: int, seconds: float, pids: dict[str, int], idle: dict[str, float]) -> dict[str, Any]:
    from sfu_forwarding import LeanViewer, join

    viewers: list[LeanViewer] = []
    arrivals: dict[str, dict[bytes, float]] = {node: {} for node in NODES}
    for _ in range(count):
        viewer = await join(url, "bench")
        assert viewer is not None, "WHEP refused a viewer"
        viewers.append(viewer)
    nodes = [node_of(v.location) for v in viewers]
    deadline = time.monotonic() + 20
    while any(not v.first_frame for v in viewers) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)

    # One viewer on each node notes when each video packet (known by its payload) arrived.
    for node in set(nodes):
        viewer = viewers[nodes.index(node)]
        tap, arrived = viewer.on_rtp, arrivals[node]

        def on_rtp(data: bytes, original: Any, arrival_ms: int, tap: Any = tap, arrived: dict[bytes, float] = arrived,
                   viewer: LeanViewer = viewer) -> Any:
            if data[1] & 0x7F == viewer.video_pt:
                arrived[data[-16:]] = time.monotonic()
            return tap(data, original, arrival_ms)

        viewer.on_rtp = on_rtp  # type: ignore[method-assign]

    def snapshot() -> dict[str, Any]:
        return {"cpu": {node: cpu_seconds(pid) for node, pid in pids.items()}, "wall": time.monotonic(),
                "per_viewer": [(v.highest - v.first_seq + 1, v.received_video) for v in viewers]}

    before = snapshot()
    await asyncio.sleep(seconds)
    after = snapshot()
    wall = after["wall"] - before["wall"]
    expected = sum(a[0] - b[0] for a, b in zip(after["per_viewer"], before["per_viewer"]))
    received = sum(a[1] - b[1] for a, b in zip(after["per_viewer"], before["per_viewer"]))
    cpu = {node: (after["cpu"][node] - before["cpu"][node]) / wall for node in NODES}
    origin = nodes[0]
    result: dict[str, Any] = {
        "viewers": {node: nodes.count(node) for node in NODES},
        "cpu_pct": {node: round(100 * cpu[node], 1) for node in NODES},
        "total_cpu_pct": 100 * sum(cpu.values()),
        "loss_pct": 100 * (1 - received / expected) if expected else float("nan"),
        "no_picture": sum(1 for v in viewers if not v.first_frame),
        "origin": origin,
    }
    others = [node for node in set(nodes) if node != origin]
    if others:
        relayed, direct = arrivals[others[0]], arrivals[origin]
        hop = [relayed[key] - direct[key] for key in relayed.keys() & direct.keys()]
        result["hop_ms_p50"] = 1000 * percentile(hop, 0.5)
        result["hop_ms_p95"] = 1000 * percentile(hop, 0.95)
        result["hop_packets"] = len(hop)
        # What is left of each node's CPU once its viewers are paid for at the one-node rate: the relay.
        result["idle_pct"] = {node: round(100 * idle[node], 1) for node in NODES}
    for viewer in viewers:
        http("DELETE", url + viewer.location)
        await viewer.pc.close()
    return result


def run(setup: str, count: int, seconds: float) -> dict[str, Any]:
    max_viewers = count if setup == "one node" else count // 2
    with ExitStack() as stack_:
        database_url = stack_.enter_context(fresh_database("tally_bench"))
        data = Path(tempfile.mkdtemp(prefix="tally-relay-"))
        url, pids = stack_.enter_context(stack(data, database_url, max_viewers))
        key = Running(url, 0, data).stream_key("bench")
        publisher = subprocess.Popen([sys.executable, str(REPO / "loadtest" / "sfu_forwarding.py"), "publish", url,
                                      "bench", key], stdout=subprocess.PIPE, text=True)
        try:
            assert publisher.stdout is not None and publisher.stdout.readline().strip() == "PUBLISHING"
            time.sleep(3)
            before, started = {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
            time.sleep(5)
            idle = {n: (cpu_seconds(p) - before[n]) / (time.monotonic() - started) for n, p in pids.items()}
            return asyncio.run(watch(url, count, seconds, pids, idle))
        finally:
            publisher.send_signal(signal.SIGTERM)
            publisher.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {"one node": [], "split": []}
    for n in range(args.rounds):
        for setup in ("one node", "split") if n % 2 == 0 else ("split", "one node"):
            result = run(setup, args.viewers, args.seconds)
            results[setup].append(result)
            print(f"round {n + 1} {setup}: {json.dumps(result)}", flush=True)
    one = statistics.median(r["total_cpu_pct"] for r in results["one node"])
    split = statistics.median(r["total_cpu_pct"] for r in results["split"])
    print(f"MEDIAN node CPU, {args.viewers} viewers: one node {one:.1f} %, split over two with a relay {split:.1f} %")
    print(f"RATIO split / one node: {split / one:.2f}")
    print("MEDIAN loss %: one node {:.2f}, split {:.2f}".format(
        statistics.median(r["loss_pct"] for r in results["one node"]),
        statistics.median(r["loss_pct"] for r in results["split"])))
    print("MEDIAN hop delay ms: p50 {:.1f}, p95 {:.1f}".format(
        statistics.median(r["hop_ms_p50"] for r in results["split"]),
        statistics.median(r["hop_ms_p95"] for r in results["split"])))


if __name__ == "__main__":
    main()
