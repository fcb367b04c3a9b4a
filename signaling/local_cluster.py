"""`tally cluster`: a whole cluster on this machine — a front door and one media node per core, each its
own process, meeting on the machine's Redis and PostgreSQL.

The supervisor applies migrations once, then runs `tally serve --media off` on PORT and `tally node`s on
the ports after it (NODE_ID node-1, node-2, …, each with its own recording spool; one
storage, one JWT key and one set of SECRETS_KEYS for all). The nodes share the RTMP(S) ports: the kernel hands each encoder to one of them. A child that dies is started again after a pause that grows while it keeps dying;
SIGTERM or Ctrl-C stops every child with SIGTERM (each drains and exits) and then the supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass

from bus import is_shared
from signaling.auth.access_tokens import load_or_create_secret
from signaling.auth.sealing import load_or_create_keys
from signaling.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT = 20.0  # seconds a child has to exit on SIGTERM before it is killed


@dataclass(frozen=True)
class Child:
    name: str
    args: tuple[str, ...]
    env: dict[str, str]


# What makes one process differ from the next is set per child, never inherited from the supervisor.
PER_PROCESS = ("PORT", "NODE_ID", "INTERNAL_URL", "MEDIA", "PUBLIC_HTTP", "RECORDING_SPOOL_DIR")
# Exit codes of a child that will fail the same way again (bad settings, its node id taken).
FATAL_EXITS = (2, 3)


def plan(settings: Settings, nodes: int) -> list[Child]:
    """The processes of a local cluster of `nodes` media nodes behind one front door."""
    inherited = {k: v for k, v in os.environ.items() if k not in PER_PROCESS}
    shared = {
        **inherited,
        "JWT_SECRET": load_or_create_secret(settings.jwt_secret, settings.data_dir),
        # The children share this machine: the key kept under DATA_DIR serves them all when none is set.
        "SECRETS_KEYS": ",".join(load_or_create_keys(settings.secrets_keys, settings.data_dir)),
        "STORAGE_URL": settings.resolved_storage_url,
        "DATA_DIR": str(settings.data_dir),
        "AUTO_MIGRATE": "false",
    }
    # The nodes share the RTMP port (the kernel gives each encoder to one of them); the door names it.
    ingest = {"RTMP_PUBLIC_URL": settings.rtmp_public_url or (settings.ingest_url("rtmp", settings.rtmp_port)
                                                               if settings.rtmp_port else ""),
              "RTMPS_PUBLIC_URL": settings.rtmps_public_url or (settings.ingest_url("rtmps", settings.rtmps_port)
                                                                 if settings.rtmps_port else "")}
    children = [Child("door", ("serve", "--media", "off"),
                      {**shared, **ingest, "PORT": str(settings.port), "NODE_ID": "door"})]
    for n in range(1, nodes + 1):
        children.append(Child(f"node-{n}", ("node",), {
            **shared,
            "PORT": str(settings.port + n),
            "NODE_ID": f"node-{n}",
            "RECORDING_SPOOL_DIR": str(settings.resolved_spool_dir / f"node-{n}"),
            "RTMP_REUSE_PORT": "true",
            "PUBLIC_HTTP": "false",  # the door serves the API and pages; a node, what the door asks of it
        }))
    children.append(Child("worker", ("worker",), {**shared, "NODE_ID": "worker"}))
    return children


def refusal(settings: Settings) -> str | None:
    """Why `settings` cannot run a cluster, or None."""
    if not is_shared(settings.bus_url):
        return "a cluster meets on Redis: set BUS_URL=redis://…"
    if settings.resolved_database_url.startswith("sqlite"):
        return "a cluster shares one database: set DATABASE_URL=postgresql+asyncpg://…"
    return None


class Supervisor:
    def __init__(self, children: list[Child]) -> None:
        self._children = children
        self._running: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self.failed: str | None = None  # why the cluster stopped by itself

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        keepers = [asyncio.create_task(self._keep(child), name=f"keep:{child.name}") for child in self._children]
        await self._stopping.wait()
        log.info("stopping the cluster")
        for process in self._running.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        await asyncio.gather(*keepers, return_exceptions=True)

    async def _keep(self, child: Child) -> None:
        """Run `child` until the cluster stops, starting it again when it dies."""
        pause = 1.0
        while not self._stopping.is_set():
            # A session of its own: Ctrl-C in the terminal reaches the supervisor only, which stops the
            # children with one SIGTERM each.
            process = await asyncio.create_subprocess_exec(sys.executable, "-m", "signaling.cli", *child.args,
                                                           env=child.env, start_new_session=True)
            self._running[child.name] = process
            if self._stopping.is_set():  # the stop came while it was starting
                process.send_signal(signal.SIGTERM)
            log.info("%s started (pid %d)", child.name, process.pid)
            started = asyncio.get_running_loop().time()
            stopping = asyncio.ensure_future(self._stopping.wait())
            exited = asyncio.ensure_future(process.wait())
            await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if self._stopping.is_set():
                try:
                    await asyncio.wait_for(asyncio.shield(exited), STOP_TIMEOUT)
                except TimeoutError:
                    log.warning("%s did not stop within %.0f s: killed", child.name, STOP_TIMEOUT)
                    process.kill()
                    await exited
                return
            ran = asyncio.get_running_loop().time() - started
            if process.returncode in FATAL_EXITS:
                self.failed = f"{child.name} cannot run (exit {process.returncode}): see its log above"
                log.error("%s", self.failed)
                self.stop()
                return
            pause = 1.0 if ran > 30 else min(pause * 2, 30.0)
            log.warning("%s exited with %s after %.0f s; starting it again in %.0f s",
                        child.name, process.returncode, ran, pause)
            try:
                await asyncio.wait_for(self._stopping.wait(), pause)
            except TimeoutError:
                pass


async def run_cluster(settings: Settings, nodes: int) -> int:
    problem = refusal(settings)
    if problem is not None:
        print(f"tally: {problem}", file=sys.stderr)
        return 2
    from signaling.db.database import Database
    from signaling.migrations.runner import upgrade

    db = Database(settings.resolved_database_url)
    try:
        await upgrade(db.engine)
    finally:
        await db.close()
    supervisor = Supervisor(plan(settings, nodes))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, supervisor.stop)
    print(f"Tallylight cluster: front door on http://{settings.host}:{settings.port}, {nodes} media nodes "
          f"on ports {settings.port + 1}-{settings.port + nodes}", flush=True)
    await supervisor.run()
    if supervisor.failed is not None:
        print(f"tally: {supervisor.failed}", file=sys.stderr)
        return 1
    return 0
