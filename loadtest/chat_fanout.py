"""Benchmark: chat fan-out on one node, to WebSocket and data-channel clients, at a steady post rate.

    .venv/bin/python loadtest/chat_fanout.py run --ws 2000 --dc 200 --rate 20 --seconds 30

The real server runs on the embedded defaults (SQLite, in-memory bus), on a core of its own; every
client shares the other core(s). A publisher goes live (the data channel rides on a WHEP session, so
there must be a stream). The WebSocket clients are raw asyncio protocols on uvloop that parse frames
themselves, one in ten reading every message's timestamp; the posters are among them and send
`--rate` messages per second whose text is its send time. The data-channel clients are WHEP sessions
that take the stream's audio and read every message: by default lean aiortc peers on uvloop that drop
the audio at the socket (`--dc-client aiortc`), or the watch page's sessions in one headless Chromium
(`--dc-client chromium`), which costs the clients' core more than the server's chat does.
Figures: delivery latency p50/p99 (receive time minus send time, so it includes the server's database
write, the bus, the fan-out and the client's own queueing), messages delivered versus expected, the
server's CPU per delivered message (minus its CPU with everyone connected and nobody posting), and
the server's own fan-out time per batch of frames (`tally_chat_fanout_seconds` on /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE)]

from harness import cpu_seconds, http, percentile, server, user_system  # noqa: E402

CHANNEL = "bench"


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Stats:
    def __init__(self) -> None:
        self.delivered = 0
        self.latencies: list[float] = []
        self.recording = False


def text_time(payload: bytes | str) -> float | None:
    """The send time a benchmark message carries as the start of its text."""
    if isinstance(payload, str):
        payload = payload.encode()
    i = payload.find(b'"type":"message"')
    if i < 0:
        return None
    i = payload.find(b'"text":"', i)
    j = payload.find(b" ", i + 8)
    try:
        return float(payload[i + 8 : j])
    except ValueError:
        return None


# --- WebSocket clients: raw protocols ------------------------------------------------------------


class WsClient(asyncio.Protocol):
    def __init__(self, host: str, stats: Stats, sample: bool) -> None:
        self.host = host
        self.stats = stats
        self.sample = sample
        self.buffer = bytearray()
        self.open = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.upgraded = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET /ws?channel={CHANNEL} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.open.set_exception(RuntimeError(bytes(buffer[:200]).decode(errors="replace")))
                return
            del buffer[: end + 4]
            self.upgraded = True
        while len(buffer) >= 2:
            length = buffer[1] & 0x7F
            start = 2
            if length == 126:
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                return
            opcode = buffer[0] & 0x0F
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            if opcode == 1:
                self.on_text(payload)
            elif opcode == 9:
                self.send(payload, opcode=10)

    def on_text(self, payload: bytes) -> None:
        if not self.open.done():
            if b'"type":"welcome"' in payload:
                self.open.set_result(None)
            return
        if b'"type":"message"' not in payload:
            return
        stats = self.stats
        if stats.recording:
            stats.delivered += 1
            if self.sample:
                sent = text_time(payload)
                if sent is not None:
                    stats.latencies.append(time.time() - sent)

    def send(self, payload: bytes, opcode: int = 1) -> None:
        assert self.transport is not None
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (len(payload) // 4 + 1))[: len(payload)], "big"))
        body = masked.to_bytes(len(payload), "big") if payload else b""
        size = len(payload)
        header = bytes((0x80 | opcode, 0x80 | size)) if size < 126 else bytes((0x80 | opcode, 0xFE)) + size.to_bytes(2, "big")
        self.transport.write(header + mask + body)


async def ws_clients(url: str, count: int, rate: float, seconds: float, token: str) -> None:
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    host, port = url.removeprefix("http://").split(":")
    stats = Stats()
    clients: list[WsClient] = []

    async def connect(i: int) -> WsClient:
        _, client = await loop.create_connection(lambda: WsClient(f"{host}:{port}", stats, i % 10 == 0), host, int(port))
        await asyncio.wait_for(client.open, 60)
        return client

    for batch in range(0, count, 100):
        clients.extend(await asyncio.gather(*(connect(i) for i in range(batch, min(count, batch + 100)))))
    # Posters are clients too (not sampled). The server allows a connection 2 frames a second, so the
    # rate is spread over as many, as it would be over the many people of a busy chat.
    posters = [await connect(1) for _ in range(int(rate // 2) + 1)]
    for poster in posters:
        poster.send(json.dumps({"type": "auth", "token": token}).encode())
    print("READY", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the orchestrator says when to post

    stats.recording, cpu = True, time.process_time()
    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        posters[sent % len(posters)].send(json.dumps({"type": "send", "text": f"{time.time():.6f} {sent}"}).encode())
        sent += 1
        await asyncio.sleep(max(0.0, sent / rate - (time.monotonic() - started)))
    # Let the last ones arrive: an overloaded server may be seconds behind, and what it still owes is
    # lag, not loss. Stop when nothing more has come for 2 s (at most 60 s).
    drained_at, before = time.monotonic(), -1
    while stats.delivered != before and time.monotonic() - drained_at < 60:
        before = stats.delivered
        await asyncio.sleep(2)
    stats.recording = False
    print("RESULT " + json.dumps({"sent": sent, "delivered": stats.delivered, "latencies": stats.latencies,
                                  "client_cpu": time.process_time() - cpu, "clients": len(clients) + len(posters)}), flush=True)
    for client in clients + posters:
        if client.transport is not None:
            client.transport.close()


# --- data-channel clients: WHEP sessions in headless Chromium ----------------------------------------

# Each client is what the watch page makes: a WHEP session taking the stream's audio (the video is left
# out to keep the media plane's cost apart from the chat's) with a `chat` data channel. Chromium plays
# no audio without an element, so the page only pays for the network side.
DC_JS = """async ([count, channel]) => {
  const { negotiate } = await import("/static/js/webrtc.js");
  const bench = window.bench = { recording: false, delivered: 0, latencies: [], peers: [] };
  const join = async () => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver("audio", { direction: "recvonly" });
    const chat = pc.createDataChannel("chat");
    const welcomed = new Promise((resolve) => {
      chat.onmessage = (event) => {
        const data = event.data;
        if (data.includes('"type":"welcome"')) { resolve(); return; }
        if (!bench.recording || !data.includes('"type":"message"')) return;
        bench.delivered++;
        const at = data.indexOf('"text":"');
        if (at >= 0) bench.latencies.push(Date.now() / 1000 - parseFloat(data.slice(at + 8)));
      };
    });
    await negotiate(pc, `/whep/${channel}`);
    await Promise.race([welcomed, new Promise((_, reject) => setTimeout(() => reject(new Error("no welcome")), 30000))]);
    bench.peers.push(pc);
  };
  for (let i = 0; i < count; i += 20) {
    await Promise.all(Array.from({ length: Math.min(20, count - i) }, join));
  }
  return bench.peers.length;
}"""


def dc_clients(url: str, count: int) -> None:
    import tempfile

    from playwright.sync_api import sync_playwright

    from glass_to_glass import CHROMIUM_ARGS

    with tempfile.TemporaryDirectory(prefix="tally-chat-bench-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS, base_url=url,
            env={"HOME": profile, "XDG_RUNTIME_DIR": profile})
        page = context.new_page()
        page.goto("/")
        joined = page.evaluate(DC_JS, [count, CHANNEL]) if count else 0
        assert joined == count, joined
        print("READY", flush=True)
        sys.stdin.readline()
        page.evaluate("() => { window.bench.recording = true; }")
        sys.stdin.readline()
        result = page.evaluate("() => { window.bench.recording = false; return { delivered: window.bench.delivered, latencies: window.bench.latencies }; }")
        print("RESULT " + json.dumps(result), flush=True)
        context.close()


# --- data-channel clients: lean aiortc peers ----------------------------------------------------------

# Chromium pays for every audio packet twice (its network process hands each one to the renderer), so
# 200 sessions taking audio fill a core before any chat: the load generator, not the server, would set
# the figures. These peers speak the same protocols (ICE, DTLS, SCTP, the `chat` channel, SRTP audio
# arriving at the socket) but discard the audio where it arrives, before SRTP, a jitter buffer or a
# decoder; their feedback differs (aiortc acknowledges every SCTP packet, its receiver reports stop
# changing). One packet passes, so aiortc has a stream to send the receiver reports that keep it alive.


def drop_rtp(pc: Any) -> None:
    """Discard RTP (not RTCP, DTLS or STUN) at every socket `pc` gathered, after the first packet."""
    connection = pc.getTransceivers()[0].receiver.transport.transport._connection
    assert connection._protocols, "gather before dropping"
    for protocol in connection._protocols:
        original = protocol.datagram_received
        passed = [False]

        def received(data: bytes, addr: Any, original: Any = original, passed: list[bool] = passed) -> None:
            if len(data) > 1 and 127 < data[0] < 192 and not 191 < data[1] < 224:  # RTP by RFC 7983 and 5761
                if passed[0]:
                    return
                passed[0] = True
            original(data, addr)

        protocol.datagram_received = received


async def lean_dc_clients(url: str, count: int) -> None:
    from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from sfu import aiortc_internals as internals
    from webrtc_peer import LOOPBACK

    raise_fd_limit()
    loop = asyncio.get_running_loop()
    stats = Stats()
    peers: list[Any] = []

    async def join() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        peers.append(pc)  # closed at the end whatever happens: its receiver's thread would keep the process up
        pc.addTransceiver("audio", direction="recvonly")
        chat = pc.createDataChannel("chat")
        welcomed = loop.create_future()

        @chat.on("message")
        def on_message(data: str | bytes) -> None:
            if not welcomed.done():
                if isinstance(data, str) and '"type":"welcome"' in data:
                    welcomed.set_result(None)
                return
            if stats.recording and isinstance(data, str) and '"type":"message"' in data:
                stats.delivered += 1
                sent = text_time(data)
                if sent is not None:
                    stats.latencies.append(time.time() - sent)

        internals.plan_gathering(pc, LOOPBACK)
        await pc.setLocalDescription(await pc.createOffer())
        status, answer, _ = await loop.run_in_executor(
            None, lambda: http("POST", f"{url}/whep/{CHANNEL}", raw=pc.localDescription.sdp.encode(),
                               content_type="application/sdp"))
        assert status == 201, answer
        drop_rtp(pc)
        await pc.setRemoteDescription(RTCSessionDescription(answer.decode(), "answer"))
        await asyncio.wait_for(welcomed, 30)

    try:
        for i in range(0, count, 20):
            await asyncio.gather(*(join() for _ in range(min(20, count - i))))
        print("READY", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        stats.recording, cpu = True, time.process_time()
        await loop.run_in_executor(None, sys.stdin.readline)
        stats.recording = False
        connected = sum(pc.connectionState == "connected" for pc in peers)
        print("RESULT " + json.dumps({"delivered": stats.delivered, "latencies": stats.latencies,
                                      "client_cpu": time.process_time() - cpu, "connected": connected}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # the orchestrator is done measuring
    finally:
        await asyncio.gather(*(pc.close() for pc in peers), return_exceptions=True)


# --- orchestration ------------------------------------------------------------------------------


def started(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "READY":
        raise SystemExit(f"a client process did not start: {line!r}")


def result(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise SystemExit("a client process gave no result")


def stored_messages(url: str) -> int:
    count, before = 0, ""
    while True:
        _, body, _ = http("GET", f"{url}/api/channels/{CHANNEL}/chat?limit=200{before}")
        page = json.loads(body)
        count += len(page["messages"])
        if page["next_before"] is None:
            return count
        before = f"&before={page['next_before']}"


def fanout_histogram(url: str) -> dict[str, float]:
    """The server's `tally_chat_fanout_seconds` buckets (cumulative, by upper bound) plus `sum`."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("tally_chat_fanout_seconds_bucket{le="):
            found[line.split('"')[1]] = float(line.split()[-1])
        elif line.startswith("tally_chat_fanout_seconds_sum "):
            found["sum"] = float(line.split()[-1])
    return found


def fanout_figures(before: dict[str, float], after: dict[str, float]) -> tuple[float, str, float]:
    """Mean fan-out time (ms), the bucket its 99th percentile falls in and how many fan-outs (batches)
    there were, between two scrapes."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in after if bound != "sum"}
    total = counts.get("+Inf", 0.0)
    if not total:
        return float("nan"), "-", 0.0
    p99 = next(bound for bound, count in counts.items() if count >= 0.99 * total)
    return (1000 * (after["sum"] - before.get("sum", 0.0)) / total,
            ("≤ " + str(round(float(p99) * 1000, 1)) + " ms") if p99 != "+Inf" else "> 1 s", total)


def core_busy() -> dict[int, tuple[int, int]]:
    """Per core: (busy, total) jiffies since boot, from /proc/stat."""
    found = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(f) for f in fields[:8]]
            found[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))  # minus idle and iowait
    return found


def pin(pid: int, cores: set[int]) -> None:
    """Keep every thread of `pid` (those to come follow their creator) on `cores`."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cores)


def run(ws: int, dc: int, rate: float, seconds: float, dc_client: str) -> None:
    settings = {"CHAT_POSTS_PER_10S": "100000", "MAX_VIEWERS_PER_NODE": "5000", "RATE_WHEP_PER_MINUTE": "100000"}
    cores = sorted(os.sched_getaffinity(0))
    with server(**settings) as running:
        url = running.url
        if len(cores) >= 2:  # the server gets a core of its own; the clients and the publisher share the rest
            pin(running.pid, {cores[0]})
            os.sched_setaffinity(0, set(cores[1:]))
            print(f"server on core {cores[0]}, clients on {cores[1:]}")
        key = running.stream_key()
        _, tokens, _ = http("POST", url + "/api/auth/login", {"username": "bench", "password": "benchmark pass"})
        token = json.loads(tokens)["access_token"]
        publisher = subprocess.Popen([sys.executable, str(HERE / "sfu_forwarding.py"), "publish", url, CHANNEL, key],
                                     stdout=subprocess.PIPE, text=True)
        processes = [publisher]
        try:
            assert publisher.stdout is not None and publisher.stdout.readline().strip() == "PUBLISHING"
            t0 = time.monotonic()
            dcs = None
            if dc:
                dcs = subprocess.Popen([sys.executable, __file__, "dc", url, str(dc), *(["--lean"] if dc_client == "aiortc" else [])], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
                processes.append(dcs)
                started(dcs)
            wss = subprocess.Popen([sys.executable, __file__, "ws", url, str(ws), str(rate), str(seconds), token],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            processes.append(wss)
            started(wss)
            print(f"{ws} WebSocket and {dc} data-channel clients connected in {time.monotonic() - t0:.1f} s")
            time.sleep(3)
            idle0, w0 = cpu_seconds(running.pid), time.monotonic()
            time.sleep(10)
            idle_rate = (cpu_seconds(running.pid) - idle0) / (time.monotonic() - w0)
            fanout0, cores0, split0 = fanout_histogram(url), core_busy(), user_system(running.pid)
            cpu0, wall0 = cpu_seconds(running.pid), time.monotonic()
            for process in (dcs, wss):
                if process is not None:
                    assert process.stdin is not None
                    process.stdin.write("go\n")
                    process.stdin.flush()
            ws_result = result(wss)
            if dcs is not None:
                assert dcs.stdin is not None
                dcs.stdin.write("stop\n")
                dcs.stdin.flush()
            dc_result: dict[str, Any] = result(dcs) if dcs is not None else {"delivered": 0, "latencies": []}
            wall = time.monotonic() - wall0
            busy = cpu_seconds(running.pid) - cpu0
            stored = stored_messages(url)
            fanout_ms, fanout_p99, batches = fanout_figures(fanout0, fanout_histogram(url))
            cores1, split1 = core_busy(), user_system(running.pid)
            busy_cores = {core: round(100 * (cores1[core][0] - cores0[core][0]) / max(1, cores1[core][1] - cores0[core][1]))
                          for core in cores1}
            if dcs is not None and dcs.stdin is not None:  # measured: the clients may leave now
                dcs.stdin.write("done\n")
                dcs.stdin.flush()
                try:
                    dcs.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    sent = ws_result["sent"]
    delivered = ws_result["delivered"] + dc_result["delivered"]
    expected = sent * (ws_result["clients"] + dc)
    chat_cpu = busy - idle_rate * wall
    ws_lat, dc_lat = ws_result["latencies"], dc_result["latencies"]
    print(json.dumps({"ws": ws, "dc": dc, "rate": rate, "sent": sent, "stored": stored,
                      "ws_delivered": ws_result["delivered"], "dc_delivered": dc_result["delivered"], "delivered": delivered, "expected": expected,
                      "server_cpu_pct": 100 * busy / wall, "idle_cpu_pct": 100 * idle_rate, "wall": wall,
                      "fanout_mean_ms": fanout_ms, "fanout_p99": fanout_p99, "batches": batches, "core_busy_pct": busy_cores,
                      "server_user_s": split1[0] - split0[0], "server_system_s": split1[1] - split0[1],
                      "ws_client_cpu_s": ws_result["client_cpu"], "dc_client_cpu_s": dc_result.get("client_cpu"),
                      "dc_connected_at_end": dc_result.get("connected"),
                      "dc_client": dc_client}))
    print()
    print("| clients (WS + DC) | posts/s | delivered / expected | WS p50 / p99 ms | DC p50 / p99 ms | server CPU % (idle %) | server µs per delivered message | fan-out ms (mean / p99) | posts per batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {ws} + {dc} | {rate:g} | {delivered} / {expected} | {1000 * percentile(ws_lat, 0.5):.1f} / {1000 * percentile(ws_lat, 0.99):.1f} | "
          f"{1000 * percentile(dc_lat, 0.5):.1f} / {1000 * percentile(dc_lat, 0.99):.1f} | {100 * busy / wall:.0f} ({100 * idle_rate:.0f}) | "
          f"{1e6 * chat_cpu / delivered if delivered else float('nan'):.1f} | {fanout_ms:.1f} / {fanout_p99} | {sent / batches if batches else float('nan'):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--ws", type=int, default=2000)
    r.add_argument("--dc", type=int, default=200)
    r.add_argument("--rate", type=float, default=20)
    r.add_argument("--seconds", type=float, default=30)
    r.add_argument("--dc-client", choices=("aiortc", "chromium"), default="aiortc",
                   help="lean aiortc peers that drop the audio at the socket, or the watch page's sessions in Chromium")
    w = sub.add_parser("ws")
    w.add_argument("url")
    w.add_argument("count", type=int)
    w.add_argument("rate", type=float)
    w.add_argument("seconds", type=float)
    w.add_argument("token")
    d = sub.add_parser("dc")
    d.add_argument("url")
    d.add_argument("count", type=int)
    d.add_argument("--lean", action="store_true")
    args = parser.parse_args()
    if args.command == "run":
        run(args.ws, args.dc, args.rate, args.seconds, args.dc_client)
    elif args.command == "ws":
        import uvloop  # its C transports make 2,000 clients cheap enough to share a core with the rest

        uvloop.run(ws_clients(args.url, args.count, args.rate, args.seconds, args.token))
    elif args.lean:
        import uvloop

        uvloop.run(lean_dc_clients(args.url, args.count))
    else:
        dc_clients(args.url, args.count)


if __name__ == "__main__":
    main()
