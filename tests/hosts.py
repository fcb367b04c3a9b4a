"""Several "hosts" on one machine: a network namespace each, with its own address on a bridge in the
root namespace (TESTING.md), and a TCP forwarder that lets them reach a service listening on loopback
only (the machine's PostgreSQL). Needs root, as CI has."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Hosts:
    gateway: str  # the root namespace's address on the bridge: where the hosts reach this machine
    addresses: dict[str, str]  # host name -> its address
    namespaces: dict[str, str]  # host name -> its network namespace

    def prefix(self, host: str) -> tuple[str, ...]:
        """Run a command on `host`."""
        return ("ip", "netns", "exec", self.namespaces[host])


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def can_make_hosts() -> str:
    """Why this machine cannot make hosts ("" when it can): it takes root and iproute2."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return ""


@contextmanager
def hosts(names: list[str]) -> Iterator[Hosts]:
    tag = secrets.token_hex(3)
    subnet = f"198.{18 + secrets.randbelow(2)}.{secrets.randbelow(250) + 1}"  # RFC 2544's benchmarking block
    bridge = f"tlb{tag}"
    namespaces = {name: f"tl{tag}{i}" for i, name in enumerate(names)}
    addresses = {name: f"{subnet}.{10 + i}" for i, name in enumerate(names)}
    gateway = f"{subnet}.1"
    made: list[str] = []
    pairs: list[str] = []
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{gateway}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, name in enumerate(names):
            ns, outside, inside = namespaces[name], f"th{tag}{i}", f"tn{tag}{i}"
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            pairs.append(outside)
            _ip("link", "set", outside, "master", bridge, "up")
            _ip("link", "set", inside, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addresses[name]}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "default", "via", gateway)
        yield Hosts(gateway, addresses, namespaces)
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for outside in pairs:  # gone with its namespace, unless it never got there
            subprocess.run(["ip", "link", "del", outside], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


@contextmanager
def forwarder(listen: str, target: tuple[str, int]) -> Iterator[int]:
    """Forward TCP connections to `listen`:<port yielded> on to `target`, from a thread of its own (so a
    test blocked waiting for a server does not block the server's database connections)."""
    loop = asyncio.new_event_loop()
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        for task in (asyncio.ensure_future(pipe(reader, upstream_writer)),
                     asyncio.ensure_future(pipe(upstream_reader, writer))):
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    thread = threading.Thread(target=loop.run_forever, name="tcp-forwarder", daemon=True)
    thread.start()
    server: asyncio.Server | None = None
    try:
        server = asyncio.run_coroutine_threadsafe(asyncio.start_server(handle, listen, 0), loop).result(timeout=10)
        yield int(server.sockets[0].getsockname()[1])
    finally:
        async def stop() -> None:
            if server is not None:
                server.close()
            for task in list(pipes):
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
