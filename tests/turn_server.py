"""Debian's coturn on loopback, started from the shipped turn/turnserver.conf with a test's secret.

Only what must differ on one test machine is given on the command line (which coturn reads after the
file): loopback addresses, free ports, a self-signed certificate, and the media node's address as the
one peer allowed (127.0.0.1 here: loopback peers need allowing too).
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support import free_port


def free_udp_and_tcp_port() -> int:
    """A port on 127.0.0.1 free for both UDP and TCP right now (TURN listens on both)."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
from tls_files import self_signed

CONFIG = Path(__file__).resolve().parents[1] / "turn" / "turnserver.conf"


class TurnServer:
    def __init__(self, directory: Path, secret: str = "", port: int = 0) -> None:
        self.directory = directory
        self.secret = secret or secrets.token_hex(16)
        self.port = port or free_udp_and_tcp_port()
        self.tls_port = free_port()
        self.log = directory / "turnserver.log"
        self.cert, self.key = self_signed(directory)
        self._process: subprocess.Popen[bytes] | None = None

    def urls(self, *transports: str) -> list[str]:
        return [f"turn:127.0.0.1:{self.port}?transport={t}" for t in transports or ("udp", "tcp")]

    def start(self) -> None:
        low = random.randrange(50_000, 59_000, 200)  # relayed addresses: a block of its own
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                ["turnserver", "-c", str(CONFIG), f"--static-auth-secret={self.secret}",
                 "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={self.port}",
                 f"--tls-listening-port={self.tls_port}", f"--min-port={low}", f"--max-port={low + 199}",
                 "--allow-loopback-peers", "--allowed-peer-ip=127.0.0.1", f"--cert={self.cert}", f"--pkey={self.key}",
                 f"--pidfile={self.directory / 'turnserver.pid'}", "--verbose"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 10
        try:
            while True:
                assert self._process.poll() is None, f"turnserver exited at once:\n{self.log.read_text()[-3000:]}"
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    socket.create_connection(("127.0.0.1", self.tls_port), timeout=0.5).close()
                    return
                except OSError:
                    assert time.monotonic() < deadline, f"turnserver did not listen:\n{self.log.read_text()[-3000:]}"
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def cpu_seconds(self) -> float:
        """User and system CPU the server has spent (from /proc)."""
        assert self._process is not None
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def turn_server(directory: Path, secret: str = "", port: int = 0) -> Iterator[TurnServer]:
    server = TurnServer(directory, secret, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
