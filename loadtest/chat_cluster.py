"""Benchmark: chat split over processes, WebSocket chat on a front door and data-channel chat on a node.

    .venv/bin/python loadtest/chat_cluster.py --ws 2000 --dc 200 --rate 20 --seconds 30

The same clients as loadtest/chat_fanout.py (raw WebSocket clients on uvloop, the posters among them;
lean aiortc data-channel clients on WHEP sessions that take the stream's audio), but the server is a
cluster: a `tally serve --media off` front door takes the WebSockets and a `tally node` the WHEP
sessions with their data channels, on a private redis-server and a fresh PostgreSQL database, so
the conversation crosses the bus. Nothing is pinned: the two server processes and the clients share
the machine's cores. Figures: delivery latency p50/p99, delivered against expected, and each server
process's CPU (and its CPU per delivered message, minus its CPU with everyone connected and nobody
posting).
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE)]

from chat_fanout import CHANNEL, result, started, stored_messages  # noqa: E402
from cluster_hop import base_env, free_port, process  # noqa: E402
from harness import Running, cpu_seconds, http, percentile  # noqa: E402
from pg_databases import fresh_database  # noqa: E402


def run(ws: int, dc: int, rate: float, seconds: float) -> dict[str, Any]:
    from redis_server import RedisServer

    settings = {"CHAT_POSTS_PER_10S": "100000", "MAX_VIEWERS_PER_NODE": "5000", "RATE_WHEP_PER_MINUTE": "100000",
                "MAX_PENDING_SESSIONS": "1000", "MAX_PENDING_PER_CLIENT": "1000"}
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database("tally_bench"))
        data = Path(tempfile.mkdtemp(prefix="tally-chat-cluster-"))
        redis = RedisServer(data)
        redis.start()
        stack.callback(redis.stop)
        common = {"BUS_URL": redis.url, "JWT_SECRET": secrets.token_hex(32), **settings}
        (data / "node").mkdir()
        node_port, door_port = free_port(), free_port()
        pids = {"node": stack.enter_context(process(["node"], base_env(data / "node", node_port, database_url,
                                                                          NODE_ID="chat-node", **common),
                                                    data / "node.log", f"http://127.0.0.1:{node_port}")),
                "door": stack.enter_context(process(["serve", "--media", "off"],
                                                    base_env(data, door_port, database_url, NODE_ID="chat-door",
                                                             AUTO_MIGRATE="false", **common),
                                                    data / "door.log", f"http://127.0.0.1:{door_port}"))}
        url = f"http://127.0.0.1:{door_port}"
        key = Running(url, pids["door"], data).stream_key()
        _, tokens, _ = http("POST", url + "/api/auth/login", {"username": "bench", "password": "benchmark pass"})
        token = json.loads(tokens)["access_token"]
        clients = [sys.executable, str(HERE / "chat_fanout.py")]
        publisher = subprocess.Popen([sys.executable, str(HERE / "sfu_forwarding.py"), "publish", url, CHANNEL, key],
                                     stdout=subprocess.PIPE, text=True)
        processes = [publisher]
        try:
            assert publisher.stdout is not None and publisher.stdout.readline().strip() == "PUBLISHING"
            dcs = subprocess.Popen([*clients, "dc", url, str(dc), "--lean"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
            processes.append(dcs)
            started(dcs)
            wss = subprocess.Popen([*clients, "ws", url, str(ws), str(rate), str(seconds), token],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            processes.append(wss)
            started(wss)
            time.sleep(3)
            idle0, w0 = {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
            time.sleep(10)
            idle = {n: (cpu_seconds(p) - idle0[n]) / (time.monotonic() - w0) for n, p in pids.items()}
            cpu0, wall0 = {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
            for client in (dcs, wss):
                assert client.stdin is not None
                client.stdin.write("go\n")
                client.stdin.flush()
            ws_result = result(wss)
            assert dcs.stdin is not None
            dcs.stdin.write("stop\n")
            dcs.stdin.flush()
            dc_result = result(dcs)
            wall = time.monotonic() - wall0
            busy = {n: cpu_seconds(p) - cpu0[n] for n, p in pids.items()}
            stored = stored_messages(url)
            dcs.stdin.write("done\n")
            dcs.stdin.flush()
            try:
                dcs.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        finally:
            for child in processes:
                child.send_signal(signal.SIGTERM)
            for child in processes:
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
    sent = ws_result["sent"]
    ws_delivered, dc_delivered = ws_result["delivered"], dc_result["delivered"]
    ws_lat, dc_lat = ws_result["latencies"], dc_result["latencies"]
    figures = {
        "ws": ws, "dc": dc, "rate": rate, "sent": sent, "stored": stored,
        "delivered": ws_delivered + dc_delivered, "expected": sent * (ws_result["clients"] + dc),
        "ws_p50_ms": 1000 * percentile(ws_lat, 0.5), "ws_p99_ms": 1000 * percentile(ws_lat, 0.99),
        "dc_p50_ms": 1000 * percentile(dc_lat, 0.5), "dc_p99_ms": 1000 * percentile(dc_lat, 0.99),
        "cpu_pct": {n: round(100 * busy[n] / wall, 1) for n in pids},
        "idle_cpu_pct": {n: round(100 * idle[n], 1) for n in pids},
        # The door delivers to the WebSockets, the node to the data channels: each one's chat CPU per message.
        "door_us_per_message": 1e6 * (busy["door"] - idle["door"] * wall) / ws_delivered if ws_delivered else None,
        "node_us_per_message": 1e6 * (busy["node"] - idle["node"] * wall) / dc_delivered if dc_delivered else None,
        "ws_client_cpu_s": ws_result["client_cpu"], "dc_client_cpu_s": dc_result.get("client_cpu"),
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ws", type=int, default=2000)
    parser.add_argument("--dc", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    figures = run(args.ws, args.dc, args.rate, args.seconds)
    print("RESULT " + json.dumps(figures))
    print(f"| {args.ws} + {args.dc} | {args.rate:g} | {figures['delivered']} / {figures['expected']} | "
          f"{figures['ws_p50_ms']:.0f} / {figures['ws_p99_ms']:.0f} | {figures['dc_p50_ms']:.0f} / {figures['dc_p99_ms']:.0f} | "
          f"{figures['cpu_pct']['door']} ({figures['idle_cpu_pct']['door']}) | {figures['cpu_pct']['node']} "
          f"({figures['idle_cpu_pct']['node']}) | {figures['door_us_per_message']:.1f} | {figures['node_us_per_message']:.1f} |")


if __name__ == "__main__":
    main()
